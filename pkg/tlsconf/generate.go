package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Generate writes a new CA (ca.crt, ca.key) and one certificate signed by
// it (tls.crt, tls.key; the names a Kubernetes TLS secret uses) into dir,
// for a quick start: every process of the job can present the same
// certificate. The certificate carries serverName (DefaultServerName when
// empty) and hosts (DNS names or IPs) as SANs, and is valid for both
// server and client authentication for the given duration. Existing files
// are not overwritten. Keys are ECDSA P-256, written with mode 0600.
func Generate(dir, serverName string, hosts []string, valid time.Duration) (Files, error) {
	if serverName == "" {
		serverName = DefaultServerName
	}
	if valid <= 0 {
		return Files{}, fmt.Errorf("%w: validity %s", ErrConfig, valid)
	}
	names := map[string]string{"ca.crt": "", "ca.key": "", "tls.crt": "", "tls.key": ""}
	for n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			return Files{}, fmt.Errorf("%w: %s exists; not overwriting it", ErrConfig, p)
		}
		names[n] = p
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: serverName + " CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(valid),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Files{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: serverName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(valid),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{serverName},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return Files{}, err
	}
	for _, w := range []struct {
		path, kind string
		der        []byte
		mode       os.FileMode
	}{
		{names["ca.crt"], "CERTIFICATE", caDER, 0o644},
		{names["tls.crt"], "CERTIFICATE", der, 0o644},
	} {
		if err := writePEM(w.path, w.kind, w.der, w.mode); err != nil {
			return Files{}, err
		}
	}
	for path, k := range map[string]*ecdsa.PrivateKey{names["ca.key"]: caKey, names["tls.key"]: key} {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return Files{}, err
		}
		if err := writePEM(path, "PRIVATE KEY", b, 0o600); err != nil {
			return Files{}, err
		}
	}
	return Files{Cert: names["tls.crt"], Key: names["tls.key"], CA: names["ca.crt"], ServerName: serverName}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: kind, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("tls: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tls: writing %s: %w", path, err)
	}
	return f.Close()
}

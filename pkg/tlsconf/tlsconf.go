// Package tlsconf turns the --tls-* flags of the coordinator and the
// worker into mutual-TLS configurations for every connection a job makes:
// the control API (gRPC), the ring's handshake and frame connections and
// liveness probes, the raft transport between coordinator replicas, and
// etcd clients that dial https endpoints.
//
// Every process of a job presents a certificate signed by the job's CA
// and accepts only peers whose certificate that CA signed. Ring peers and
// coordinator replicas are dialled by address (pod IPs in a cluster), so
// clients verify the peer's certificate against one shared name
// (--tls-server-name, default "ringtrain") rather than against the
// address: the certificates carry that name as a DNS SAN.
package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultServerName is the name clients expect in a peer's certificate.
const DefaultServerName = "ringtrain"

// ErrConfig marks unusable TLS flags or files.
var ErrConfig = errors.New("tls")

// Files names the PEM files of one process. All of Cert, Key and CA are
// given, or none (plaintext).
type Files struct {
	Cert, Key, CA string
	ServerName    string // expected in peers' certificates (default DefaultServerName)
}

// Bind adds --tls-cert, --tls-key, --tls-ca and --tls-server-name to fs.
func (f *Files) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM certificate of this process (mutual TLS on every connection; needs --tls-key and --tls-ca)")
	fs.StringVar(&f.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.CA, "tls-ca", "", "PEM CA bundle that signed every process's certificate in the job")
	fs.StringVar(&f.ServerName, "tls-server-name", DefaultServerName, "name every certificate carries as a DNS SAN (peers are verified against it, not their address)")
}

// Enabled reports whether any TLS file is named.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Args returns the flags that give a child process the same files.
func (f Files) Args() []string {
	if !f.Enabled() {
		return nil
	}
	return []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "--tls-server-name", f.serverName()}
}

func (f Files) serverName() string {
	if f.ServerName == "" {
		return DefaultServerName
	}
	return f.ServerName
}

// Config holds the two sides of mutual TLS for one process. A nil *Config
// means plaintext; its methods then return insecure options.
type Config struct {
	Server *tls.Config // requires and verifies client certificates
	Client *tls.Config // presents the certificate, verifies ServerName
}

// Load reads and checks the files. It returns nil, nil when none is named.
func (f Files) Load() (*Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, fmt.Errorf("%w: --tls-cert, --tls-key and --tls-ca go together (got cert %q, key %q, ca %q)", ErrConfig, f.Cert, f.Key, f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s with key %s: %w", ErrConfig, f.Cert, f.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s: %w", ErrConfig, f.Cert, err)
	}
	name := f.serverName()
	if err := leaf.VerifyHostname(name); err != nil {
		return nil, fmt.Errorf("%w: certificate %s does not carry the server name %q that peers verify (add it as a DNS SAN, or set --tls-server-name): %w", ErrConfig, f.Cert, name, err)
	}
	pemCA, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("%w: CA bundle: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("%w: CA bundle %s holds no PEM certificate", ErrConfig, f.CA)
	}
	opts := x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("%w: certificate %s is not signed by the CA in %s: %w", ErrConfig, f.Cert, f.CA, err)
	}
	return &Config{
		Server: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
		},
		Client: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			RootCAs:      pool,
			ServerName:   name,
		},
	}, nil
}

// ServerCreds returns gRPC server credentials, or nil for plaintext.
func (c *Config) ServerCreds() credentials.TransportCredentials {
	if c == nil {
		return nil
	}
	return credentials.NewTLS(c.Server.Clone())
}

// ClientCreds returns gRPC client credentials (insecure for plaintext).
// Their handshake always verifies the configured server name, whatever
// authority (usually the dialled address) the caller passes.
func (c *Config) ClientCreds() credentials.TransportCredentials {
	if c == nil {
		return insecure.NewCredentials()
	}
	return fixedName{credentials.NewTLS(c.Client.Clone()), c.Client.ServerName}
}

// fixedName makes ClientHandshake verify name instead of the authority
// it is given: gRPC's TLS credentials take the server name from the
// authority, which for a raw connection (the ring's frame links) is the
// peer's address.
type fixedName struct {
	credentials.TransportCredentials
	name string
}

func (f fixedName) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return f.TransportCredentials.ClientHandshake(ctx, f.name, conn)
}

func (f fixedName) Clone() credentials.TransportCredentials {
	return fixedName{f.TransportCredentials.Clone(), f.name}
}

// ServerOptions returns the grpc.NewServer options for c (none for
// plaintext).
func (c *Config) ServerOptions() []grpc.ServerOption {
	if c == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(c.ServerCreds())}
}

// DialOption returns the grpc transport-credentials dial option for c.
func (c *Config) DialOption() grpc.DialOption {
	return grpc.WithTransportCredentials(c.ClientCreds())
}

// ServerTLS returns a copy of the server side (nil for plaintext).
func (c *Config) ServerTLS() *tls.Config {
	if c == nil {
		return nil
	}
	return c.Server.Clone()
}

// ClientTLS returns a copy of the client side (nil for plaintext).
func (c *Config) ClientTLS() *tls.Config {
	if c == nil {
		return nil
	}
	return c.Client.Clone()
}

// EtcdTLS returns the client-side tls.Config for etcd's https endpoints
// (nil for plaintext): the process's certificate and the CA bundle. The
// server's certificate must chain to the bundle and carry either the
// endpoint's host name, as an external etcd's usually does (the bundle
// must then also hold the CA of etcd's servers), or the job's server
// name, as the coordinator's embedded etcd's does (it serves the job's
// certificate on 127.0.0.1).
func (c *Config) EtcdTLS() *tls.Config {
	if c == nil {
		return nil
	}
	t := c.Client.Clone()
	name, roots := t.ServerName, t.RootCAs
	t.ServerName = ""
	// Verified by VerifyConnection below, against either name; the chain
	// is always verified.
	t.InsecureSkipVerify = true
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: the etcd server presented no certificate", ErrConfig)
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		leaf := cs.PeerCertificates[0]
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		var firstErr error
		for _, n := range []string{cs.ServerName, name} {
			if n == "" {
				continue
			}
			opts.DNSName = n
			_, err := leaf.Verify(opts)
			if err == nil {
				return nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		return fmt.Errorf("%w: etcd server certificate: %w", ErrConfig, firstErr)
	}
	return t
}

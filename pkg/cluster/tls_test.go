package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster/embedded"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
)

// With the job's TLS on, the embedded etcd serves https on both ports and
// only clients presenting a certificate of the job's CA get in: a local
// user without it can neither read the job's keys nor register a fake
// member (issue 12, "Why" 6).
func TestEmbeddedMutualTLSRefusesStrangers(t *testing.T) {
	dir := t.TempDir()
	files, err := tlsconf.Generate(filepath.Join(dir, "pki"), "", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.Generate(filepath.Join(dir, "other"), "", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	job, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, Options{Dir: filepath.Join(dir, "state"), TLS: job.EtcdTLS(), Start: startEmbedded,
		ServerTLS: &ServerTLS{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eps := c.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "https://127.0.0.1:") {
		t.Fatalf("endpoints %v", eps)
	}
	// The job's own client works: a real member registers.
	j, err := c.Job("tlsjob")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := j.Register(ctx, Member{ID: "w0", Address: "127.0.0.1:1", HostID: "h", PID: 1}, 5*time.Second)
	if err != nil {
		t.Fatalf("the job's client cannot register: %v", err)
	}
	defer reg.Close()

	noCert := job.EtcdTLS()
	noCert.Certificates = nil
	for name, tc := range map[string]*tls.Config{
		"plaintext":                 nil,
		"TLS without a certificate": noCert,
		"a certificate of another CA": func() *tls.Config {
			s := stranger.EtcdTLS()
			s.VerifyConnection = nil // it trusts the server; the server must not trust it
			return s
		}(),
	} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, TLS: tc,
			Logger: zap.NewNop()})
		if err != nil {
			t.Logf("%s: %v", name, err)
			continue // refused at once
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := cli.Get(rctx, MembersPrefix("tlsjob"), clientv3.WithPrefix()); err == nil {
			t.Errorf("%s: read the members", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		fake := `{"id":"evil","address":"127.0.0.1:2","host_id":"h","pid":2}`
		if _, err := cli.Put(rctx, MemberKey("tlsjob", "evil"), fake); err == nil {
			t.Errorf("%s: wrote a fake member", name)
		}
		rcancel()
		cli.Close()
	}
	ms, _, err := j.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].ID != "w0" {
		t.Fatalf("members %+v: want only w0", ms)
	}

	// The peer port demands a certificate of the job's CA too.
	peer, err := url.Parse(c.embedded.(*embedded.Server).PeerEndpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if peer.Scheme != "https" {
		t.Fatalf("peer URL %s is not https", peer.String())
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", peer.Host, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		// TLS 1.3 reports a missing client certificate on the first read.
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("the peer port accepted a client without a certificate")
	}
}

func TestEmbeddedTLSNeedsItsFiles(t *testing.T) {
	_, err := embedded.Start(context.Background(), embedded.Config{Dir: t.TempDir(), TLS: &embedded.ServerTLS{CertFile: "x"}})
	if !errors.Is(err, embedded.ErrInvalid) {
		t.Fatalf("got %v", err)
	}
}

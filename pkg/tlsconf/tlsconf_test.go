package tlsconf

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func pki(t *testing.T) Files {
	t.Helper()
	f, err := Generate(t.TempDir(), "", []string{"127.0.0.1", "node-a"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestGenerateLoadsAndRefusesToOverwrite(t *testing.T) {
	f := pki(t)
	c, err := f.Load()
	if err != nil || c == nil {
		t.Fatalf("Load: %v, %v", c, err)
	}
	if c.Client.ServerName != DefaultServerName {
		t.Fatalf("server name %q", c.Client.ServerName)
	}
	st, err := os.Stat(f.Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, %v", st.Mode(), err)
	}
	if _, err := Generate(filepath.Dir(f.Cert), "", nil, time.Hour); !errors.Is(err, ErrConfig) {
		t.Fatalf("second Generate in the same directory: %v, want ErrConfig", err)
	}
	args := f.Args()
	if len(args) != 8 || args[1] != f.Cert || args[7] != DefaultServerName {
		t.Fatalf("Args %q", args)
	}
	if (Files{}).Args() != nil {
		t.Fatal("plaintext files give flags")
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	a, b := pki(t), pki(t)
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]Files{
		"cert only":        {Cert: a.Cert},
		"no CA":            {Cert: a.Cert, Key: a.Key},
		"key of another":   {Cert: a.Cert, Key: b.Key, CA: a.CA},
		"another CA":       {Cert: a.Cert, Key: a.Key, CA: b.CA},
		"junk CA":          {Cert: a.Cert, Key: a.Key, CA: junk},
		"missing CA":       {Cert: a.Cert, Key: a.Key, CA: junk + ".missing"},
		"wrong serve name": {Cert: a.Cert, Key: a.Key, CA: a.CA, ServerName: "elsewhere"},
	} {
		if c, err := f.Load(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Load = %v, %v; want ErrConfig", name, c, err)
		}
	}
	if c, err := (Files{}).Load(); c != nil || err != nil {
		t.Fatalf("no files: %v, %v; want plaintext", c, err)
	}
}

// A real gRPC server over TCP with the job's mutual TLS: a client of the
// same CA gets through; a client of another CA and a plaintext client
// do not.
func TestMutualTLSOverGRPC(t *testing.T) {
	a, b := pki(t), pki(t)
	ca, err := a.Load()
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.Load()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ca.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()

	check := func(c *Config) error {
		conn, err := grpc.NewClient(lis.Addr().String(), c.DialOption())
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(ca); err != nil {
		t.Fatalf("same CA: %v", err)
	}
	if err := check(cb); err == nil {
		t.Fatal("a client of another CA got through")
	}
	if err := check(nil); err == nil {
		t.Fatal("a plaintext client got through")
	}
}

// The client credentials verify the shared server name on a raw
// connection too, whatever address the caller passes as the authority
// (the ring's frame links do that).
func TestClientCredsVerifyServerNameOnRawConn(t *testing.T) {
	c, err := pki(t).Load()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		sc, _, err := c.ServerCreds().ServerHandshake(conn)
		if err == nil {
			sc.Write([]byte{7})
			sc.Close()
		}
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sc, _, err := c.ClientCreds().Clone().ClientHandshake(ctx, lis.Addr().String(), raw)
	if err != nil {
		t.Fatalf("handshake with the address as authority: %v", err)
	}
	defer sc.Close()
	b := make([]byte, 1)
	if _, err := sc.Read(b); err != nil || b[0] != 7 {
		t.Fatalf("read %v, %v", b, err)
	}
}

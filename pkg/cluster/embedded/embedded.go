// Package embedded runs an in-process, single-member etcd server for
// one-machine mode and tests. It is the only package that links etcd's
// server; pkg/cluster (the client side) does not, so a worker binary
// carries only the etcd client.
//
// Promises:
//   - Start returns a ready server or an error, leaving nothing running on
//     error; restarting in the same Dir keeps every key.
//   - Close is idempotent.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Errors.
var (
	// ErrInvalid reports a bad configuration.
	ErrInvalid = errors.New("embedded etcd: invalid configuration")
	// ErrStartTimeout reports that the server did not become ready in time.
	ErrStartTimeout = errors.New("embedded etcd: not ready in time")
)

// Config configures an in-process etcd server.
type Config struct {
	// Dir is the state directory; etcd's data lives in Dir/etcd. Required.
	// Restarting with the same Dir keeps all keys.
	Dir string
	// Name is the etcd member name (default "ringtrain").
	Name string
	// StartTimeout bounds the wait for the server to become ready
	// (default 20 s).
	StartTimeout time.Duration
	// Logger receives etcd's logs at warn level and above (default: none).
	Logger *zap.Logger
	// TLS, when set, makes the server serve https on its client and peer
	// ports and accept only clients presenting a certificate signed by
	// TLS.CAFile (mutual TLS). Without it the server speaks plain http,
	// unauthenticated, on 127.0.0.1: every local user can reach it.
	TLS *ServerTLS
	// ClientHost is the address the client port listens on (default
	// 127.0.0.1), e.g. a bridge address that emulated hosts reach.
	ClientHost string
}

// ServerTLS names the PEM files of an embedded server's mutual TLS. The
// certificate serves both ports and is the client certificate of the
// peer port; clients must present a certificate signed by CAFile.
type ServerTLS struct {
	CertFile, KeyFile, CAFile string
}

// Server is a running single-member etcd server listening on free
// loopback ports. It is safe for concurrent use.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string

	mu     sync.Mutex // guards closed
	closed bool
}

// maxPortTries is how often Start retries when a chosen free port
// was taken by someone else before etcd bound it.
const maxPortTries = 3

// Start starts an etcd server in cfg.Dir on two free 127.0.0.1
// ports (client and peer; https with client-certificate authentication
// when cfg.TLS is set) and waits until it is ready or ctx or
// cfg.StartTimeout expires (ErrStartTimeout). On error nothing is left
// running.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: embedded etcd needs a state directory", ErrInvalid)
	}
	if cfg.Name == "" {
		cfg.Name = "ringtrain"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	dataDir := filepath.Join(cfg.Dir, "etcd")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: state directory: %w", err)
	}
	var lastErr error
	for try := 0; try < maxPortTries; try++ {
		e, err := startOnce(ctx, cfg, dataDir)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if !isAddrInUse(err) {
			break
		}
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, cfg Config, dataDir string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	host := cfg.ClientHost
	if host == "" {
		host = "127.0.0.1"
	}
	clientURL := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(ports[0]))}
	peerURL := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dataDir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	if t := cfg.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" || t.CAFile == "" {
			return nil, fmt.Errorf("%w: embedded etcd TLS needs a certificate, its key and a CA", ErrInvalid)
		}
		// Certificates name the job (tlsconf's server name), not an
		// address: peers are verified by the CA alone, like every other
		// connection of the job.
		info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile,
			ClientCertAuth: true, SkipClientSANVerify: true}
		ec.ClientTLSInfo = info
		ec.PeerTLSInfo = info
	}
	ec.Logger = "zap"
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger.WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
	// A restart in the same directory must see the old data: etcd only
	// reads InitialCluster on the first start, so "new" is always right.
	ec.ClusterState = embed.ClusterStateFlagNew

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("cluster: start embedded etcd: %w", err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("cluster: embedded etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("%w (%s)", ErrStartTimeout, cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartTimeout, ctx.Err())
	}
	return &Server{etcd: e, endpoints: []string{clientURL.String()}}, nil
}

// Endpoints returns the client URLs of the server (one
// http://127.0.0.1:port, or https:// with TLS).
func (e *Server) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// PeerEndpoints returns the server's peer URLs.
func (e *Server) PeerEndpoints() []string {
	var out []string
	for _, u := range e.etcd.Config().ListenPeerUrls {
		out = append(out, u.String())
	}
	return out
}

// Err returns a channel that receives a fatal server error, if one occurs.
func (e *Server) Err() <-chan error { return e.etcd.Err() }

// Close stops the server and waits for it. It is idempotent and always
// returns nil; it exists to satisfy io.Closer.
func (e *Server) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.etcd.Close()
	<-e.etcd.Server.StopNotify()
	return nil
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func isAddrInUse(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "listen"
}

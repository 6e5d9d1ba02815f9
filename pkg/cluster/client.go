package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options says which etcd to use. With Endpoints empty, Open starts a
// server in Dir with Start (one-machine mode: embedded.Start); otherwise
// it connects to the existing cluster at Endpoints (the --etcd-endpoints
// flag).
type Options struct {
	// Endpoints of an external etcd cluster, e.g. "http://10.0.0.5:2379".
	Endpoints []string
	// Dir is the state directory of the embedded server (required when
	// Endpoints is empty).
	Dir string
	// DialTimeout bounds connecting and the first round trip (default 5 s).
	DialTimeout time.Duration
	// Logger receives warnings from etcd (default: none).
	Logger *zap.Logger
	// TLS is the client side of mutual TLS for https endpoints (http
	// endpoints stay plaintext).
	TLS *tls.Config
	// ServerTLS, when set, makes the embedded server (Endpoints empty)
	// serve mutual TLS; TLS must then present a certificate its CA signed.
	ServerTLS *ServerTLS
	// Start starts a server in dir (logging to log) for Open when
	// Endpoints is empty; the client owns it. Package embedded provides
	// one; this package does not link etcd's server itself.
	Start func(ctx context.Context, dir string, tls *ServerTLS, log *zap.Logger) (Server, error)
}

// ServerTLS names the PEM files of an embedded server's mutual TLS (see
// embedded.ServerTLS, which Options.Start is handed a copy of).
type ServerTLS struct {
	CertFile, KeyFile, CAFile string
}

// Server is an etcd server a Client may own.
type Server interface {
	Endpoints() []string
	Close() error
}

// Client is an etcd client, optionally owning the embedded server it talks
// to. It is safe for concurrent use.
type Client struct {
	etcd     *clientv3.Client
	embedded Server // nil for an external cluster

	mu     sync.Mutex // guards closed
	closed bool
}

// defaultDialTimeout bounds connecting when Options.DialTimeout is zero.
const defaultDialTimeout = 5 * time.Second

// Open connects to etcd as opts says, starting a server with opts.Start
// first when opts.Endpoints is empty. It fails with ErrUnreachable when no
// endpoint answers within opts.DialTimeout.
func Open(ctx context.Context, opts Options) (*Client, error) {
	if len(opts.Endpoints) > 0 {
		return Connect(ctx, opts)
	}
	if opts.Dir == "" || opts.Start == nil {
		return nil, fmt.Errorf("%w: neither etcd endpoints nor a state directory and a server to start given", ErrInvalid)
	}
	if opts.ServerTLS != nil && opts.TLS == nil {
		return nil, fmt.Errorf("%w: an embedded etcd with TLS needs the client's TLS too", ErrInvalid)
	}
	e, err := opts.Start(ctx, opts.Dir, opts.ServerTLS, opts.Logger)
	if err != nil {
		return nil, err
	}
	opts.Endpoints = e.Endpoints()
	c, err := Connect(ctx, opts)
	if err != nil {
		e.Close()
		return nil, err
	}
	c.embedded = e
	return c, nil
}

// Connect connects to the etcd cluster at opts.Endpoints and checks that
// it answers a read within opts.DialTimeout (ErrUnreachable otherwise).
func Connect(ctx context.Context, opts Options) (*Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd endpoints", ErrInvalid)
	}
	for _, ep := range opts.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return nil, fmt.Errorf("%w: empty etcd endpoint in %q", ErrInvalid, opts.Endpoints)
		}
	}
	if opts.DialTimeout < 0 {
		return nil, fmt.Errorf("%w: negative dial timeout", ErrInvalid)
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		Logger:      lg.WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		Context:     context.WithoutCancel(ctx),
		TLS:         opts.TLS,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, strings.Join(opts.Endpoints, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, rootPrefix+"probe", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("%w: no answer from %s within %s: %w",
			ErrUnreachable, strings.Join(opts.Endpoints, ","), opts.DialTimeout, err)
	}
	return &Client{etcd: cli}, nil
}

// Etcd returns the underlying etcd client for uses this package does not
// cover. It is closed by Close.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// Endpoints returns the endpoints the client talks to (the embedded
// server's when it owns one). Workers are handed these.
func (c *Client) Endpoints() []string { return c.etcd.Endpoints() }

// Embedded reports whether the client owns an embedded server.
func (c *Client) Embedded() bool { return c.embedded != nil }

// Close closes the client and then the embedded server it owns, if any.
// Live registrations made through this client are not revoked: their
// leases expire after their TTL. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.etcd.Close()
	if c.embedded != nil {
		c.embedded.Close()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("cluster: close client: %w", err)
	}
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Job returns the view of one job's keys. name must pass ValidateName.
func (c *Client) Job(name string) (*Job, error) {
	if err := ValidateName("job name", name); err != nil {
		return nil, err
	}
	return &Job{c: c, name: name}, nil
}

// Job is one job's membership and checkpoint manifests.
type Job struct {
	c    *Client
	name string
}

// Name returns the job's name.
func (j *Job) Name() string { return j.name }

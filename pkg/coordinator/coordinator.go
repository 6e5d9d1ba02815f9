package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Config configures one coordinator replica: a raft node plus the Control
// service on a gRPC server.
type Config struct {
	// Node is the raft replica's configuration. Node.ControlAddr is filled
	// in from the listener.
	Node NodeConfig
	// Service is the Control service's configuration.
	Service ServiceConfig
	// ListenAddr is where the Control service listens, e.g. "127.0.0.1:0"
	// or ":7070". Required.
	ListenAddr string
	// AdvertiseAddr is the control address announced to workers and other
	// replicas (default: the listener's address).
	AdvertiseAddr string
	// ServerOptions are passed to grpc.NewServer (e.g. TLS credentials).
	ServerOptions []grpc.ServerOption
}

// Coordinator is a running replica. Close stops it.
type Coordinator struct {
	node    *Node
	service *Service
	server  *grpc.Server
	lis     net.Listener
	served  chan error
	once    sync.Once
	err     error // from the first Close
}

// Start listens on cfg.ListenAddr, opens the raft node and serves the
// Control service. On error nothing is left running.
func Start(cfg Config) (*Coordinator, error) {
	if cfg.ListenAddr == "" {
		return nil, fmt.Errorf("%w: coordinator needs a listen address", ErrInvalid)
	}
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen on %s: %w", cfg.ListenAddr, err)
	}
	cfg.Node.ControlAddr = cfg.AdvertiseAddr
	if cfg.Node.ControlAddr == "" {
		cfg.Node.ControlAddr = lis.Addr().String()
	}
	node, err := NewNode(cfg.Node)
	if err != nil {
		lis.Close()
		return nil, err
	}
	svc, err := NewService(node, cfg.Service)
	if err != nil {
		node.Close()
		lis.Close()
		return nil, err
	}
	srv := grpc.NewServer(cfg.ServerOptions...)
	controlpb.RegisterControlServer(srv, svc)
	c := &Coordinator{node: node, service: svc, server: srv, lis: lis, served: make(chan error, 1)}
	go func() { c.served <- srv.Serve(lis) }()
	if cfg.Node.Logger != nil {
		cfg.Node.Logger.Info("coordinator replica started", zap.String("node", node.ID()),
			zap.String("control", cfg.Node.ControlAddr), zap.String("raft", node.RaftAddr()))
	}
	return c, nil
}

// Addr returns the Control service's listen address.
func (c *Coordinator) Addr() string { return c.lis.Addr().String() }

// Node returns the raft replica.
func (c *Coordinator) Node() *Node { return c.node }

// Service returns the Control service.
func (c *Coordinator) Service() *Service { return c.service }

// RaftAddr returns the raft transport's address.
func (c *Coordinator) RaftAddr() raft.ServerAddress { return raft.ServerAddress(c.node.RaftAddr()) }

// Shutdown stops the replica like Close, but first lets the Control
// service's calls in flight end on their own, until ctx ends: new
// connections are refused, and a worker's plan stream ends when the
// worker hangs up, which it does once it has read the final plan. It
// returns Close's error, or ctx's when the calls were cut short.
func (c *Coordinator) Shutdown(ctx context.Context) error {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		c.server.GracefulStop()
	}()
	var cut error
	select {
	case <-drained:
	case <-ctx.Done():
		cut = fmt.Errorf("coordinator: control calls still open at shutdown: %w", ctx.Err())
		c.server.Stop()
		<-drained
	}
	return errors.Join(cut, c.Close())
}

// Close stops serving (open plan streams end), then the service and the
// node. It is idempotent.
func (c *Coordinator) Close() error {
	c.once.Do(func() {
		c.service.Close()
		c.server.Stop()
		serveErr := <-c.served
		if errors.Is(serveErr, grpc.ErrServerStopped) {
			serveErr = nil
		}
		c.err = errors.Join(serveErr, c.node.Close())
	})
	return c.err
}

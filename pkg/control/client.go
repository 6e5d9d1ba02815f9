package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Client calls the Control service of a coordinator cluster and follows
// leader redirects: it starts with any known replica, and when a follower
// names the leader it goes there. It is safe for concurrent use.
type Client struct {
	addrs []string
	opts  []grpc.DialOption

	mu       sync.Mutex // guards conns, leader, closed and onLeader
	conns    map[string]*grpc.ClientConn
	leader   string // last known leader address; "" if none
	closed   bool
	onLeader func(LeaderChange)
}

// LeaderChange describes the client moving to another replica.
type LeaderChange struct {
	From, To string // control addresses; From is "" at the first call
	// Via is the follower that named the new leader ("" when the client
	// found it by trying the replicas).
	Via    string
	Reason string // the error that made the client move, if any
}

// OnLeaderChange sets f to be called (on the calling goroutine) each time
// a call succeeds at a replica other than the previous one.
func (c *Client) OnLeaderChange(f func(LeaderChange)) {
	c.mu.Lock()
	c.onLeader = f
	c.mu.Unlock()
}

// retryPause is the wait before trying again when no leader is known.
const retryPause = 100 * time.Millisecond

// NewClient returns a client for the replicas at addrs (host:port). It
// does not connect yet; calls fail with ErrUnreachable when no replica
// answers before their context ends. opts default to an insecure
// (plaintext) connection.
func NewClient(addrs []string, opts ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no coordinator addresses", ErrInvalid)
	}
	for _, a := range addrs {
		if strings.TrimSpace(a) == "" {
			return nil, fmt.Errorf("%w: empty coordinator address in %q", ErrInvalid, addrs)
		}
	}
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Client{addrs: append([]string(nil), addrs...), opts: opts, conns: map[string]*grpc.ClientConn{}}, nil
}

func (c *Client) conn(addr string) (controlpb.ControlClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, c.opts...)
		if err != nil {
			return nil, fmt.Errorf("%w: coordinator address %q: %w", ErrInvalid, addr, err)
		}
		c.conns[addr] = cc
	}
	return controlpb.NewControlClient(cc), nil
}

// candidates returns the addresses to try, the known leader first.
func (c *Client) candidates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.addrs)+1)
	if c.leader != "" {
		out = append(out, c.leader)
	}
	for _, a := range c.addrs {
		if a != c.leader {
			out = append(out, a)
		}
	}
	return out
}

func (c *Client) setLeader(addr, via string, last error) {
	c.mu.Lock()
	old, f := c.leader, c.onLeader
	c.leader = addr
	c.mu.Unlock()
	if old != addr && f != nil {
		ch := LeaderChange{From: old, To: addr, Via: via}
		if last != nil {
			ch.Reason = last.Error()
		}
		f(ch)
	}
}

// Leader returns the address of the leader the client last talked to.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// call runs fn against the leader, following redirects and retrying
// replicas that are down or leaderless until ctx ends.
func (c *Client) call(ctx context.Context, fn func(controlpb.ControlClient) error) error {
	var last error
	for {
		for _, addr := range c.candidates() {
			via := ""
			for hop := 0; addr != "" && hop < 3; hop++ {
				cl, err := c.conn(addr)
				if err != nil {
					return err
				}
				err = fn(cl)
				if err == nil {
					c.setLeader(addr, via, last)
					return nil
				}
				nl, conv := FromStatus(err)
				switch {
				case errors.Is(conv, ErrNotLeader):
					last = conv
					next := ""
					if nl != nil {
						next = nl.GetLeaderAddress()
					}
					if next == addr {
						next = "" // stale self-reference: try the others
					}
					if next != "" {
						via = addr
					}
					addr = next
				case status.Code(err) == codes.Unavailable:
					last = err
					addr = ""
				default:
					if ctx.Err() != nil {
						return fmt.Errorf("%w: %w", ErrUnreachable, ctx.Err())
					}
					return conv
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no leader among %s: %w (last: %w)", ErrUnreachable, strings.Join(c.addrs, ","), ctx.Err(), last)
		case <-time.After(retryPause):
		}
	}
}

// Join announces w and returns the job, the etcd endpoints and the plan.
func (c *Client) Join(ctx context.Context, w *controlpb.WorkerInfo) (*controlpb.JoinResponse, error) {
	var resp *controlpb.JoinResponse
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		resp, err = cl.Join(ctx, &controlpb.JoinRequest{Worker: w})
		return err
	})
	return resp, err
}

// ReportMetrics sends one report.
func (c *Client) ReportMetrics(ctx context.Context, m *controlpb.MetricsReport) error {
	return c.call(ctx, func(cl controlpb.ControlClient) error {
		_, err := cl.ReportMetrics(ctx, m)
		return err
	})
}

// ReportFailure reports a failed ring and returns the current plan.
func (c *Client) ReportFailure(ctx context.Context, r *controlpb.FailureReport) (*controlpb.Plan, error) {
	var p *controlpb.Plan
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		p, err = cl.ReportFailure(ctx, r)
		return err
	})
	return p, err
}

// CommitStep records rank 0's committed step.
func (c *Client) CommitStep(ctx context.Context, r *controlpb.CommitStepRequest) (*controlpb.CommitStepResponse, error) {
	var resp *controlpb.CommitStepResponse
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		resp, err = cl.CommitStep(ctx, r)
		return err
	})
	return resp, err
}

// RecordCheckpoint records the newest checkpoint reference.
func (c *Client) RecordCheckpoint(ctx context.Context, r *controlpb.RecordCheckpointRequest) (*controlpb.RecordCheckpointResponse, error) {
	var resp *controlpb.RecordCheckpointResponse
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		resp, err = cl.RecordCheckpoint(ctx, r)
		return err
	})
	return resp, err
}

// GetJob returns the job's status from the leader.
func (c *Client) GetJob(ctx context.Context) (*controlpb.JobStatus, error) {
	var resp *controlpb.JobStatus
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		resp, err = cl.GetJob(ctx, &controlpb.GetJobRequest{})
		return err
	})
	return resp, err
}

// WatchPlan calls fn with every plan newer than after, in generation
// order, following the leader across failovers, until ctx ends (nil) or
// fn returns an error (returned as is).
func (c *Client) WatchPlan(ctx context.Context, workerID string, after uint64, fn func(*controlpb.Plan) error) error {
	for {
		var fnErr error
		err := c.call(ctx, func(cl controlpb.ControlClient) error {
			stream, err := cl.WatchPlan(ctx, &controlpb.WatchPlanRequest{WorkerId: workerID, AfterGeneration: after})
			if err != nil {
				return err
			}
			for {
				p, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return status.Error(codes.Unavailable, "plan stream ended")
					}
					return err
				}
				if p.GetGeneration() <= after {
					continue
				}
				after = p.GetGeneration()
				if fnErr = fn(p); fnErr != nil {
					return nil
				}
			}
		})
		switch {
		case fnErr != nil:
			return fnErr
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		}
	}
}

// Bench starts a benchmark round on workers of the live workers (or, with
// end, ends round id) and returns the plan published for it.
func (c *Client) Bench(ctx context.Context, r *controlpb.BenchRequest) (*controlpb.Plan, error) {
	var p *controlpb.Plan
	err := c.call(ctx, func(cl controlpb.ControlClient) (err error) {
		p, err = cl.Bench(ctx, r)
		return err
	})
	return p, err
}

// WatchMetrics calls fn with every metrics report the leader receives
// from the moment the stream is open (ready is called then, once) until
// ctx ends (nil) or fn returns an error (returned as is). A stream that
// breaks (leader change, a stream that fell behind) is an error: reports
// may have been missed.
func (c *Client) WatchMetrics(ctx context.Context, ready func(), fn func(*controlpb.MetricsReport) error) error {
	var fnErr error
	err := c.call(ctx, func(cl controlpb.ControlClient) error {
		stream, err := cl.WatchMetrics(ctx, &controlpb.WatchMetricsRequest{})
		if err != nil {
			return err
		}
		// The stream is open once its header arrives (the server sends
		// it on the first report or at once: force it with a header read).
		if _, err := stream.Header(); err != nil {
			return err
		}
		if ready != nil {
			ready()
			ready = nil
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fnErr = fmt.Errorf("%w: metrics stream ended: %w", ErrUnreachable, err)
				return nil
			}
			if fnErr = fn(m); fnErr != nil {
				return nil
			}
		}
	})
	if fnErr != nil {
		return fnErr
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Close closes all connections. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

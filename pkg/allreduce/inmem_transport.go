package allreduce

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// InmemNetwork connects InmemTransports by name, within one process. It is
// for tests: frames move through bounded channels, and Partition cuts a
// transport off as a dead host would be.
type InmemNetwork struct {
	mu    sync.Mutex // guards nodes
	nodes map[string]*InmemTransport
}

// NewInmemNetwork returns an empty network.
func NewInmemNetwork() *InmemNetwork {
	return &InmemNetwork{nodes: make(map[string]*InmemTransport)}
}

// InmemWindow is the number of frames an in-memory pipe holds before Send
// blocks (the in-memory analogue of a flow-control window).
const InmemWindow = 8

// InmemTransport is a Transport whose peers are other InmemTransports of
// the same network, addressed by name.
type InmemTransport struct {
	net  *InmemNetwork
	name string

	mu        sync.Mutex    // guards endpoints, links, cut
	changed   chan struct{} // closed and replaced whenever endpoints changes
	endpoints map[ringKey]*inmemEndpoint
	links     map[*inmemLink]struct{}
	cut       bool
}

var _ Transport = (*InmemTransport)(nil)

type inmemEndpoint struct {
	plan Plan
	in   chan *inmemPipe // the pipe from the left neighbour, once
}

// Transport returns the transport named name, creating it on first use.
func (n *InmemNetwork) Transport(name string) *InmemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.nodes[name]; ok {
		return t
	}
	t := &InmemTransport{net: n, name: name, changed: make(chan struct{}),
		endpoints: make(map[ringKey]*inmemEndpoint), links: make(map[*inmemLink]struct{})}
	n.nodes[name] = t
	return t
}

// Partition closes every link of the named transport and makes its future
// Opens fail: to its neighbours it looks like a dead process.
func (n *InmemNetwork) Partition(name string) {
	t := n.Transport(name)
	t.mu.Lock()
	t.cut = true
	links := make([]*inmemLink, 0, len(t.links))
	for l := range t.links {
		links = append(links, l)
	}
	t.mu.Unlock()
	for _, l := range links {
		_ = l.Close()
	}
}

func (n *InmemNetwork) lookup(name string) (*InmemTransport, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.nodes[name]
	return t, ok
}

// Open implements Transport.
func (t *InmemTransport) Open(ctx context.Context, p Plan) (Link, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.World() == 1 {
		return nil, nil
	}
	key := ringKey{p.Job, p.Generation}
	ep := &inmemEndpoint{plan: p, in: make(chan *inmemPipe, 1)}
	t.mu.Lock()
	if t.cut {
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: transport %q is partitioned", ErrClosed, t.name)
	}
	if _, dup := t.endpoints[key]; dup {
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: ring (%q, %d) already open at %q", ErrPeer, p.Job, p.Generation, t.name)
	}
	t.endpoints[key] = ep
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.endpoints, key)
		t.mu.Unlock()
	}()

	out := newInmemPipe()
	if err := t.connect(ctx, p, out); err != nil {
		return nil, err
	}
	select {
	case in := <-ep.in:
		l := &inmemLink{t: t, out: out, in: in}
		t.mu.Lock()
		t.links[l] = struct{}{}
		t.mu.Unlock()
		return l, nil
	case <-ctx.Done():
		out.close()
		return nil, fmt.Errorf("%w: left neighbour %q of rank %d did not connect: %w", ErrTimeout, p.Peers[p.Left()], p.Rank, ctx.Err())
	}
}

// connect hands out to the right neighbour's endpoint, waiting for the
// neighbour to open the same ring.
func (t *InmemTransport) connect(ctx context.Context, p Plan, out *inmemPipe) error {
	addr := p.Peers[p.Right()]
	for {
		peer, ok := t.net.lookup(addr)
		var changed chan struct{}
		if ok {
			peer.mu.Lock()
			changed = peer.changed
			ep, found := peer.endpoints[ringKey{p.Job, p.Generation}]
			var newest *inmemEndpoint
			for k, e := range peer.endpoints {
				if k.job == p.Job && (newest == nil || e.plan.Generation > newest.plan.Generation) {
					newest = e
				}
			}
			cut := peer.cut
			peer.mu.Unlock()
			switch {
			case cut:
				return fmt.Errorf("%w: peer %q is partitioned", ErrClosed, addr)
			case found:
				if err := helloCheck(ep.plan, p.Job, p.Generation, p.Rank, p.World()); err != nil {
					return fmt.Errorf("peer %q refused: %w", addr, err)
				}
				select {
				case ep.in <- out:
					return nil
				default:
					return fmt.Errorf("%w: peer %q already has a left neighbour", ErrPeer, addr)
				}
			case newest != nil && newest.plan.Generation > p.Generation:
				return fmt.Errorf("peer %q refused: %w: peer generation %d, here %d", addr, ErrGeneration, newest.plan.Generation, p.Generation)
			}
		}
		wait := time.After(5 * time.Millisecond) // the peer may not exist yet
		select {
		case <-changed: // nil channel when the peer does not exist yet
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("%w: right neighbour %q of rank %d did not open ring (%q, %d): %w",
				ErrNoRing, addr, p.Rank, p.Job, p.Generation, ctx.Err())
		}
	}
}

// inmemPipe is one direction of a link: a bounded queue of frames.
type inmemPipe struct {
	frames chan inmemFrame
	closed chan struct{}
	once   sync.Once
}

type inmemFrame struct {
	h       Header
	payload []byte
}

func newInmemPipe() *inmemPipe {
	return &inmemPipe{frames: make(chan inmemFrame, InmemWindow), closed: make(chan struct{})}
}

func (p *inmemPipe) close() { p.once.Do(func() { close(p.closed) }) }

// inmemLink implements Link over two pipes.
type inmemLink struct {
	t   *InmemTransport
	out *inmemPipe // to the right neighbour
	in  *inmemPipe // from the left neighbour
}

func (l *inmemLink) Send(h *Header, size int, fill func(dst []byte)) error {
	select {
	case <-l.out.closed:
		return fmt.Errorf("%w: in-memory link to the right", ErrClosed)
	default:
	}
	buf := make([]byte, size)
	fill(buf)
	select {
	case l.out.frames <- inmemFrame{h: *h, payload: buf}:
		return nil
	case <-l.out.closed:
		return fmt.Errorf("%w: in-memory link to the right", ErrClosed)
	}
}

func (l *inmemLink) Recv(fn func(h *Header, payload [][]byte) error) error {
	select { // frames sent before a close are still delivered
	case f := <-l.in.frames:
		return fn(&f.h, [][]byte{f.payload})
	default:
	}
	select {
	case f := <-l.in.frames:
		return fn(&f.h, [][]byte{f.payload})
	case <-l.in.closed:
		return fmt.Errorf("%w: in-memory link from the left", ErrClosed)
	}
}

func (l *inmemLink) Close() error {
	l.out.close()
	l.in.close()
	l.t.mu.Lock()
	delete(l.t.links, l)
	l.t.mu.Unlock()
	return nil
}

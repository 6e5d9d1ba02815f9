package allreduce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"

	"github.com/ringtrain/ringtrain/proto/ringpb"
)

// GRPCConfig configures a GRPCTransport. The zero value of every field
// means its default.
type GRPCConfig struct {
	// ClientCreds and ServerCreds secure the streams (mTLS in a cluster).
	// Nil means plaintext.
	ClientCreds credentials.TransportCredentials
	ServerCreds credentials.TransportCredentials
	// DialOptions and ServerOptions are appended to the transport's own.
	DialOptions   []grpc.DialOption
	ServerOptions []grpc.ServerOption

	// MaxChunkBytes is the largest payload of one frame (default 4 MiB). The
	// gRPC message limit is set to it plus header room, on both sides; a
	// Ring's ChunkBytes must not exceed it.
	MaxChunkBytes int
	// Window is the HTTP/2 flow-control window per stream and connection
	// (default 16 MiB): the bytes in flight to one neighbour.
	Window int
	// HandshakeTimeout bounds how long an incoming stream waits for the
	// local ring of its plan to be opened (default 10 s).
	HandshakeTimeout time.Duration

	// HostID names this machine; neighbours with equal host ids exchange
	// tensor bytes through shared memory. Default: hostname and boot id.
	HostID string
	// DisableSharedMemory turns the same-host path off (then every byte
	// goes through gRPC).
	DisableSharedMemory bool
	// ShmDir is where shared-memory files are created (default /dev/shm).
	ShmDir string
	// ShmSlots is the number of chunk slots per link (default 8); each
	// holds MaxChunkBytes.
	ShmSlots int
	// DisableTCPFrames keeps frames on the gRPC stream between hosts.
	// By default, when this transport serves through Listen, the handshake
	// sets up a plain TCP connection per link for the frames (secured with
	// the same credentials), which is several times cheaper than HTTP/2.
	DisableTCPFrames bool
	// TCPSendBuffer is the SO_SNDBUF of a frame connection in bytes
	// (default 512 KiB, which Linux doubles for its bookkeeping; negative:
	// the kernel's default and autotuning, up to 4 MiB on a stock Linux).
	// It bounds the bytes sent and not yet acknowledged on a link. Small:
	// on loopback it took about a fifth off the CPU time of a 4-rank ring
	// against autotuning (most likely because the bytes are still in cache
	// when the receiver copies them out); large enough for the
	// bandwidth-delay product of a data-centre link (1 MiB in flight is
	// 10 GB/s at a 100 µs round trip); raise it for longer round trips.
	TCPSendBuffer int
}

const (
	defaultMaxChunkBytes = 4 << 20
	defaultWindow        = 16 << 20
	defaultShmSlots      = 8
	defaultTCPSendBuffer = 512 << 10
)

func (c *GRPCConfig) fill() error {
	if c.MaxChunkBytes == 0 {
		c.MaxChunkBytes = defaultMaxChunkBytes
	}
	if c.Window == 0 {
		c.Window = defaultWindow
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultTimeout
	}
	if c.HostID == "" {
		c.HostID = defaultHostID()
	}
	if c.ShmDir == "" {
		c.ShmDir = defaultShmDir()
	}
	if c.ShmSlots == 0 {
		c.ShmSlots = defaultShmSlots
	}
	if c.TCPSendBuffer == 0 {
		c.TCPSendBuffer = defaultTCPSendBuffer
	}
	switch {
	case c.MaxChunkBytes < 64 || c.MaxChunkBytes > 1<<30:
		return fmt.Errorf("%w: max chunk bytes %d", ErrConfig, c.MaxChunkBytes)
	case c.Window < 64<<10 || c.Window > 1<<30:
		return fmt.Errorf("%w: window %d (want 64 KiB .. 1 GiB)", ErrConfig, c.Window)
	case c.ShmSlots < 1 || c.ShmSlots > 1024:
		return fmt.Errorf("%w: %d shared-memory slots", ErrConfig, c.ShmSlots)
	case c.TCPSendBuffer > 1<<30:
		return fmt.Errorf("%w: TCP send buffer %d (at most 1 GiB)", ErrConfig, c.TCPSendBuffer)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("%w: negative handshake timeout", ErrConfig)
	}
	return nil
}

// GRPCTransport connects ring neighbours with gRPC streams over TCP: each
// rank dials its right neighbour and serves its left one. It serves
// Ring.Exchange; use Listen, or Register on a server of your own.
type GRPCTransport struct {
	ringpb.UnimplementedRingServer
	cfg GRPCConfig

	mu        sync.Mutex // guards endpoints, changed, links, server, closed
	endpoints map[ringKey]*grpcEndpoint
	changed   chan struct{} // closed and replaced when endpoints changes
	links     map[*grpcLink]struct{}
	server    *grpc.Server
	data      *dataListener // frame connections (Listen without DisableTCPFrames)
	closed    bool

	handlers sync.WaitGroup // running Exchange handlers
}

var _ Transport = (*GRPCTransport)(nil)

type grpcEndpoint struct {
	plan Plan
	in   chan *inbound // the accepted stream from the left neighbour
}

// NewGRPCTransport returns a transport with cfg (defaults filled in).
func NewGRPCTransport(cfg GRPCConfig) (*GRPCTransport, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	return &GRPCTransport{cfg: cfg, endpoints: make(map[ringKey]*grpcEndpoint),
		changed: make(chan struct{}), links: make(map[*grpcLink]struct{})}, nil
}

// ServerOptions returns the options a gRPC server that hosts this
// transport (Register) needs: message limits and windows.
func (t *GRPCTransport) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(t.cfg.MaxChunkBytes + maxHeaderBytes + 4),
		grpc.MaxSendMsgSize(maxHeaderBytes),
		grpc.InitialWindowSize(int32(t.cfg.Window)),
		grpc.InitialConnWindowSize(int32(t.cfg.Window)),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(64 << 10),
	}
	if t.cfg.ServerCreds != nil {
		opts = append(opts, grpc.Creds(t.cfg.ServerCreds))
	}
	return append(opts, t.cfg.ServerOptions...)
}

// Register adds the ring service to s, which must have been created with
// ServerOptions.
func (t *GRPCTransport) Register(s *grpc.Server) { ringpb.RegisterRingServer(s, t) }

// Listen serves the ring service on addr ("127.0.0.1:0" picks a port) until
// Close, and returns the bound address.
func (t *GRPCTransport) Listen(addr string) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("allreduce: listen %s: %w", addr, err)
	}
	s := grpc.NewServer(t.ServerOptions()...)
	t.Register(s)
	t.mu.Lock()
	if t.closed || t.server != nil {
		t.mu.Unlock()
		_ = lis.Close()
		return nil, fmt.Errorf("%w: transport closed or already listening", ErrConfig)
	}
	t.server = s
	t.mu.Unlock()
	if !t.cfg.DisableTCPFrames {
		host, _, _ := net.SplitHostPort(lis.Addr().String())
		d, err := newDataListener(t, host)
		if err != nil {
			_ = lis.Close()
			return nil, err
		}
		t.mu.Lock()
		t.data = d
		t.mu.Unlock()
	}
	go func() { _ = s.Serve(lis) }()
	return lis.Addr(), nil
}

// Close closes every open link and stops the server started by Listen.
func (t *GRPCTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	links := make([]*grpcLink, 0, len(t.links))
	for l := range t.links {
		links = append(links, l)
	}
	s, d := t.server, t.data
	t.mu.Unlock()
	for _, l := range links {
		_ = l.Close()
	}
	if s != nil {
		s.Stop()
	}
	if d != nil {
		d.close()
	}
	t.handlers.Wait()
	return nil
}

func (t *GRPCTransport) dialOptions() []grpc.DialOption {
	creds := t.cfg.ClientCreds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithInitialWindowSize(int32(t.cfg.Window)),
		grpc.WithInitialConnWindowSize(int32(t.cfg.Window)),
		grpc.WithReadBufferSize(64 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithDefaultCallOptions(
			grpc.CallContentSubtype(codecName),
			grpc.MaxCallSendMsgSize(t.cfg.MaxChunkBytes+maxHeaderBytes+4),
			grpc.MaxCallRecvMsgSize(maxHeaderBytes),
		),
	}
	return append(opts, t.cfg.DialOptions...)
}

// Open implements Transport.
func (t *GRPCTransport) Open(ctx context.Context, p Plan) (Link, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.World() == 1 {
		return nil, nil
	}
	key := ringKey{p.Job, p.Generation}
	ep := &grpcEndpoint{plan: p, in: make(chan *inbound, 1)}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: transport closed", ErrClosed)
	}
	if _, dup := t.endpoints[key]; dup {
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: ring (%q, %d) already open here", ErrPeer, p.Job, p.Generation)
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

	l, err := t.dial(ctx, p)
	if err != nil {
		return nil, err
	}
	select {
	case in := <-ep.in:
		l.in = in
	case <-ctx.Done():
		_ = l.Close()
		return nil, fmt.Errorf("%w: left neighbour %s of rank %d did not connect: %w", ErrTimeout, p.Peers[p.Left()], p.Rank, ctx.Err())
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = l.Close()
		return nil, fmt.Errorf("%w: transport closed", ErrClosed)
	}
	t.links[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

// dial opens the stream to the right neighbour and says hello.
func (t *GRPCTransport) dial(ctx context.Context, p Plan) (l *grpcLink, err error) {
	addr := p.Peers[p.Right()]
	conn, err := grpc.NewClient(addr, t.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("allreduce: dial %s: %w", addr, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	l = &grpcLink{t: t, conn: conn, cancel: cancel, closed: make(chan struct{}),
		maxPayload: t.cfg.MaxChunkBytes, ackDone: make(chan struct{})}
	defer func() {
		if err != nil {
			close(l.ackDone)
			_ = l.Close()
		}
	}()
	// The handshake must finish within ctx; the stream itself lives until
	// Close.
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	stream, err := ringpb.NewRingClient(conn).Exchange(sctx, grpc.WaitForReady(true))
	if err != nil {
		return l, dialErr(ctx, addr, err)
	}
	l.stream = stream
	hello := &wireChunk{hdr: ringpb.ChunkHeader{Kind: ringpb.Kind_KIND_HELLO, Job: p.Job, Generation: p.Generation,
		Hello: &ringpb.Hello{Job: p.Job, Generation: p.Generation, FromRank: uint32(p.Rank),
			World: uint32(p.World()), HostId: t.cfg.HostID, WantTcpData: !t.cfg.DisableTCPFrames}}}
	if shmSupported && !t.cfg.DisableSharedMemory {
		seg, err := createShm(t.cfg.ShmDir, t.cfg.ShmSlots, t.cfg.MaxChunkBytes)
		if err == nil { // without shared memory the stream still works
			l.shm = seg
			hello.hdr.Hello.ShmPath, hello.hdr.Hello.ShmSlots, hello.hdr.Hello.ShmSlotBytes = seg.path, uint32(seg.slots), uint64(seg.slot)
		}
	}
	if err := stream.SendMsg(hello); err != nil {
		return l, dialErr(ctx, addr, err)
	}
	var ack ringpb.Ack
	if err := stream.RecvMsg(&ack); err != nil {
		return l, dialErr(ctx, addr, err)
	}
	if l.shm != nil {
		l.shm.unlink() // mapped at both ends now (or refused): the name is no longer needed
	}
	if err := refusalErr(&ack); err != nil {
		return l, fmt.Errorf("peer %s refused: %w", addr, err)
	}
	if l.shm != nil && !ack.ShmAccepted {
		l.shm.unmap()
		l.shm = nil
	}
	if ack.GetDataAddr() != "" {
		c, err := t.dialData(ctx, addr, &ack)
		if err != nil {
			return l, err
		}
		l.out = &frameWriter{c: c}
	}
	go l.readAcks()
	return l, nil
}

func dialErr(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: ring handshake with %s: %w", ErrTimeout, addr, err)
	}
	return fmt.Errorf("%w: ring handshake with %s: %w", ErrClosed, addr, err)
}

// refusalErr maps a HELLO answer to a sentinel error (nil if accepted).
func refusalErr(a *ringpb.Ack) error {
	var base error
	switch a.GetRefusal() {
	case ringpb.Refusal_REFUSAL_NONE:
		if a.GetKind() != ringpb.Kind_KIND_HELLO {
			return fmt.Errorf("%w: handshake answered with %v", ErrMalformed, a.GetKind())
		}
		return nil
	case ringpb.Refusal_REFUSAL_JOB:
		base = ErrJob
	case ringpb.Refusal_REFUSAL_GENERATION:
		base = ErrGeneration
	case ringpb.Refusal_REFUSAL_PEER, ringpb.Refusal_REFUSAL_BUSY:
		base = ErrPeer
	case ringpb.Refusal_REFUSAL_NO_RING:
		base = ErrNoRing
	default:
		base = ErrMalformed
	}
	return fmt.Errorf("%w (%s)", base, a.GetDetail())
}

func refusalOf(err error) ringpb.Refusal {
	switch {
	case errors.Is(err, ErrJob):
		return ringpb.Refusal_REFUSAL_JOB
	case errors.Is(err, ErrGeneration):
		return ringpb.Refusal_REFUSAL_GENERATION
	case errors.Is(err, ErrPeer):
		return ringpb.Refusal_REFUSAL_PEER
	case errors.Is(err, ErrNoRing):
		return ringpb.Refusal_REFUSAL_NO_RING
	}
	return ringpb.Refusal_REFUSAL_MALFORMED
}

// inbound is an accepted stream from the left neighbour. Its handler
// goroutine keeps the stream open until the link closes; a reader goroutine
// moves frames into a small queue.
type inbound struct {
	stream grpc.BidiStreamingServer[ringpb.Chunk, ringpb.Ack]
	frames chan *wireChunk // closed by the reader when the stream ends
	err    error           // why the stream ended; set before frames is closed
	done   chan struct{}   // closed by the link's Close
	shm    *shmSegment     // the sender's slots, or nil; unmapped by the link's Close
	taken  uint64          // shared-memory frames consumed (the link's Recv only)
	shmHdr ringpb.ChunkHeader
	conn   net.Conn     // the frame connection, or nil (frames on the stream)
	reader *frameReader // reads conn; used by the link's Recv only

	sendMu sync.Mutex // guards ended and stream.SendMsg (acks)
	ended  bool       // the handler has returned
}

// inboundQueue is how many received frames wait for the ring at most
// (beyond gRPC's window).
const inboundQueue = 4

// Exchange implements ringpb.RingServer: it validates the caller's hello
// and hands the stream to the ring of that job and generation.
func (t *GRPCTransport) Exchange(stream grpc.BidiStreamingServer[ringpb.Chunk, ringpb.Ack]) error {
	t.handlers.Add(1)
	defer t.handlers.Done()
	var hello wireChunk
	if err := stream.RecvMsg(&hello); err != nil {
		return err
	}
	hello.release()
	h := hello.hdr.GetHello()
	refuse := func(err error) error {
		_ = stream.SendMsg(&ringpb.Ack{Kind: ringpb.Kind_KIND_HELLO, Refusal: refusalOf(err), Detail: err.Error(), HostId: t.cfg.HostID})
		return nil
	}
	if hello.hdr.GetKind() != ringpb.Kind_KIND_HELLO || h == nil {
		return refuse(fmt.Errorf("%w: stream did not start with a hello", ErrMalformed))
	}
	ep, err := t.awaitEndpoint(stream.Context(), h.GetJob(), h.GetGeneration())
	if err != nil {
		return refuse(err)
	}
	if err := helloCheck(ep.plan, h.GetJob(), h.GetGeneration(), int(h.GetFromRank()), int(h.GetWorld())); err != nil {
		return refuse(err)
	}
	in := &inbound{stream: stream, frames: make(chan *wireChunk, inboundQueue), done: make(chan struct{})}
	ack := &ringpb.Ack{Kind: ringpb.Kind_KIND_HELLO, HostId: t.cfg.HostID}
	if h.GetShmPath() != "" && shmSupported && !t.cfg.DisableSharedMemory && h.GetHostId() == t.cfg.HostID {
		seg, err := openShm(t.cfg.ShmDir, h.GetShmPath(), int(h.GetShmSlots()), int(h.GetShmSlotBytes()))
		if err == nil {
			in.shm = seg
			ack.ShmAccepted = true
		}
	}
	t.mu.Lock()
	data := t.data
	t.mu.Unlock()
	var dataConn chan net.Conn
	if in.shm == nil && h.GetWantTcpData() && data != nil {
		tok, ch, err := data.expect()
		if err != nil {
			return refuse(err)
		}
		defer data.forget(tok)
		ack.DataAddr, ack.DataToken, dataConn = reachableAddr(data.lis.Addr(), stream.Context()), tok, ch
	}
	if err := stream.SendMsg(ack); err != nil {
		if in.shm != nil {
			in.shm.unmap()
		}
		return err
	}
	if dataConn != nil {
		timer := time.NewTimer(t.cfg.HandshakeTimeout)
		select {
		case c := <-dataConn:
			timer.Stop()
			in.conn = c
			in.reader = newFrameReader(c, t.cfg.MaxChunkBytes)
		case <-timer.C:
			return fmt.Errorf("%w: frame connection not opened", ErrTimeout)
		case <-stream.Context().Done():
			timer.Stop()
			return stream.Context().Err()
		}
	}
	select {
	case ep.in <- in:
	default:
		if in.shm != nil {
			in.shm.unmap()
		}
		if in.conn != nil {
			_ = in.conn.Close()
		}
		return fmt.Errorf("%w: rank %d already connected", ErrPeer, h.GetFromRank())
	}

	readerDone := make(chan struct{})
	go func() { in.read(); close(readerDone) }()
	select {
	case <-in.done: // the local link closed
	case <-readerDone: // the neighbour half-closed (Drain) or went away
	case <-stream.Context().Done():
	}
	in.sendMu.Lock()
	in.ended = true
	in.sendMu.Unlock()
	// Frames already queued stay readable (and their shared memory mapped)
	// until the local link closes.
	return nil
}

// read moves frames from the stream to the queue until the stream ends or
// the link closes.
func (in *inbound) read() {
	defer func() {
		close(in.frames)
		if in.shm != nil {
			in.shm.wake(shmOffHeadSeq) // a Recv sleeping on the slots looks again
		}
	}()
	for {
		w := new(wireChunk)
		if err := in.stream.RecvMsg(w); err != nil {
			in.err = err
			return
		}
		select {
		case in.frames <- w:
		case <-in.done:
			w.release()
			in.err = ErrClosed
			return
		}
	}
}

// awaitEndpoint finds the local ring a hello asks for, waiting up to the
// handshake timeout for it to be opened. A hello of an older generation
// than a ring of the same job here is refused at once.
func (t *GRPCTransport) awaitEndpoint(ctx context.Context, job string, gen uint64) (*grpcEndpoint, error) {
	timeout := time.NewTimer(t.cfg.HandshakeTimeout)
	defer timeout.Stop()
	for {
		t.mu.Lock()
		ep := t.endpoints[ringKey{job, gen}]
		var newer uint64
		for k := range t.endpoints {
			if k.job == job && k.gen > gen {
				newer = max(newer, k.gen)
			}
		}
		changed, closed := t.changed, t.closed
		t.mu.Unlock()
		switch {
		case ep != nil:
			return ep, nil
		case newer > 0:
			return nil, fmt.Errorf("%w: hello of generation %d, ring here is at %d", ErrGeneration, gen, newer)
		case closed:
			return nil, fmt.Errorf("%w: transport closed", ErrNoRing)
		}
		select {
		case <-changed:
		case <-timeout.C:
			return nil, fmt.Errorf("%w: no ring (%q, %d) opened within %v", ErrNoRing, job, gen, t.cfg.HandshakeTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// grpcLink implements Link: a client stream to the right neighbour and an
// accepted stream from the left one.
type grpcLink struct {
	t          *GRPCTransport
	conn       *grpc.ClientConn
	stream     grpc.BidiStreamingClient[ringpb.Chunk, ringpb.Ack]
	cancel     context.CancelFunc
	maxPayload int

	shm     *shmSegment // our slots at the right neighbour, or nil
	sent    uint64      // shared-memory frames published (Send only)
	shmHdr  ringpb.ChunkHeader
	shmHB   []byte
	ackDone chan struct{} // closed when readAcks returns

	in  *inbound
	out *frameWriter // frame connection to the right neighbour, or nil

	recvHdr Header // scratch, used by the single receiving goroutine only

	sendMu sync.Mutex // serialises SendMsg and CloseSend on stream

	closeOnce sync.Once
	closed    chan struct{}
	ackErr    error // set before ackDone is closed
}

// MaxPayloadBytes is the largest payload Send accepts.
func (l *grpcLink) MaxPayloadBytes() int { return l.maxPayload }

// ForwardInRecv implements forwarder: when frames travel through shared
// memory both ways, with room for orderBlock+1 frames in flight, the ring
// forwards each chunk from inside Recv into the outgoing slot (see
// fusedPath).
func (l *grpcLink) ForwardInRecv() bool {
	return l.LockstepOut() && l.LockstepIn() && l.shm.slots > orderBlock
}

// LockstepOut implements lockstepLink: frames to the right go through
// shared memory (the right neighbour knows it from the same handshake).
func (l *grpcLink) LockstepOut() bool { return l.out == nil && l.shm != nil }

// LockstepIn implements lockstepLink: frames from the left come through
// shared memory.
func (l *grpcLink) LockstepIn() bool { return l.in != nil && l.in.reader == nil && l.in.shm != nil }

// SharedMemory reports whether payloads to the right neighbour go through
// shared memory.
func (l *grpcLink) SharedMemory() bool { return l.shm != nil }

// SharedMemoryIn reports whether payloads from the left neighbour come
// through shared memory.
func (l *grpcLink) SharedMemoryIn() bool { return l.in != nil && l.in.shm != nil }

// readAcks watches the stream to the right neighbour, which carries no
// message after the handshake: its end (the neighbour closed or died)
// closes ackDone and wakes a Send waiting for a shared-memory slot.
func (l *grpcLink) readAcks() {
	defer func() {
		close(l.ackDone)
		if l.shm != nil {
			l.shm.wake(shmOffTailSeq)
		}
	}()
	var a ringpb.Ack
	if err := l.stream.RecvMsg(&a); err != nil {
		l.ackErr = err
		return
	}
	l.ackErr = fmt.Errorf("%w: unexpected %v message after the handshake", ErrMalformed, a.GetKind())
	_ = l.Close()
}

var payloadPool = mem.DefaultBufferPool()

func (l *grpcLink) Send(h *Header, size int, fill func(dst []byte)) error {
	if size > l.maxPayload {
		return fmt.Errorf("%w: payload of %d bytes over the link limit %d", ErrConfig, size, l.maxPayload)
	}
	if l.out != nil {
		return l.out.send(h, size, fill)
	}
	if l.shm != nil {
		return l.shmSend(h, size, fill)
	}
	w := &wireChunk{}
	toWire(h, &w.hdr)
	buf := payloadPool.Get(size)
	fill((*buf)[:size])
	w.payload = mem.NewBuffer(buf, payloadPool)
	l.sendMu.Lock()
	err := l.stream.SendMsg(w)
	l.sendMu.Unlock()
	if err != nil {
		if w.payload != nil {
			w.payload.Free()
		}
		return fmt.Errorf("%w: send to the right: %w", ErrClosed, err)
	}
	return nil
}

// SendBytes sends a frame whose payload is p itself, without a staging
// copy, when the link can (a TCP frame connection: the bytes are in the
// kernel when it returns). ok is false when the link has no such path;
// then nothing was sent and the caller uses Send.
func (l *grpcLink) SendBytes(h *Header, p []byte) (ok bool, err error) {
	if l.out == nil {
		return false, nil
	}
	if len(p) > l.maxPayload {
		return true, fmt.Errorf("%w: payload of %d bytes over the link limit %d", ErrConfig, len(p), l.maxPayload)
	}
	return true, l.out.sendBytes(h, p)
}

func (l *grpcLink) Recv(fn func(h *Header, payload [][]byte) error) error {
	if l.in.reader != nil {
		return l.in.reader.recv(fn)
	}
	if l.in.shm != nil {
		return l.shmRecv(fn)
	}
	var w *wireChunk
	select {
	case f, ok := <-l.in.frames:
		if !ok {
			return fmt.Errorf("%w: stream from the left ended: %w", ErrClosed, l.in.err)
		}
		w = f
	case <-l.closed:
		return fmt.Errorf("%w: link closed", ErrClosed)
	}
	defer w.release()
	h := &l.recvHdr
	if err := fromWire(&w.hdr, h); err != nil {
		return err
	}
	if w.hdr.GetShmSlot() != 0 {
		return fmt.Errorf("%w: shared-memory frame on a stream without shared memory", ErrMalformed)
	}
	return fn(h, w.pieces)
}

// RecvStream implements streamReceiver when frames come over a TCP frame
// connection; ok is false otherwise (then nothing was read and the caller
// uses Recv).
func (l *grpcLink) RecvStream(fn func(h *Header, size int, read func(p []byte) error) error) (ok bool, err error) {
	if l.in.reader == nil {
		return false, nil
	}
	return true, l.in.reader.recvStream(fn)
}

// Drain half-closes the stream to the right neighbour and waits (at most
// d) until the neighbour has read every frame sent, so that a Close right
// after a successful collective loses nothing.
func (l *grpcLink) Drain(d time.Duration) {
	select {
	case <-l.closed:
		return
	default:
	}
	if l.out != nil {
		// Frames are in the kernel's buffers; closing the connection sends
		// them before the FIN.
		if tc, ok := l.out.c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
	}
	if l.shm != nil {
		l.shmDrain(d) // the frames are in the slots until the neighbour took them
	}
	l.sendMu.Lock()
	_ = l.stream.CloseSend()
	l.sendMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.ackDone:
	case <-t.C:
	}
}

func (l *grpcLink) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		if l.in != nil {
			close(l.in.done)
		}
		if l.shm != nil {
			l.shm.wake(shmOffTailSeq) // a Send waiting for a slot
		}
		if l.in != nil && l.in.shm != nil {
			l.in.shm.wake(shmOffHeadSeq) // a Recv waiting for a frame
		}
		l.cancel()
		_ = l.conn.Close()
		if l.out != nil {
			_ = l.out.c.Close()
		}
		if l.in != nil && l.in.conn != nil {
			_ = l.in.conn.Close() // unblocks a Recv
		}
		<-l.ackDone
		if l.shm != nil {
			l.shm.unmap()
		}
		if l.in != nil && l.in.shm != nil {
			l.in.shm.unmap() // waits for a Recv that is reading the slots
		}
		l.t.mu.Lock()
		delete(l.t.links, l)
		l.t.mu.Unlock()
	})
	return nil
}

// reachableAddr is the frame listener's address as the dialling peer can
// reach it: a wildcard host (0.0.0.0, ::) is replaced by the local address
// the peer's handshake stream arrived on.
func reachableAddr(lis net.Addr, ctx context.Context) string {
	t, ok := lis.(*net.TCPAddr)
	if !ok || !t.IP.IsUnspecified() {
		return lis.String()
	}
	if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
		if host, _, err := net.SplitHostPort(p.LocalAddr.String()); err == nil {
			return net.JoinHostPort(host, fmt.Sprint(t.Port))
		}
	}
	return lis.String()
}

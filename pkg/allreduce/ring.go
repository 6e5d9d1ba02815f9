package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Reduction says what a collective leaves in every worker's vector.
type Reduction int

const (
	// Sum leaves the sum over workers.
	Sum Reduction = iota
	// Mean leaves the sum divided by the world size (computed once by the
	// owner of each segment, so every worker gets the same bits).
	Mean
)

// Tag names a collective: the training step and the bucket within it. Both
// sides of every frame must agree on it.
type Tag struct {
	Step   uint64
	Bucket uint32
}

// BucketChannel is the Tag.Bucket of the collectives issued through
// AllReduceSum (SyncBatchNorm's channel statistics).
const BucketChannel uint32 = math.MaxUint32

// Ring runs collectives over one Link, one at a time, in the order they
// were started. All workers of a plan must start the same collectives
// (same tags and lengths) in the same order; Start is safe for concurrent
// use, but only a single goroutine per worker gives a deterministic order.
type Ring struct {
	cfg  Config
	link Link

	mu      sync.Mutex // guards queue, broken, closed, seq, step, dev
	cond    *sync.Cond // signalled when queue grows or closed is set
	queue   []*Op
	broken  error // first failure; every later collective fails with it
	closed  bool
	running bool        // a collective is executing
	seq     uint64      // sequence number of the last collective started
	step    uint64      // step of the last tagged collective (for AllReduceSum)
	dev     *deviceRing // the attached device ring (device.go), or nil

	runnerDone chan struct{}
	order      int       // orderUnknown until the first bandwidth-path collective (runner only)
	scratch    []float32 // stream reads of the reduce-scatter (runner only, reused)
}

// Ring.order values.
const (
	orderUnknown = iota
	orderRoundMajor
	orderLockstep
)

// Op is a collective in progress (see Ring.Start).
type Op struct {
	tag  Tag
	seq  uint64
	data []float32
	red  Reduction
	ctx  context.Context
	dev  *devOp // a device collective or attach (device.go), or nil

	done       chan struct{}
	err        error     // set before done is closed
	start, end time.Time // when the collective ran
}

// Done is closed when the collective has finished (successfully or not).
func (o *Op) Done() <-chan struct{} { return o.done }

// Wait blocks until the collective has finished and returns its error.
func (o *Op) Wait() error {
	<-o.done
	return o.err
}

// Times returns when the collective started and finished running (zero
// before Done is closed).
func (o *Op) Times() (start, end time.Time) {
	<-o.done
	return o.start, o.end
}

// NewRing returns a Ring of the given config over link. link may be nil
// only when cfg.World is 1. The Ring owns link and closes it in Close.
func NewRing(link Link, cfg Config) (*Ring, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !hostLittleEndian() {
		return nil, fmt.Errorf("%w: big-endian hosts are not supported", ErrConfig)
	}
	if link == nil && cfg.World > 1 {
		return nil, fmt.Errorf("%w: nil link for world %d", ErrConfig, cfg.World)
	}
	if lim, ok := link.(interface{ MaxPayloadBytes() int }); ok && cfg.ChunkBytes > lim.MaxPayloadBytes() {
		return nil, fmt.Errorf("%w: chunk bytes %d over the transport's limit %d", ErrConfig, cfg.ChunkBytes, lim.MaxPayloadBytes())
	}
	r := &Ring{cfg: cfg, link: link, runnerDone: make(chan struct{})}
	r.cond = sync.NewCond(&r.mu)
	go r.run()
	return r, nil
}

// Open joins the ring of cfg over transport t (peers: every rank's address,
// in rank order) and returns the Ring. It is Transport.Open + NewRing.
func Open(ctx context.Context, t Transport, cfg Config, peers []string) (*Ring, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(peers) != cfg.World {
		return nil, fmt.Errorf("%w: %d peer addresses for world %d", ErrConfig, len(peers), cfg.World)
	}
	var link Link
	if cfg.World > 1 {
		var err error
		link, err = t.Open(ctx, Plan{Job: cfg.Job, Generation: cfg.Generation, Rank: cfg.Rank, Peers: peers})
		if err != nil {
			return nil, err
		}
	}
	r, err := NewRing(link, cfg)
	if err != nil && link != nil {
		_ = link.Close()
	}
	return r, err
}

// Config returns the ring's configuration (defaults filled in).
// Link kinds reported by Ring.Links.
const (
	LinkSharedMemory = "shm"    // tensor bytes through a shared-memory segment (same host)
	LinkStream       = "stream" // tensor bytes over the transport's stream (TCP for gRPC)
)

// sharedMemoryLink is a link that can say whether each direction goes
// through shared memory (GRPCTransport's links).
type sharedMemoryLink interface {
	SharedMemory() bool   // payloads to the right neighbour
	SharedMemoryIn() bool // payloads from the left neighbour
}

// Links says how tensor bytes travel to the right neighbour and from the
// left one: LinkSharedMemory or LinkStream; both "" for a one-rank ring
// or a link that cannot tell.
func (r *Ring) Links() (right, left string) {
	l, ok := r.link.(sharedMemoryLink)
	if !ok {
		return "", ""
	}
	kind := func(shm bool) string {
		if shm {
			return LinkSharedMemory
		}
		return LinkStream
	}
	return kind(l.SharedMemory()), kind(l.SharedMemoryIn())
}

func (r *Ring) Config() Config { return r.cfg }

// Err returns the failure that broke the ring, or nil.
func (r *Ring) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken
}

// Start queues an all-reduce of data (in place) and returns at once. The
// collective runs after every collective started before it; it must end
// within the ring's Timeout (and ctx). data must not be touched until the
// Op is done.
func (r *Ring) Start(ctx context.Context, tag Tag, data []float32, red Reduction) *Op {
	return r.startOp(ctx, tag, data, red, nil)
}

// startOp queues a host (dev nil) or device collective.
func (r *Ring) startOp(ctx context.Context, tag Tag, data []float32, red Reduction, dev *devOp) *Op {
	op := &Op{tag: tag, data: data, red: red, ctx: ctx, dev: dev, done: make(chan struct{})}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	op.seq = r.seq
	if tag.Bucket != BucketChannel {
		r.step = tag.Step
	}
	switch {
	case r.closed:
		op.finish(fmt.Errorf("%w: ring closed", ErrClosed))
	case r.broken != nil:
		op.finish(fmt.Errorf("%w: %w", ErrBroken, r.broken))
	default:
		r.queue = append(r.queue, op)
		r.cond.Signal()
	}
	return op
}

// AllReduce all-reduces data in place and returns when done.
func (r *Ring) AllReduce(ctx context.Context, tag Tag, data []float32, red Reduction) error {
	return r.Start(ctx, tag, data, red).Wait()
}

// AllReduceSum sums v over the workers in place. It implements
// nn.ChannelReducer for SyncBatchNorm: small vectors take the low-latency
// path. The collective is tagged with the step of the last tagged
// collective and bucket BucketChannel.
func (r *Ring) AllReduceSum(v []float32) error {
	r.mu.Lock()
	step := r.step
	r.mu.Unlock()
	return r.AllReduce(context.Background(), Tag{Step: step, Bucket: BucketChannel}, v, Sum)
}

// Close fails queued collectives with ErrClosed and aborts a running one.
// When the ring is idle and healthy it first lets the right neighbour read
// the frames already sent (at most a second). It is idempotent.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.runnerDone
		return nil
	}
	r.closed = true
	r.cond.Broadcast()
	running := r.running
	r.mu.Unlock()
	if running && r.link != nil {
		_ = r.link.Close() // abort the collective in progress
	}
	<-r.runnerDone
	r.mu.Lock()
	healthy := r.broken == nil
	r.mu.Unlock()
	if d, ok := r.link.(drainer); ok && healthy {
		d.Drain(drainTimeout)
	}
	var err error
	if r.link != nil {
		err = r.link.Close()
	}
	return errors.Join(err, r.detachDevice())
}

// bytesSender is a Link that can send a float32 payload straight from the
// caller's memory (no staging copy); see grpcLink.SendBytes.
type bytesSender interface {
	SendBytes(h *Header, p []byte) (ok bool, err error)
}

// forwarder is a Link on which a Send made from inside Recv's fn (same
// goroutine) is both allowed and the cheaper way to run the ring: the
// payload being received and the slot being sent are then both in memory
// at once, so a chunk is added or copied and forwarded in one pass (the
// same-host shared-memory link, whose frames are read and written in
// place). It needs room for orderBlock+1 frames in flight per link, or
// the ring could wait on itself (see fusedPath), and is used only on a
// ring in the lockstep order.
type forwarder interface{ ForwardInRecv() bool }

// streamReceiver is a Link that can hand a frame's payload over as a
// stream (a TCP frame connection), so that the ring reads it straight
// into its destination; see grpcLink.RecvStream. fn gets the header, the
// payload size and read, which fills p with the next len(p) payload
// bytes; ok is false when the link has no such path (nothing was read).
type streamReceiver interface {
	RecvStream(fn func(h *Header, size int, read func(p []byte) error) error) (ok bool, err error)
}

// streamPieceBytes is how much of a reduce-scatter frame a stream read
// takes at a time: small enough to be added while it is in cache, large
// enough to bypass the connection's read buffer.
const streamPieceBytes = 256 << 10

// drainer is a Link that can flush its outgoing frames before Close.
type drainer interface{ Drain(d time.Duration) }

// drainTimeout bounds how long Close waits for the right neighbour to read
// the last frames.
const drainTimeout = time.Second

func (o *Op) finish(err error) {
	o.err = err
	close(o.done)
}

// run executes queued collectives in order until Close.
func (r *Ring) run() {
	defer close(r.runnerDone)
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.closed {
			r.cond.Wait()
		}
		if len(r.queue) == 0 {
			r.mu.Unlock()
			return
		}
		op := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		broken, closed := r.broken, r.closed
		r.running = broken == nil && !closed
		r.mu.Unlock()

		switch {
		case closed:
			op.finish(fmt.Errorf("%w: ring closed", ErrClosed))
			continue
		case broken != nil:
			op.finish(fmt.Errorf("%w: %w", ErrBroken, broken))
			continue
		}
		op.start = time.Now()
		err := r.execute(op)
		op.end = time.Now()
		// Every rank agrees on ErrNoDeviceRing: the ring stays healthy.
		breaks := err != nil && !errors.Is(err, ErrNoDeviceRing)
		r.mu.Lock()
		r.running = false
		if breaks && r.broken == nil {
			r.broken = err
		}
		r.mu.Unlock()
		if breaks {
			if r.link != nil {
				_ = r.link.Close()
			}
		}
		op.finish(err)
	}
}

// execute runs one collective.
func (r *Ring) execute(op *Op) error {
	n := r.cfg.World
	if op.dev == nil && (n == 1 || len(op.data) == 0) {
		return nil // a sum over one worker; mean divides by 1
	}
	if op.ctx == nil {
		op.ctx = context.Background()
	}
	if err := op.ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(op.ctx, r.cfg.Timeout)
	defer cancel()
	if op.dev != nil {
		return r.executeDevice(ctx, op)
	}
	if 4*len(op.data) <= min(r.cfg.SmallBytes, r.cfg.ChunkBytes) {
		return r.exec(ctx, op, r.smallPath(op))
	}
	lockstep, err := r.lockstep(ctx, op)
	if err != nil {
		return err
	}
	if f, ok := r.link.(forwarder); ok && lockstep && f.ForwardInRecv() && r.cfg.Compression == CompressNone {
		return r.exec(ctx, op, r.fusedPath(op))
	}
	return r.exec(ctx, op, r.ringPath(op, lockstep))
}

// bucketCensus is the Tag.Bucket of the frames of the census (see
// Ring.lockstep); collectives must not use it.
const bucketCensus uint32 = math.MaxUint32 - 1

// lockstep decides, once per ring and the same on every rank, whether the
// bandwidth path uses the lockstep frame order (see order.go): only when
// every link of the ring goes through shared memory. With two ranks both
// links are this rank's own; with more, the first bandwidth-path
// collective starts with a census: a small-path sum, tagged bucketCensus,
// of one flag per rank that says whether both of its links do. Only the
// runner goroutine calls it.
func (r *Ring) lockstep(ctx context.Context, op *Op) (bool, error) {
	if r.order != orderUnknown {
		return r.order == orderLockstep, nil
	}
	local := false
	if ls, ok := r.link.(lockstepLink); ok {
		local = ls.LockstepOut() && ls.LockstepIn()
	}
	all := local
	if r.cfg.World > 2 {
		flag := []float32{0}
		if local {
			flag[0] = 1
		}
		c := &Op{tag: Tag{Step: op.tag.Step, Bucket: bucketCensus}, seq: op.seq, data: flag, red: Sum, ctx: op.ctx, start: op.start}
		if err := r.exec(ctx, c, r.smallPath(c)); err != nil {
			return false, err
		}
		all = flag[0] == float32(r.cfg.World)
	}
	r.order = orderRoundMajor
	if all {
		r.order = orderLockstep
	}
	return all, nil
}

// schedule is one collective split into its sending and receiving halves.
// send runs in its own goroutine, recv in the calling one; both must
// return when abort is closed. A schedule without send does everything in
// recv and names the neighbour in its errors itself.
type schedule struct {
	send func(abort <-chan struct{}) error
	recv func(abort <-chan struct{}) error
}

// errAborted is what a half returns when the other half failed first; it is
// never the error reported.
var errAborted = errors.New("allreduce: aborted")

// exec runs a schedule under ctx. The first failure (a half's error, or
// the deadline) closes the link, which unblocks the other half, and is the
// error returned.
func (r *Ring) exec(ctx context.Context, op *Op, s schedule) error {
	var (
		once  sync.Once
		first error
	)
	abort := make(chan struct{})
	fail := func(err error) {
		once.Do(func() {
			first = err
			close(abort)
			_ = r.link.Close()
		})
	}
	sendDone := make(chan struct{})
	if s.send == nil {
		close(sendDone)
	} else {
		go func() {
			defer close(sendDone)
			if err := s.send(abort); err != nil {
				fail(fmt.Errorf("send to rank %d: %w", (r.cfg.Rank+1)%r.cfg.World, err))
			}
		}()
	}
	finished := make(chan struct{})
	watchDone := make(chan struct{})
	go func() { // the deadline: closing the link unblocks both halves
		defer close(watchDone)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				fail(fmt.Errorf("%w: collective seq %d (step %d, bucket %d) not done after %v",
					ErrTimeout, op.seq, op.tag.Step, op.tag.Bucket, time.Since(op.start).Round(time.Millisecond)))
			} else {
				fail(ctx.Err())
			}
		case <-finished:
		}
	}()
	if err := s.recv(abort); err != nil {
		if s.send != nil {
			err = fmt.Errorf("receive from rank %d: %w", (r.cfg.Rank-1+r.cfg.World)%r.cfg.World, err)
		}
		fail(err)
	}
	<-sendDone // still under the deadline
	close(finished)
	<-watchDone
	return first
}

// header returns the tag fields of op's frames.
func (r *Ring) header(op *Op, dt DType) Header {
	return Header{
		Job: r.cfg.Job, Generation: r.cfg.Generation,
		Step: op.tag.Step, Bucket: op.tag.Bucket, Seq: op.seq,
		Total: uint64(len(op.data)), DType: dt,
	}
}

// check compares a received header with the expected one.
func check(got, want *Header) error {
	switch {
	case got.Job != want.Job:
		return fmt.Errorf("%w: frame of job %q, expected %q", ErrJob, got.Job, want.Job)
	case got.Generation != want.Generation:
		return fmt.Errorf("%w: frame of generation %d, expected %d", ErrGeneration, got.Generation, want.Generation)
	case got.Step != want.Step || got.Bucket != want.Bucket || got.Seq != want.Seq:
		return fmt.Errorf("%w: frame (step %d, bucket %d, seq %d), expected (step %d, bucket %d, seq %d)",
			ErrTag, got.Step, got.Bucket, got.Seq, want.Step, want.Bucket, want.Seq)
	case got.Total != want.Total:
		return fmt.Errorf("%w: peer vector has %d elements, here %d", ErrLength, got.Total, want.Total)
	case got.Round != want.Round || got.Segment != want.Segment || got.Chunk != want.Chunk ||
		got.Offset != want.Offset || got.Count != want.Count || got.DType != want.DType:
		return fmt.Errorf("%w: frame (round %d, segment %d, chunk %d, offset %d, count %d, dtype %d), expected (%d, %d, %d, %d, %d, %d)",
			ErrMalformed, got.Round, got.Segment, got.Chunk, got.Offset, got.Count, got.DType,
			want.Round, want.Segment, want.Chunk, want.Offset, want.Count, want.DType)
	}
	return nil
}

func mod(a, n int) int { return ((a % n) + n) % n }

// segBounds returns segment s of a vector of length l split into n
// near-equal parts (sizes differ by at most one).
func segBounds(l, n, s int) (lo, hi int) {
	return int(int64(l) * int64(s) / int64(n)), int(int64(l) * int64(s+1) / int64(n))
}

// ringPath is the bandwidth-optimal ring: 2(N-1) rounds. In round R rank k
// sends segment k-R and receives segment k-R-1 (mod N); in rounds
// 0..N-2 (reduce-scatter) the receiver adds the incoming partial sum into
// its own values, in rounds N-1..2N-3 (all-gather) it stores the final
// values. Segment s is therefore summed as ((x_s + x_{s+1}) + x_{s+2}) ...
// in ring order starting at rank s, on every worker and in every run.
// A sending goroutine and a receiving one overlap, both in the ring's
// chunkOrder (lockstep or round-major): an element leaves in round R+1 as
// soon as it has arrived and been added in round R.
func (r *Ring) ringPath(op *Op, lockstep bool) schedule {
	n, rank := r.cfg.World, r.cfg.Rank
	data := op.data
	l := len(data)
	dt := DTypeF32
	if r.cfg.Compression == CompressBF16 {
		dt = DTypeBF16
	}
	rounds := 2 * (n - 1)
	ce := r.cfg.ChunkBytes / dt.Size()
	if lockstep {
		ce = min(r.cfg.ChunkBytes, lockstepChunkBytes) / dt.Size()
	}
	order := newChunkOrder(l, n, ce, lockstep)
	base := r.header(op, dt)
	// recvd[R] and sent[R] count the elements of round R's segment (a
	// prefix: chunks of a round go in increasing offset) that have been
	// received and added, or read by the sender. Round R+1 sends what round
	// R received; round R (all-gather, R >= N-1) overwrites what round
	// R+1-N sent, which causality round the ring orders already; waiting on
	// sent makes that explicit (and visible to the race detector, which
	// cannot see through sockets).
	recvd := make([]atomic.Int64, rounds)
	sent := make([]atomic.Int64, rounds)
	progress := make(chan struct{}, 1) // poked after every receive

	direct, _ := r.link.(bytesSender)
	send := func(abort <-chan struct{}) error {
		return order.each(rounds, func(R int) int { return mod(rank-R, n) }, func(R, seg, c, off, cnt int) error {
			lo, _ := segBounds(l, n, seg)
			if R > 0 {
				for recvd[R-1].Load() < int64(off+cnt-lo) {
					select {
					case <-progress:
					case <-abort:
						return errAborted
					}
				}
			}
			h := base
			h.Round, h.Segment, h.Chunk = uint32(R), uint32(seg), uint32(c)
			h.Offset, h.Count = uint64(off), uint32(cnt)
			src := data[off : off+cnt]
			if direct != nil && dt == DTypeF32 {
				ok, err := direct.SendBytes(&h, f32Bytes(src))
				if err != nil {
					return err
				}
				if ok {
					sent[R].Store(int64(off + cnt - lo)) // src has been read
					return nil
				}
			}
			return r.link.Send(&h, cnt*dt.Size(), func(dst []byte) {
				encode(dst, src, dt)
				sent[R].Store(int64(off + cnt - lo))
			})
		})
	}

	// owned finishes the segment this rank now holds the full sum of.
	owned := func(dst []float32) {
		if op.red == Mean {
			inv := float32(n)
			for i := range dst {
				dst[i] /= inv
			}
		}
		if dt == DTypeBF16 {
			roundBF16(dst) // what the others will receive
		}
	}
	stream, _ := r.link.(streamReceiver)
	recv := func(abort <-chan struct{}) error {
		want := base
		return order.each(rounds, func(R int) int { return mod(rank-R-1, n) }, func(R, seg, c, off, cnt int) error {
			lo, _ := segBounds(l, n, seg)
			want.Round, want.Segment, want.Chunk = uint32(R), uint32(seg), uint32(c)
			want.Offset, want.Count = uint64(off), uint32(cnt)
			dst := data[off : off+cnt]
			gathered := func() error { // dst may be overwritten once sent
				if R < n-1 {
					return nil
				}
				return waitSent(&sent[R+1-n], int64(off+cnt-lo), abort)
			}
			ok := false
			var err error
			if stream != nil && dt == DTypeF32 {
				// Straight from the socket: the all-gather into dst, the
				// reduce-scatter through a small buffer that is still in
				// cache when it is added.
				ok, err = stream.RecvStream(func(h *Header, size int, read func(p []byte) error) error {
					if err := check(h, &want); err != nil {
						return err
					}
					if size != 4*cnt {
						return fmt.Errorf("%w: payload of %d bytes for %d elements of dtype %d", ErrMalformed, size, cnt, dt)
					}
					if R >= n-1 {
						if err := gathered(); err != nil {
							return err
						}
						return read(f32Bytes(dst))
					}
					if r.scratch == nil {
						r.scratch = make([]float32, streamPieceBytes/4)
					}
					for e := 0; e < cnt; e += len(r.scratch) {
						in := r.scratch[:min(len(r.scratch), cnt-e)]
						if err := read(f32Bytes(in)); err != nil {
							return err
						}
						addF32(dst[e:e+len(in)], in)
					}
					if R == n-2 {
						owned(dst)
					}
					return nil
				})
			}
			if !ok && err == nil {
				err = r.link.Recv(func(h *Header, p [][]byte) error {
					if err := check(h, &want); err != nil {
						return err
					}
					if got := piecesLen(p); got != cnt*dt.Size() {
						return fmt.Errorf("%w: payload of %d bytes for %d elements of dtype %d", ErrMalformed, got, cnt, dt)
					}
					if R >= n-1 {
						if err := gathered(); err != nil {
							return err
						}
						copyPieces(dst, p, dt)
						return nil
					}
					addPieces(dst, p, dt)
					if R == n-2 { // this rank now owns the full sum of seg
						owned(dst)
					}
					return nil
				})
			}
			if err != nil {
				return err
			}
			recvd[R].Store(int64(off + cnt - lo))
			select {
			case progress <- struct{}{}:
			default:
			}
			return nil
		})
	}
	return schedule{send: send, recv: recv}
}

// waitSent waits until the sender has read the first want elements of a
// round's segment (*sent >= want): the all-gather may overwrite them only
// then. A peer can only be ahead of the ring's causality by a hair, so
// this spins.
func waitSent(sent *atomic.Int64, want int64, abort <-chan struct{}) error {
	for sent.Load() < want {
		select {
		case <-abort:
			return errAborted
		default:
			runtime.Gosched()
		}
	}
	return nil
}

// smallPath is the latency path: N-1 rounds of a ring all-gather of the raw
// vectors (round R forwards the vector of rank k-R), then every worker sums
// the N vectors locally in rank order 0..N-1, in float64, and rounds once.
func (r *Ring) smallPath(op *Op) schedule {
	n, rank := r.cfg.World, r.cfg.Rank
	data := op.data
	l := len(data)
	all := make([]float32, n*l) // vector of rank k at all[k*l:]
	copy(all[rank*l:], data)
	ready := make(chan struct{}, n)
	base := r.header(op, DTypeF32)
	base.Count = uint32(l)

	send := func(abort <-chan struct{}) error {
		for R := 0; R < n-1; R++ {
			if R > 0 {
				select {
				case <-ready:
				case <-abort:
					return errAborted
				}
			}
			origin := mod(rank-R, n)
			h := base
			h.Round, h.Segment = uint32(R), uint32(origin)
			src := all[origin*l : (origin+1)*l]
			if err := r.link.Send(&h, 4*l, func(dst []byte) { encode(dst, src, DTypeF32) }); err != nil {
				return err
			}
		}
		return nil
	}
	recv := func(<-chan struct{}) error {
		want := base
		for R := 0; R < n-1; R++ {
			origin := mod(rank-R-1, n)
			want.Round, want.Segment = uint32(R), uint32(origin)
			dst := all[origin*l : (origin+1)*l]
			err := r.link.Recv(func(h *Header, p [][]byte) error {
				if err := check(h, &want); err != nil {
					return err
				}
				if got := piecesLen(p); got != 4*l {
					return fmt.Errorf("%w: payload of %d bytes for %d float32", ErrMalformed, got, l)
				}
				copyPieces(dst, p, DTypeF32)
				return nil
			})
			if err != nil {
				return err
			}
			ready <- struct{}{}
		}
		SumRanks64(data, all, n, op.red == Mean)
		return nil
	}
	return schedule{send: send, recv: recv}
}

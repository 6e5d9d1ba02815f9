package data

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// LoaderConfig configures a [Loader] for one rank.
type LoaderConfig struct {
	// Dataset is read by index; required.
	Dataset Dataset
	// Sampler fixes the order; required. Its length must equal the dataset's.
	Sampler *Sampler
	// Transform is applied to every image; nil passes the [0, 1] pixels
	// through unchanged.
	Transform Transform
	// Seed keys the transform's randomness with (epoch, index).
	Seed uint64
	// GlobalBatch is the number of samples per step over all ranks.
	GlobalBatch int
	// Rank and World place this loader in the job (0 <= Rank < World).
	Rank, World int
	// Start is where loading begins (a resumed job's committed position).
	Start Position
	// StopEpoch, if positive, ends loading when the position reaches that
	// epoch: Next then returns io.EOF.
	StopEpoch int
	// Workers is the number of goroutines decoding and transforming
	// samples; 0 means GOMAXPROCS.
	Workers int
	// Prefetch is the number of batch buffers in the ring, the ones held
	// by the caller included; 0 means Hold+2. Memory is bounded by
	// Prefetch * ceil(GlobalBatch/World) images. At least Hold.
	Prefetch int
	// Hold is how many of the latest batches the caller may use at once
	// (0 means 1): Next recycles the batch it returned Hold calls
	// earlier. A trainer that takes step s+1's batch while step s still
	// uses its own holds 2.
	Hold int
	// Alloc, if set, provides the ring's image buffers (n float32s each),
	// e.g. page-locked memory a device copies from without staging;
	// Release, if set, gets each of them back once Close has stopped the
	// loader's goroutines. Nil Alloc means ordinary memory.
	Alloc   func(n int) []float32
	Release func(buf []float32)
}

// Batch is one rank's data for one step. X and Labels live in the loader's
// ring and stay valid until Next has been called Hold more times (once,
// by default), or Close.
type Batch struct {
	X      []float32 // N*C*H*W values, contiguous NCHW
	Labels []int32   // N labels
	N      int       // samples in this rank's part (may be 0 in a short last step)
	Shape  Shape     // size of one image
	Shard            // the step: position, next position, global size, slice, dataset indices
}

// Loader produces one rank's batches step after step, prefetching them on
// background goroutines into a fixed ring of buffers. Order and content are
// a pure function of the configuration: the same (dataset, sampler, seed,
// position, rank, world) gives the same batches, however many workers run.
//
// A loader serves one (rank, world size). When the world changes, Close it
// and start a new one whose Start is the Next position of the last
// committed step: the sampler guarantees that no sample is lost or repeated.
//
// Next and Close may be called from different goroutines, but Next must
// not be called concurrently with itself.
type Loader struct {
	cfg    LoaderConfig
	shape  Shape
	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup

	free  chan *slot // buffers ready for the producer
	ready chan *slot // buffers in step order; closed after the last step
	jobs  chan job

	held     []*slot    // returned by the last Hold calls of Next, oldest first; owned by Next
	waiting  *slot      // taken from ready but not yet done; owned by Next
	slots    []*slot    // every buffer of the ring, for Release
	mu       sync.Mutex // guards closed, released and finalErr
	closed   bool
	released bool
	finalErr error // sticky error once Next failed
}

type slot struct {
	x         []float32
	allocated bool // x came from LoaderConfig.Alloc
	labels    []int32
	shard     Shard
	err       error // set before done closes; read after
	errOnce   sync.Once
	pending   atomic.Int32
	done      chan struct{}
}

func (s *slot) fail(err error) { s.errOnce.Do(func() { s.err = err }) }

type job struct {
	s      *slot
	lo, hi int // samples of s to fill
}

const chunkSize = 8 // samples per job: large enough to amortise channel costs

// NewLoader validates cfg and starts the loader's goroutines. They run until
// Close is called, ctx is cancelled, or the last step (StopEpoch) is ready.
func NewLoader(ctx context.Context, cfg LoaderConfig) (*Loader, error) {
	switch {
	case cfg.Dataset == nil || cfg.Sampler == nil:
		return nil, fmt.Errorf("%w: loader needs a dataset and a sampler", ErrInvalid)
	case cfg.Sampler.Len() != cfg.Dataset.Len():
		return nil, fmt.Errorf("%w: sampler over %d samples, dataset has %d", ErrInvalid, cfg.Sampler.Len(), cfg.Dataset.Len())
	case cfg.GlobalBatch <= 0:
		return nil, fmt.Errorf("%w: global batch %d", ErrInvalid, cfg.GlobalBatch)
	case cfg.World <= 0 || cfg.Rank < 0 || cfg.Rank >= cfg.World:
		return nil, fmt.Errorf("%w: rank %d of world %d", ErrInvalid, cfg.Rank, cfg.World)
	case cfg.Start.Epoch < 0 || cfg.Start.Cursor < 0 || cfg.Start.Cursor > cfg.Dataset.Len():
		return nil, fmt.Errorf("%w: start %v", ErrInvalid, cfg.Start)
	case cfg.Workers < 0 || cfg.Prefetch < 0 || cfg.StopEpoch < 0 || cfg.Hold < 0:
		return nil, fmt.Errorf("%w: negative workers, prefetch, hold or stop epoch", ErrInvalid)
	case cfg.Prefetch > 0 && cfg.Prefetch < cfg.Hold:
		return nil, fmt.Errorf("%w: prefetch %d buffers with %d held by the caller (want at least as many)", ErrInvalid, cfg.Prefetch, cfg.Hold)
	}
	shape := cfg.Dataset.Shape()
	if shape.Len() <= 0 {
		return nil, fmt.Errorf("%w: dataset image shape %v", ErrInvalid, shape)
	}
	if v, ok := cfg.Transform.(interface{ Validate(Shape) error }); ok {
		if err := v.Validate(shape); err != nil {
			return nil, err
		}
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Hold == 0 {
		cfg.Hold = 1
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = cfg.Hold + 2
	}
	cfg.Start = cfg.Sampler.Normalize(cfg.Start, cfg.GlobalBatch)

	maxLocal := (cfg.GlobalBatch + cfg.World - 1) / cfg.World
	lctx, cancel := context.WithCancel(ctx)
	l := &Loader{
		cfg:    cfg,
		shape:  shape,
		ctx:    lctx,
		cancel: cancel,
		free:   make(chan *slot, cfg.Prefetch),
		ready:  make(chan *slot, cfg.Prefetch),
		jobs:   make(chan job, cfg.Workers*2),
	}
	for range cfg.Prefetch {
		n := maxLocal * shape.Len()
		var x []float32
		if cfg.Alloc != nil {
			x = cfg.Alloc(n)
		}
		allocated := len(x) >= n
		if !allocated {
			x = make([]float32, n)
		}
		s := &slot{x: x[:n], labels: make([]int32, maxLocal), allocated: allocated}
		l.slots = append(l.slots, s)
		l.free <- s
	}
	l.wg.Add(1 + cfg.Workers)
	go l.produce()
	for range cfg.Workers {
		go l.work()
	}
	return l, nil
}

// produce walks the steps in order, hands each to the workers in chunks
// and queues its buffer on ready, until the stop epoch or cancellation.
func (l *Loader) produce() {
	defer l.wg.Done()
	defer close(l.ready)
	pos := l.cfg.Start
	for l.cfg.StopEpoch == 0 || pos.Epoch < l.cfg.StopEpoch {
		var s *slot
		select {
		case s = <-l.free:
		case <-l.ctx.Done():
			return
		}
		sh, err := l.cfg.Sampler.Step(pos, l.cfg.GlobalBatch, l.cfg.Rank, l.cfg.World)
		s.shard, s.err, s.errOnce = sh, nil, sync.Once{}
		s.done = make(chan struct{})
		n := len(sh.Indices)
		chunks := (n + chunkSize - 1) / chunkSize
		if err != nil {
			s.fail(err)
			chunks = 0
		}
		s.pending.Store(int32(chunks))
		if chunks == 0 {
			close(s.done)
		}
		l.ready <- s // never blocks: ready has room for every slot
		if err != nil {
			return
		}
		for lo := 0; lo < n; lo += chunkSize {
			select {
			case l.jobs <- job{s: s, lo: lo, hi: min(lo+chunkSize, n)}:
			case <-l.ctx.Done():
				return
			}
		}
		pos = sh.Next
	}
}

// work fills samples until cancellation.
func (l *Loader) work() {
	defer l.wg.Done()
	scratch := make([]float32, l.shape.Len())
	classes := len(l.cfg.Dataset.Classes())
	for {
		select {
		case j := <-l.jobs:
			l.fill(j, scratch, classes)
			if j.s.pending.Add(-1) == 0 {
				close(j.s.done)
			}
		case <-l.ctx.Done():
			return
		}
	}
}

// fill loads and transforms samples [j.lo, j.hi) of a slot.
func (l *Loader) fill(j job, scratch []float32, classes int) {
	s, sz := j.s, l.shape.Len()
	for k := j.lo; k < j.hi; k++ {
		idx := s.shard.Indices[k]
		dst := s.x[k*sz : (k+1)*sz]
		src := dst
		if l.cfg.Transform != nil {
			src = scratch
		}
		label, err := l.cfg.Dataset.Get(idx, src)
		if err != nil {
			s.fail(fmt.Errorf("data: sample %d: %w", idx, err))
			return
		}
		if label < 0 || label >= classes {
			s.fail(fmt.Errorf("%w: sample %d has label %d, dataset has %d classes", ErrCorrupt, idx, label, classes))
			return
		}
		if l.cfg.Transform != nil {
			l.cfg.Transform.Apply(dst, src, l.shape, l.cfg.Seed, s.shard.Pos.Epoch, idx)
		}
		s.labels[k] = int32(label)
	}
}

// Next returns the next step's batch for this rank, waiting for it if it
// is not ready. The buffers of the batch returned Hold calls earlier (the
// previous one, by default) are recycled, so it must no longer be used. After the last step it returns io.EOF; after Close,
// ErrClosed; when ctx is cancelled, ctx's error (and a later call resumes
// waiting for the same batch); when the loader's own context is cancelled,
// that context's error. Once it has returned any other error it returns
// that error again.
func (l *Loader) Next(ctx context.Context) (*Batch, error) {
	l.mu.Lock()
	closed, final := l.closed, l.finalErr
	l.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if final != nil {
		return nil, final
	}
	if err := l.ctx.Err(); err != nil { // cancelled: prefetched batches are dropped
		return nil, l.stopErr(err)
	}
	if len(l.held) == l.cfg.Hold {
		l.free <- l.held[0] // never blocks: free has room for every slot
		l.held = append(l.held[:0], l.held[1:]...)
	}
	s := l.waiting
	if s == nil {
		select {
		case s2, ok := <-l.ready:
			if !ok {
				return nil, l.stopErr(io.EOF)
			}
			s = s2
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.ctx.Done():
			return nil, l.stopErr(l.ctx.Err())
		}
	}
	// Until s is done the workers write to it: it must not be recycled,
	// so a caller that stops waiting gets the same slot next time.
	l.waiting = s
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, l.stopErr(l.ctx.Err())
	}
	l.waiting = nil
	l.held = append(l.held, s)
	if s.err != nil {
		return nil, l.stopErr(s.err)
	}
	n, sz := len(s.shard.Indices), l.shape.Len()
	return &Batch{
		X:      s.x[:n*sz],
		Labels: s.labels[:n],
		N:      n,
		Shape:  l.shape,
		Shard:  s.shard,
	}, nil
}

// stopErr records err (the end of the data, the loader's cancellation or
// a failed sample) as the error every later Next returns, unless the
// loader was closed, which reports ErrClosed.
func (l *Loader) stopErr(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.finalErr == nil {
		l.finalErr = err
	}
	return l.finalErr
}

// Ready returns how many batches are prepared ahead of Next (the queue
// depth a monitor shows: 0 means training waits for data).
func (l *Loader) Ready() int { return len(l.ready) }

// Close stops the loader's goroutines and waits for them; it is safe to
// call more than once and from any goroutine. Batches returned earlier must
// not be used after Close.
func (l *Loader) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	release := l.cfg.Release != nil && !l.released
	l.released = true
	l.mu.Unlock()
	if release {
		for _, s := range l.slots {
			if s.allocated {
				l.cfg.Release(s.x[:cap(s.x)])
			}
		}
	}
	return nil
}

package allreduce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Span is one parameter's gradient in the model's flat gradient vector:
// elements [Offset, Offset+Len). Len 0 marks a parameter that is not
// reduced (frozen); it counts as ready from the start.
type Span struct{ Offset, Len int }

// ReducerConfig configures a Reducer.
type ReducerConfig struct {
	// BucketBytes caps a bucket's gradient bytes (default 25 MiB, PyTorch
	// DDP's bucket_cap_mb; ResNet-18's 44.7 MB then make 3 buckets). A
	// single parameter larger than the cap gets a bucket of its own.
	BucketBytes int
	// FirstBucketBytes caps the first bucket (the last layers), so that
	// communication starts early in backward (default 1 MiB, as DDP).
	FirstBucketBytes int
	// Reduction of the gradients: Sum when the worker already scaled its
	// gradients so that the sum is the global mean (the default), or Mean.
	Reduction Reduction
	// Extra vectors (BN running mean/var) are averaged over the workers
	// with the last bucket, whatever Reduction is.
	Extra [][]float32
}

// ErrState: a Reducer method was called out of order (MarkReady outside a
// step, a parameter marked twice, an unknown parameter index).
var ErrState = errors.New("allreduce: reducer used out of order")

// Reducer all-reduces a model's flat gradient bucket by bucket while
// backward runs. Usage, once per step:
//
//	r.Begin(ctx, step)
//	// backward: as each parameter's gradient is final, r.MarkReady(i)
//	stats, err := r.Wait(ctx) // then the optimizer step
//
// Buckets hold parameters in reverse index order (backward's order); a
// bucket's all-reduce starts as soon as all its parameters are ready and
// all earlier buckets have started, so every worker issues the same
// collectives in the same order. Begin, MarkReady and Wait must be called
// from one goroutine (the training loop, or backward's hook on it).
type Reducer struct {
	ring    *Ring
	grad    []float32
	params  []Span
	cfg     ReducerConfig
	buckets []*bucket
	owner   []int // param index -> bucket (-1: not reduced)

	// per step
	mu     sync.Mutex // guards the fields below
	active bool
	ctx    context.Context
	cancel context.CancelFunc
	step   uint64
	ready  []bool
	next   int // next bucket to start
}

type bucket struct {
	params  []int // indices, in backward order
	lo, hi  int   // element range in grad when contiguous
	gather  bool  // not contiguous (or carries Extra): copied through buf
	size    int   // elements of buf (parameters, then Extra) when gather
	buf     []float32
	extraAt int // offset of Extra in buf (gather buckets with extras)
	pending int
	op      *Op
}

// BucketInfo describes one bucket (for logs and tests).
type BucketInfo struct {
	Params   []int // parameter indices, in backward order
	Elements int   // float32 elements all-reduced (with Extra)
	InPlace  bool  // reduced in place in the gradient vector (no copy)
}

// StepStats reports one step's communication.
type StepStats struct {
	Buckets int
	Bytes   int64         // float32 bytes all-reduced
	Comm    time.Duration // total time the collectives ran
	// Hidden is the part of Comm that ran before Wait was called, i.e.
	// behind the rest of backward; Exposed is how long Wait blocked.
	Hidden, Exposed time.Duration
}

// HiddenFraction is Hidden/Comm (0 when there was no communication).
func (s StepStats) HiddenFraction() float64 {
	if s.Comm <= 0 {
		return 0
	}
	return float64(s.Hidden) / float64(s.Comm)
}

// Default bucket sizes.
const (
	DefaultBucketBytes      = 25 << 20
	DefaultFirstBucketBytes = 1 << 20
)

// NewReducer plans the buckets of grad, whose parameters are params (in
// forward order, as the model lists them).
func NewReducer(ring *Ring, grad []float32, params []Span, cfg ReducerConfig) (*Reducer, error) {
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = DefaultBucketBytes
	}
	if cfg.FirstBucketBytes == 0 {
		cfg.FirstBucketBytes = DefaultFirstBucketBytes
	}
	if cfg.BucketBytes < 4 || cfg.FirstBucketBytes < 4 {
		return nil, fmt.Errorf("%w: bucket bytes %d, first bucket bytes %d", ErrConfig, cfg.BucketBytes, cfg.FirstBucketBytes)
	}
	if ring == nil {
		return nil, fmt.Errorf("%w: nil ring", ErrConfig)
	}
	for i, s := range params {
		if s.Offset < 0 || s.Len < 0 || s.Offset+s.Len > len(grad) {
			return nil, fmt.Errorf("%w: param %d span [%d, +%d) outside gradient of %d", ErrLength, i, s.Offset, s.Len, len(grad))
		}
	}
	extras := 0
	for _, e := range cfg.Extra {
		extras += len(e)
	}
	buckets, owner, err := planBuckets(params, len(grad), cfg.BucketBytes, cfg.FirstBucketBytes, extras)
	if err != nil {
		return nil, err
	}
	r := &Reducer{ring: ring, grad: grad, params: params, cfg: cfg, owner: owner, buckets: buckets}
	for _, b := range r.buckets {
		if b.gather {
			b.buf = make([]float32, b.size)
		}
	}
	return r, nil
}

// planBuckets groups params (in forward order) into buckets in reverse
// order: the first capped at firstBytes, the others at bucketBytes; the
// last bucket carries extras elements more. owner maps a parameter to its
// bucket (-1: not reduced). Reducer and DeviceReducer plan alike, so both
// run the same collectives on the same elements.
func planBuckets(params []Span, gradLen, bucketBytes, firstBytes, extras int) (buckets []*bucket, owner []int, err error) {
	owner = make([]int, len(params))
	var cur *bucket
	limit, size := firstBytes, 0
	for i := len(params) - 1; i >= 0; i-- {
		owner[i] = -1
		if params[i].Len == 0 {
			continue
		}
		b := 4 * params[i].Len
		if cur != nil && size+b > limit {
			cur, limit = nil, bucketBytes
		}
		if cur == nil {
			cur, size = &bucket{}, 0
			buckets = append(buckets, cur)
		}
		cur.params = append(cur.params, i)
		size += b
		owner[i] = len(buckets) - 1
	}
	if extras > 0 && len(buckets) == 0 {
		buckets = append(buckets, &bucket{})
	}
	for bi, b := range buckets {
		b.lo, b.hi = gradLen, 0
		n := 0
		for _, p := range b.params {
			s := params[p]
			b.lo, b.hi = min(b.lo, s.Offset), max(b.hi, s.Offset+s.Len)
			n += s.Len
		}
		if overlaps(params, b.params) {
			return nil, nil, fmt.Errorf("%w: parameter spans of bucket %d overlap", ErrLength, bi)
		}
		contiguous := n == b.hi-b.lo
		x := 0
		if bi == len(buckets)-1 {
			x = extras
		}
		if !contiguous || x > 0 {
			b.gather = true
			b.extraAt = n
			b.size = n + x
		}
	}
	return buckets, owner, nil
}

// overlaps reports whether any two of the given params' spans overlap.
func overlaps(params []Span, idx []int) bool {
	for a := 0; a < len(idx); a++ {
		for b := a + 1; b < len(idx); b++ {
			x, y := params[idx[a]], params[idx[b]]
			if x.Offset < y.Offset+y.Len && y.Offset < x.Offset+x.Len {
				return true
			}
		}
	}
	return false
}

// Buckets describes the planned buckets, in launch order.
func (r *Reducer) Buckets() []BucketInfo {
	out := make([]BucketInfo, len(r.buckets))
	for i, b := range r.buckets {
		n := b.hi - b.lo
		if b.gather {
			n = len(b.buf)
		}
		out[i] = BucketInfo{Params: append([]int(nil), b.params...), Elements: n, InPlace: !b.gather}
	}
	return out
}

// Begin starts a step: every reduced parameter becomes pending. ctx bounds
// the step's collectives (each also has the ring's Timeout).
func (r *Reducer) Begin(ctx context.Context, step uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active {
		return fmt.Errorf("%w: Begin(%d) before Wait of step %d", ErrState, step, r.step)
	}
	r.active, r.step, r.next = true, step, 0
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.ready = make([]bool, len(r.params))
	for _, b := range r.buckets {
		b.pending, b.op = len(b.params), nil
	}
	r.launchReady()
	return nil
}

// MarkReady records that parameter i's gradient is final for this step
// (call it from backward, e.g. nn's grad-ready hook). Buckets that become
// complete start their all-reduce at once.
func (r *Reducer) MarkReady(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.active:
		return fmt.Errorf("%w: MarkReady(%d) outside a step", ErrState, i)
	case i < 0 || i >= len(r.params):
		return fmt.Errorf("%w: MarkReady(%d) of %d parameters", ErrState, i, len(r.params))
	case r.ready[i]:
		return fmt.Errorf("%w: parameter %d marked ready twice in step %d", ErrState, i, r.step)
	}
	r.ready[i] = true
	if b := r.owner[i]; b >= 0 {
		r.buckets[b].pending--
		r.launchReady()
	}
	return nil
}

// launchReady starts, in order, every bucket whose parameters are all
// ready. Called with mu held.
func (r *Reducer) launchReady() {
	for r.next < len(r.buckets) && r.buckets[r.next].pending == 0 {
		b := r.buckets[r.next]
		data := r.grad[b.lo:b.hi]
		if b.gather {
			at := 0
			for _, p := range b.params {
				s := r.params[p]
				at += copy(b.buf[at:], r.grad[s.Offset:s.Offset+s.Len])
			}
			if r.next == len(r.buckets)-1 {
				for _, e := range r.cfg.Extra {
					at += copy(b.buf[at:], e)
				}
			}
			data = b.buf
		}
		b.op = r.ring.Start(r.ctx, Tag{Step: r.step, Bucket: uint32(r.next)}, data, r.cfg.Reduction)
		r.next++
	}
}

// Wait ends the step's backward: parameters not marked ready are taken as
// ready now, and Wait returns when every bucket is reduced and copied back
// (gradients and Extra). On error the ring is broken (see Ring).
func (r *Reducer) Wait(ctx context.Context) (StepStats, error) {
	called := time.Now()
	r.mu.Lock()
	if !r.active {
		r.mu.Unlock()
		return StepStats{}, fmt.Errorf("%w: Wait outside a step", ErrState)
	}
	for _, b := range r.buckets {
		b.pending = 0
	}
	r.launchReady()
	r.mu.Unlock()

	var st StepStats
	var firstErr error
	stop := context.AfterFunc(ctx, r.cancel) // a cancelled Wait aborts the collectives
	defer stop()
	world := float32(r.ring.cfg.World)
	for bi, b := range r.buckets {
		err := b.op.Wait()
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("bucket %d of step %d: %w", bi, r.step, err)
			}
			continue
		}
		start, end := b.op.Times()
		st.Buckets++
		st.Comm += end.Sub(start)
		hiddenEnd := end
		if called.Before(end) {
			hiddenEnd = called
		}
		if hidden := hiddenEnd.Sub(start); hidden > 0 {
			st.Hidden += hidden
		}
		if !b.gather {
			st.Bytes += int64(4 * (b.hi - b.lo))
			continue
		}
		st.Bytes += int64(4 * len(b.buf))
		at := 0
		for _, p := range b.params {
			s := r.params[p]
			at += copy(r.grad[s.Offset:s.Offset+s.Len], b.buf[at:])
		}
		if bi == len(r.buckets)-1 {
			for _, e := range r.cfg.Extra {
				src := b.buf[at : at+len(e)]
				if r.cfg.Reduction == Sum {
					for i := range e {
						e[i] = src[i] / world
					}
				} else {
					copy(e, src)
				}
				at += len(e)
			}
		}
	}
	st.Exposed = time.Since(called)
	r.mu.Lock()
	r.active = false
	r.cancel()
	r.mu.Unlock()
	return st, firstErr
}

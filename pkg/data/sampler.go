package data

import (
	"fmt"
	"sync"
)

// Position is a point in training: an epoch and a global cursor, the number
// of the epoch's samples (in permuted order) already consumed by all ranks
// together. It is what a checkpoint stores to resume data loading exactly.
type Position struct {
	Epoch, Cursor int
}

func (p Position) String() string { return fmt.Sprintf("epoch %d cursor %d", p.Epoch, p.Cursor) }

// SamplerConfig fixes a sampler's order.
type SamplerConfig struct {
	// Seed, with the epoch, fixes the permutation.
	Seed uint64
	// Shuffle permutes each epoch; false visits samples in index order
	// (deterministic, e.g. for evaluation or comparison with PyTorch).
	Shuffle bool
	// DropLast ends an epoch before a step that would be smaller than the
	// global batch (those samples are skipped that epoch). Otherwise the
	// last step is short and keeps them.
	DropLast bool
}

// Sampler maps (epoch, cursor, global batch, rank, world size) to dataset
// indices. Epoch e visits the samples in the order Order(e); a step starting
// at cursor c covers positions [c, c+B) of that order and rank r of N takes
// the contiguous slice [ShardRange(size, r, N)] of it. The mapping has no
// state besides a cache, so any rank can compute any step, a job can resume
// at any cursor, and the world size may change between steps without losing
// or repeating a sample. A Sampler is safe for concurrent use.
type Sampler struct {
	n   int
	cfg SamplerConfig

	mu     sync.Mutex // guards orders
	orders [2]cachedOrder
}

type cachedOrder struct {
	epoch int
	perm  []int // nil if the entry is empty
}

// NewSampler returns a sampler over n samples.
func NewSampler(n int, cfg SamplerConfig) (*Sampler, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: sampler over %d samples", ErrInvalid, n)
	}
	return &Sampler{n: n, cfg: cfg}, nil
}

// Len is the number of samples in the dataset.
func (s *Sampler) Len() int { return s.n }

// Config returns the sampler's configuration.
func (s *Sampler) Config() SamplerConfig { return s.cfg }

// order returns the (cached, shared, read-only) order of an epoch.
func (s *Sampler) order(epoch int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.orders {
		if c.perm != nil && c.epoch == epoch {
			return c.perm
		}
	}
	p := make([]int, s.n)
	if s.cfg.Shuffle {
		permutation(p, NewRand(Key(s.cfg.Seed, uint64(epoch), streamPermutation)))
	} else {
		for i := range p {
			p[i] = i
		}
	}
	s.orders[1] = s.orders[0]
	s.orders[0] = cachedOrder{epoch: epoch, perm: p}
	return p
}

// Order returns a copy of epoch's visiting order: a permutation of
// 0..Len()-1 that depends only on (Seed, epoch), or the identity without
// Shuffle.
func (s *Sampler) Order(epoch int) []int {
	return append([]int(nil), s.order(epoch)...)
}

// EpochSize is the number of samples an epoch visits with global batch b:
// Len(), or with DropLast the largest multiple of b not above it.
func (s *Sampler) EpochSize(b int) int {
	if s.cfg.DropLast && b > 0 {
		return s.n / b * b
	}
	return s.n
}

// StepsPerEpoch is the number of steps of global batch b in one epoch.
func (s *Sampler) StepsPerEpoch(b int) int {
	if b <= 0 {
		return 0
	}
	return (s.EpochSize(b) + b - 1) / b
}

// Normalize returns pos, or the start of the next epoch when no step of
// global batch b fits at pos (the epoch is exhausted).
func (s *Sampler) Normalize(pos Position, b int) Position {
	if b > 0 && pos.Cursor >= s.EpochSize(b) {
		return Position{Epoch: pos.Epoch + 1}
	}
	return pos
}

// ShardRange splits a step of size samples among world ranks: rank r gets
// positions [lo, hi) of the step. The slices are contiguous, in rank order,
// and cover the step exactly; the first size%world ranks get one sample
// more than the others, and a rank may get none when size < world.
func ShardRange(size, rank, world int) (lo, hi int) {
	base, extra := size/world, size%world
	lo = rank*base + min(rank, extra)
	hi = lo + base
	if rank < extra {
		hi++
	}
	return lo, hi
}

// Shard is one rank's part of one step.
type Shard struct {
	Pos        Position // where the step starts
	Next       Position // where the following step starts: the next epoch's cursor 0 after an epoch's last step
	GlobalSize int      // samples in the whole step (the global batch, or fewer in a short last step)
	Lo, Hi     int      // this rank's slice of the step, as offsets from Pos.Cursor
	Indices    []int    // dataset indices of this rank's samples, in order (len Hi-Lo, possibly 0)
}

// Step returns rank's part of the step of global batch b starting at pos,
// for a world of the given size. It fails with [ErrEndOfEpoch] when no step
// fits at pos (see Normalize), and with [ErrInvalid] for bad arguments.
func (s *Sampler) Step(pos Position, b, rank, world int) (Shard, error) {
	switch {
	case b <= 0:
		return Shard{}, fmt.Errorf("%w: global batch %d", ErrInvalid, b)
	case world <= 0:
		return Shard{}, fmt.Errorf("%w: world size %d", ErrInvalid, world)
	case rank < 0 || rank >= world:
		return Shard{}, fmt.Errorf("%w: rank %d outside world of %d", ErrInvalid, rank, world)
	case pos.Epoch < 0 || pos.Cursor < 0 || pos.Cursor > s.n:
		return Shard{}, fmt.Errorf("%w: position %v outside an epoch of %d samples", ErrInvalid, pos, s.n)
	}
	end := s.EpochSize(b)
	if pos.Cursor >= end {
		return Shard{}, fmt.Errorf("%w: %v: no step of %d fits in %d samples", ErrEndOfEpoch, pos, b, end)
	}
	size := min(b, end-pos.Cursor)
	lo, hi := ShardRange(size, rank, world)
	order := s.order(pos.Epoch)
	sh := Shard{
		Pos:        pos,
		Next:       s.Normalize(Position{Epoch: pos.Epoch, Cursor: pos.Cursor + size}, b),
		GlobalSize: size,
		Lo:         lo,
		Hi:         hi,
		Indices:    append([]int(nil), order[pos.Cursor+lo:pos.Cursor+hi]...),
	}
	return sh, nil
}

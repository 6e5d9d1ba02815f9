package gpu

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
)

// allocator is raw device memory: the CUDA driver in production, a fake in
// tests.
type allocator interface {
	alloc(bytes uint64) (uint64, error)
	free(ptr uint64) error
}

// minBlock is the smallest block the pool hands out (and its alignment
// granularity); cuMemAlloc itself aligns to at least 256 bytes.
const minBlock = 256

// sizeClass rounds n up to the pool's block size: powers of two up to
// 4 KiB, then four classes per power of two (at most 25% waste).
func sizeClass(n uint64) uint64 {
	if n <= minBlock {
		return minBlock
	}
	if n <= 4096 {
		return 1 << bits.Len64(n-1)
	}
	step := uint64(1) << (bits.Len64(n-1) - 3) // quarter of the enclosing power of two
	return (n + step - 1) / step * step
}

// pool is a size-class caching allocator: freed blocks go to a free list
// of their class and are handed out again for the same class, so steady
// state training makes no driver allocations. When the driver runs out of
// memory, the pool releases every cached block and tries once more.
type pool struct {
	dev   allocator
	free  map[uint64][]uint64 // class -> cached blocks
	live  map[uint64]uint64   // block -> class, for blocks handed out
	stats PoolStats

	// Graphs (graph.go): while capturing, freed blocks are held (a
	// captured graph may use them) instead of going to a free list;
	// epoch counts gets and puts outside a capture, so a graph knows
	// whether any address may have changed hands since it was captured.
	capturing bool
	held      []uint64 // blocks freed during the capture in progress
	heldClass map[uint64]uint64
	epoch     uint64
}

// PoolStats counts the pool's traffic (bytes are block sizes).
type PoolStats struct {
	DriverAllocs, DriverFrees int
	Hits                      int    // allocations served from a free list
	LiveBytes, CachedBytes    uint64 // handed out / held in free lists
	PeakBytes                 uint64 // max of LiveBytes+CachedBytes
}

func newPool(dev allocator) *pool {
	return &pool{dev: dev, free: map[uint64][]uint64{}, live: map[uint64]uint64{}}
}

// get returns a block of at least n bytes.
func (p *pool) get(n uint64) (uint64, error) {
	if !p.capturing {
		p.epoch++
	}
	c := sizeClass(n)
	if l := p.free[c]; len(l) > 0 {
		ptr := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.live[ptr] = c
		p.stats.Hits++
		p.stats.CachedBytes -= c
		p.stats.LiveBytes += c
		return ptr, nil
	}
	ptr, err := p.dev.alloc(c)
	if err != nil {
		if rerr := p.release(); rerr != nil {
			return 0, errors.Join(err, rerr)
		}
		ptr, err = p.dev.alloc(c)
		if err != nil {
			return 0, fmt.Errorf("gpu: allocating %d bytes (live %d bytes): %w", c, p.stats.LiveBytes, err)
		}
	}
	p.stats.DriverAllocs++
	p.live[ptr] = c
	p.stats.LiveBytes += c
	if t := p.stats.LiveBytes + p.stats.CachedBytes; t > p.stats.PeakBytes {
		p.stats.PeakBytes = t
	}
	return ptr, nil
}

// put returns a block to its free list. A pointer the pool did not hand
// out (a view, a double free) is an error wrapping ErrBadInput.
func (p *pool) put(ptr uint64) error {
	c, ok := p.live[ptr]
	if !ok {
		return fmt.Errorf("%w: free of device pointer %#x that is not a live pool block (a view or a double free)", ErrBadInput, ptr)
	}
	delete(p.live, ptr)
	p.stats.LiveBytes -= c
	p.stats.CachedBytes += c
	if p.capturing {
		if p.heldClass == nil {
			p.heldClass = map[uint64]uint64{}
		}
		p.held = append(p.held, ptr)
		p.heldClass[ptr] = c
		return nil
	}
	p.epoch++
	p.free[c] = append(p.free[c], ptr)
	return nil
}

// unhold returns blocks held for a graph to their free lists.
func (p *pool) unhold(blocks []uint64) {
	if len(blocks) > 0 {
		p.epoch++
	}
	for _, ptr := range blocks {
		c := p.heldClass[ptr]
		delete(p.heldClass, ptr)
		p.free[c] = append(p.free[c], ptr)
	}
}

// release frees every cached block back to the driver (in a fixed order).
func (p *pool) release() error {
	classes := make([]uint64, 0, len(p.free))
	for c := range p.free {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool { return classes[i] < classes[j] })
	var errs []error
	for _, c := range classes {
		for _, ptr := range p.free[c] {
			if err := p.dev.free(ptr); err != nil {
				errs = append(errs, err)
			}
			p.stats.DriverFrees++
			p.stats.CachedBytes -= c
		}
		delete(p.free, c)
	}
	return errors.Join(errs...)
}

// releaseAll frees cached, held and live blocks (Close).
func (p *pool) releaseAll() error {
	held := make([]uint64, 0, len(p.heldClass))
	for ptr := range p.heldClass {
		held = append(held, ptr)
	}
	p.unhold(held)
	err := p.release()
	var errs []error
	for ptr := range p.live {
		if e := p.dev.free(ptr); e != nil {
			errs = append(errs, e)
		}
		p.stats.DriverFrees++
	}
	p.live = map[uint64]uint64{}
	p.stats.LiveBytes = 0
	return errors.Join(append(errs, err)...)
}

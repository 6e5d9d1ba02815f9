package nn

import (
	"fmt"
	"math"
	"sync"
)

// Memory and elementwise ops of the CPU backend, plus the helper that splits
// work across goroutines.
//
// Determinism rule for every CPU op: the work is partitioned so that each
// output element is computed by exactly one goroutine, with a summation order
// that depends only on the shapes, never on the number of threads. Reductions
// across many elements (BN statistics, bias gradients, the loss) first reduce
// fixed units into float64 partials and then combine those in a fixed order.

var _ Backend = (*CPU)(nil)

// parallel runs fn over [0,n) split into at most c.threads contiguous
// ranges. grain is the smallest range worth a goroutine. fn must only write
// outputs that belong to its own range.
func (c *CPU) parallel(n, grain int, fn func(lo, hi int)) {
	c.parallelParts(n, grain, func(_, lo, hi int) { fn(lo, hi) })
}

// parallelParts is parallel that also tells fn which part (0 <= part <
// c.threads) it runs, for per-goroutine scratch memory. Part 0 runs on the
// calling goroutine.
func (c *CPU) parallelParts(n, grain int, fn func(part, lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	parts := c.threads
	if maxParts := (n + grain - 1) / grain; parts > maxParts {
		parts = maxParts
	}
	if parts <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(parts - 1)
	for t := 1; t < parts; t++ {
		lo, hi := t*n/parts, (t+1)*n/parts
		go func() {
			defer wg.Done()
			fn(t, lo, hi)
		}()
	}
	fn(0, 0, n/parts)
	wg.Wait()
}

// elemGrain is the smallest elementwise range handed to a goroutine.
const elemGrain = 1 << 14

func mustHost(t *Tensor) []float32 {
	if t.Data == nil && t.Numel() != 0 {
		panic(fmt.Sprintf("nn: cpu backend given a non-host tensor of shape %v", t.Shape))
	}
	return t.Data
}

func checkSameNumel(op string, a, b *Tensor) {
	if a.Numel() != b.Numel() {
		panic(fmt.Sprintf("nn: %s: %v and %v differ in size", op, a.Shape, b.Shape))
	}
}

// New implements Backend.
func (c *CPU) New(shape ...int) *Tensor { return NewTensor(shape...) }

// Free implements Backend. Host memory is left to the garbage collector;
// the tensor's storage is dropped so that a use after Free fails loudly.
func (c *CPU) Free(t *Tensor) {
	if t != nil {
		t.Data = nil
	}
}

// FromHost implements Backend.
func (c *CPU) FromHost(dst *Tensor, src []float32) {
	if len(src) != dst.Numel() {
		panic(fmt.Sprintf("nn: FromHost: %d values for shape %v", len(src), dst.Shape))
	}
	copy(mustHost(dst), src)
}

// ToHost implements Backend.
func (c *CPU) ToHost(dst []float32, src *Tensor) {
	if len(dst) != src.Numel() {
		panic(fmt.Sprintf("nn: ToHost: %d values for shape %v", len(dst), src.Shape))
	}
	copy(dst, mustHost(src))
}

// Copy implements Backend.
func (c *CPU) Copy(dst, src *Tensor) {
	checkSameNumel("Copy", dst, src)
	d, s := mustHost(dst), mustHost(src)
	c.parallel(len(d), elemGrain, func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) })
}

// Fill implements Backend.
func (c *CPU) Fill(t *Tensor, v float32) {
	d := mustHost(t)
	c.parallel(len(d), elemGrain, func(lo, hi int) {
		s := d[lo:hi]
		for i := range s {
			s[i] = v
		}
	})
}

// Sync implements Backend; CPU ops are synchronous.
func (c *CPU) Sync() error { return nil }

// ReLU implements Backend.
func (c *CPU) ReLU(y, x *Tensor) {
	checkSameNumel("ReLU", y, x)
	yd, xd := mustHost(y), mustHost(x)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := xd[i]
			if !(v > 0) && v == v { // keep NaN, as torch does
				v = 0
			}
			yd[i] = v
		}
	})
}

// ReLUBackward implements Backend.
func (c *CPU) ReLUBackward(dx, dy, y *Tensor) {
	checkSameNumel("ReLUBackward", dx, dy)
	checkSameNumel("ReLUBackward", dx, y)
	dxd, dyd, yd := mustHost(dx), mustHost(dy), mustHost(y)
	c.parallel(len(dxd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if yd[i] > 0 {
				dxd[i] = dyd[i]
			} else {
				dxd[i] = 0
			}
		}
	})
}

// Add implements Backend.
func (c *CPU) Add(y, a, b *Tensor) {
	checkSameNumel("Add", y, a)
	checkSameNumel("Add", y, b)
	yd, ad, bd := mustHost(y), mustHost(a), mustHost(b)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = ad[i] + bd[i]
		}
	})
}

// Axpy implements Backend.
func (c *CPU) Axpy(y *Tensor, alpha float32, x *Tensor) {
	checkSameNumel("Axpy", y, x)
	yd, xd := mustHost(y), mustHost(x)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] += alpha * xd[i]
		}
	})
}

// Scale implements Backend.
func (c *CPU) Scale(x *Tensor, alpha float32) {
	xd := mustHost(x)
	c.parallel(len(xd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xd[i] *= alpha
		}
	})
}

// Mul implements Backend.
func (c *CPU) Mul(y, a, b *Tensor) {
	checkSameNumel("Mul", y, a)
	checkSameNumel("Mul", y, b)
	yd, ad, bd := mustHost(y), mustHost(a), mustHost(b)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = ad[i] * bd[i]
		}
	})
}

// CountNonFinite implements Backend.
func (c *CPU) CountNonFinite(t *Tensor) int {
	d := mustHost(t)
	var mu sync.Mutex
	total := 0
	c.parallel(len(d), elemGrain, func(lo, hi int) {
		n := 0
		for _, v := range d[lo:hi] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				n++
			}
		}
		mu.Lock()
		total += n
		mu.Unlock()
	})
	return total
}

// growF32 returns (*buf)[:n], reallocating only when the capacity is short.
func growF32(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// growF64 is growF32 for float64 scratch.
func growF64(buf *[]float64, n int) []float64 {
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	return (*buf)[:n]
}

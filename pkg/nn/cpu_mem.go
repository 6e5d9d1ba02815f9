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

// parallel runs fn over [0,n) split into contiguous ranges on at most
// c.threads goroutines. grain is the smallest range worth a goroutine. The
// ranges (up to parallelSlack per goroutine) are taken from a shared counter,
// so a goroutine delayed by a busy core does not hold up the others; fn may
// therefore run several ranges on one goroutine, and must only write outputs
// that belong to its own range (which is what keeps results independent of
// the partition).
func (c *CPU) parallel(n, grain int, fn func(lo, hi int)) {
	c.parallelParts(n, grain, func(_, lo, hi int) { fn(lo, hi) })
}

// parallelSlack is how many ranges parallel cuts per goroutine.
const parallelSlack = 4

// parallelParts is parallel that also tells fn which goroutine (0 <= part
// < c.threads) runs the range, for per-goroutine scratch memory. Part 0 is
// the calling goroutine. The other parts run on the backend's helper
// goroutines (see team).
func (c *CPU) parallelParts(n, grain int, fn func(part, lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	units := (n + grain - 1) / grain
	workers := min(c.threads, units)
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	chunks := min(units, workers*parallelSlack)
	c.team.do(&teamJob{fn: fn, n: n, chunks: chunks, parts: int32(workers)})
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
	zero := math.Float32bits(v) == 0 // +0 (not -0): a memory clear
	c.parallel(len(d), elemGrain, func(lo, hi int) {
		s := d[lo:hi]
		if zero {
			clear(s)
			return
		}
		for i := range s {
			s[i] = v
		}
	})
}

// Sync implements Backend; CPU ops are synchronous.
func (c *CPU) Sync() error { return nil }

// ReLU implements Backend (branch-free: see relu32).
func (c *CPU) ReLU(y, x *Tensor) {
	checkSameNumel("ReLU", y, x)
	yd, xd := mustHost(y), mustHost(x)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		out, in := yd[lo:hi], xd[lo:hi]
		for i := range out {
			out[i] = relu32(in[i]) // keeps NaN, as torch does
		}
	})
}

// ReLUBackward implements Backend (branch-free: see positiveMask).
func (c *CPU) ReLUBackward(dx, dy, y *Tensor) {
	checkSameNumel("ReLUBackward", dx, dy)
	checkSameNumel("ReLUBackward", dx, y)
	dxd, dyd, yd := mustHost(dx), mustHost(dy), mustHost(y)
	c.parallel(len(dxd), elemGrain, func(lo, hi int) {
		out, g, ys := dxd[lo:hi], dyd[lo:hi], yd[lo:hi]
		if useBNAsm {
			reluMaskAVX512(&out[0], &g[0], &ys[0], len(out))
			return
		}
		for i := range out {
			out[i] = math.Float32frombits(math.Float32bits(g[i]) & positiveMask(ys[i]))
		}
	})
}

// Add implements Backend.
func (c *CPU) Add(y, a, b *Tensor) {
	checkSameNumel("Add", y, a)
	checkSameNumel("Add", y, b)
	yd, ad, bd := mustHost(y), mustHost(a), mustHost(b)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		if useBNAsm {
			out, as, bs := yd[lo:hi], ad[lo:hi], bd[lo:hi]
			addAVX512(&out[0], &as[0], &bs[0], len(out), false)
			return
		}
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

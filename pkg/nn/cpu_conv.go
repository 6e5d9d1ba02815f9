package nn

import "github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"

// Convolutions of the CPU backend as im2col + GEMM.
//
// Images are processed in chunks of G (a function of the shape only, so the
// summation order never depends on the thread count). For a chunk, the
// column matrix col is (C*T) x (G*P*Q), where T is the number of live taps
// (below): image i of the chunk owns columns [i*P*Q, (i+1)*P*Q). Then
//
//	forward:         Y  (K x G*PQ)   = Wt (K x CT) * col
//	backward data:   dcol (CT x G*PQ) = Wt^T * dY, then col2im into dx
//	backward filter: dWt (K x CT)    += dY * col^T   (chunks added in order)
//
// Live taps: a kernel tap (r, s) whose window position reads only padding
// for every output pixel contributes exact zeros, so it is left out of the
// product (a 3x3 pad-1 convolution over a 1x1 plane keeps only its centre
// tap: 9x fewer multiply-adds). Wt is then the weight with the dead taps
// removed (gathered per call); when every tap is live, Wt is the weight
// itself and nothing is gathered.
//
// im2col and col2im are table driven: a plan per shape (cached) holds, for
// every live tap and output pixel, the index of the input pixel it reads,
// or hw (one past the plane) for padding. Each (image, channel) plane is
// copied into a scratch buffer of hw+1 elements whose last element is 0, so
// the gather is branch-free; col2im scatters into a zeroed buffer in
// (tap, pixel) order, so every input pixel sums its contributions in
// increasing tap order whatever the thread count.
//
// GEMM itself runs on all threads; im2col, col2im, gather and scatter are
// split over (image, channel) pairs. A 1x1 stride-1 unpadded convolution
// over a large plane skips im2col: x_n is already its column matrix.

// colBudget bounds the im2col buffer of one chunk, in float32 elements (a
// variable so that tests can force many chunks).
var colBudget = 1 << 22

// convPlan is the shape-only part of a convolution: live taps and the
// im2col gather table.
type convPlan struct {
	taps []int   // live taps r*S+s, increasing
	tab  []int32 // len(taps)*P*Q: plane index read by (tap, pixel), or H*W for padding
	hw   int
}

// full reports whether every tap of p is live.
func (pl *convPlan) full(p ConvParams) bool { return len(pl.taps) == p.R*p.S }

func newConvPlan(p ConvParams) *convPlan {
	P, Q := p.P(), p.Q()
	hw := p.H * p.W
	pl := &convPlan{hw: hw}
	row := make([]int32, P*Q)
	for r := 0; r < p.R; r++ {
		for s := 0; s < p.S; s++ {
			live := false
			for oh := 0; oh < P; oh++ {
				ih := oh*p.StrideH - p.PadH + r
				for ow := 0; ow < Q; ow++ {
					iw := ow*p.StrideW - p.PadW + s
					if ih >= 0 && ih < p.H && iw >= 0 && iw < p.W {
						row[oh*Q+ow] = int32(ih*p.W + iw)
						live = true
					} else {
						row[oh*Q+ow] = int32(hw)
					}
				}
			}
			if live {
				pl.taps = append(pl.taps, r*p.S+s)
				pl.tab = append(pl.tab, row...)
			}
		}
	}
	return pl
}

// plan returns the cached plan of p's shape (N does not matter).
func (c *CPU) plan(p ConvParams) *convPlan {
	key := p
	key.N = 0
	if pl, ok := c.plans[key]; ok {
		return pl
	}
	if c.plans == nil {
		c.plans = map[ConvParams]*convPlan{}
	}
	pl := newConvPlan(p)
	c.plans[key] = pl
	return pl
}

// convChunk is the number of images per chunk for shape p: the fewest
// chunks whose column matrix fits colBudget, with images spread evenly
// over them.
func convChunk(p ConvParams, taps int) int {
	per := p.C * taps * p.P() * p.Q()
	g := max(1, min(colBudget/max(per, 1), p.N))
	chunks := (p.N + g - 1) / g
	return (p.N + chunks - 1) / chunks
}

// convDirect reports whether the convolution is a plain matrix product per
// image (1x1 kernel, stride 1, no padding) over a plane big enough that a
// per-image GEMM is efficient.
func convDirect(p ConvParams) bool {
	return p.R == 1 && p.S == 1 && p.StrideH == 1 && p.StrideW == 1 &&
		p.PadH == 0 && p.PadW == 0 && p.H*p.W >= 256
}

// planeBuf returns goroutine part's scratch plane of n elements.
func (c *CPU) planeBuf(part, n int) []float32 {
	for len(c.planes) <= part {
		c.planes = append(c.planes, nil)
	}
	return growF32(&c.planes[part], n)
}

// im2col fills col (C*T rows, leading dimension ld) for images [n0, n0+g) of x.
func (c *CPU) im2col(col []float32, ld int, x []float32, n0, g int, p ConvParams, pl *convPlan) {
	pq := p.P() * p.Q()
	hw := pl.hw
	T := len(pl.taps)
	for part := 0; part < c.threads; part++ {
		c.planeBuf(part, hw+1) // grown here, not inside the goroutines
	}
	c.parallelParts(g*p.C, 1, func(part, lo, hi int) {
		buf := c.planes[part][:hw+1]
		for u := lo; u < hi; u++ {
			i, ch := u/p.C, u%p.C
			copy(buf, x[((n0+i)*p.C+ch)*hw:][:hw])
			buf[hw] = 0
			for t := 0; t < T; t++ {
				dst := col[(ch*T+t)*ld+i*pq:][:pq]
				idx := pl.tab[t*pq:][:pq]
				for o, j := range idx {
					dst[o] = buf[j]
				}
			}
		}
	})
}

// col2im sets dx for images [n0, n0+g) to the sum of the column-matrix
// entries that im2col would have read from each pixel.
func (c *CPU) col2im(dx []float32, col []float32, ld int, n0, g int, p ConvParams, pl *convPlan) {
	pq := p.P() * p.Q()
	hw := pl.hw
	T := len(pl.taps)
	for part := 0; part < c.threads; part++ {
		c.planeBuf(part, hw+1)
	}
	c.parallelParts(g*p.C, 1, func(part, lo, hi int) {
		buf := c.planes[part][:hw+1]
		for u := lo; u < hi; u++ {
			i, ch := u/p.C, u%p.C
			clear(buf)
			for t := 0; t < T; t++ {
				src := col[(ch*T+t)*ld+i*pq:][:pq]
				idx := pl.tab[t*pq:][:pq]
				for o, j := range idx {
					buf[j] += src[o]
				}
			}
			copy(dx[((n0+i)*p.C+ch)*hw:][:hw], buf[:hw])
		}
	})
}

// gatherChunk copies dy of images [n0,n0+g), (g,K,PQ), into m (K x g*PQ).
func (c *CPU) gatherChunk(m, dy []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, max(1, 4096/pq), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			dst, src := m[kk*ld+i*pq:][:pq], dy[((n0+i)*k+kk)*pq:][:pq]
			if pq < 16 {
				for j := range dst {
					dst[j] = src[j]
				}
				continue
			}
			copy(dst, src)
		}
	})
}

// scatterChunk copies m (K x g*PQ) into y of images [n0,n0+g), (g,K,PQ).
func (c *CPU) scatterChunk(y, m []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, max(1, 4096/pq), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			dst, src := y[((n0+i)*k+kk)*pq:][:pq], m[kk*ld+i*pq:][:pq]
			if pq < 16 {
				for j := range dst {
					dst[j] = src[j]
				}
				continue
			}
			copy(dst, src)
		}
	})
}

// liveWeights returns w (K x C*R*S) restricted to the live taps, (K x C*T):
// w itself when every tap is live, else a gathered copy in scratch.
func (c *CPU) liveWeights(w []float32, p ConvParams, pl *convPlan) []float32 {
	if pl.full(p) {
		return w
	}
	rs, T := p.R*p.S, len(pl.taps)
	wt := growF32(&c.wlive, p.K*p.C*T)
	for kc := 0; kc < p.K*p.C; kc++ {
		src, dst := w[kc*rs:][:rs], wt[kc*T:][:T]
		for t, tap := range pl.taps {
			dst[t] = src[tap]
		}
	}
	return wt
}

// Conv2d implements Backend.
func (c *CPU) Conv2d(y, x, w *Tensor, p ConvParams) {
	yd, xd, wd := mustHost(y), mustHost(x), mustHost(w)
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(false, false, p.K, pq, p.C, 1, wd, p.C, xd[n*chw:], pq, 0, yd[n*kpq:], pq, c.threads)
		}
		return
	}
	pl := c.plan(p)
	ct := p.C * len(pl.taps)
	wt := c.liveWeights(wd, p, pl)
	G := convChunk(p, len(pl.taps))
	col := growF32(&c.col, ct*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		c.im2col(col, ld, xd, n0, g, p, pl)
		if g == 1 {
			gemm.Sgemm(false, false, p.K, ld, ct, 1, wt, ct, col, ld, 0, yd[n0*kpq:], ld, c.threads)
			continue
		}
		out := growF32(&c.tmp, p.K*ld)
		gemm.Sgemm(false, false, p.K, ld, ct, 1, wt, ct, col, ld, 0, out, ld, c.threads)
		c.scatterChunk(yd, out, n0, g, p.K, pq)
	}
}

// Conv2dBackwardData implements Backend.
func (c *CPU) Conv2dBackwardData(dx, dy, w *Tensor, p ConvParams) {
	dxd, dyd, wd := mustHost(dx), mustHost(dy), mustHost(w)
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(true, false, p.C, pq, p.K, 1, wd, p.C, dyd[n*kpq:], pq, 0, dxd[n*chw:], pq, c.threads)
		}
		return
	}
	pl := c.plan(p)
	ct := p.C * len(pl.taps)
	wt := c.liveWeights(wd, p, pl)
	G := convChunk(p, len(pl.taps))
	col := growF32(&c.col, ct*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		m := dyd[n0*kpq:]
		if g > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, n0, g, p.K, pq)
		}
		gemm.Sgemm(true, false, ct, ld, p.K, 1, wt, ct, m, ld, 0, col, ld, c.threads)
		c.col2im(dxd, col, ld, n0, g, p, pl)
	}
}

// Conv2dBackwardFilter implements Backend.
func (c *CPU) Conv2dBackwardFilter(dw, x, dy *Tensor, p ConvParams) {
	dwd, xd, dyd := mustHost(dw), mustHost(x), mustHost(dy)
	pq := p.P() * p.Q()
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(false, true, p.K, p.C, pq, 1, dyd[n*kpq:], pq, xd[n*chw:], pq, 1, dwd, p.C, c.threads)
		}
		return
	}
	pl := c.plan(p)
	T := len(pl.taps)
	ct := p.C * T
	// With dead taps the product goes to a K x C*T scratch (assigned by
	// the first chunk, accumulated by the others), added to dw at the end.
	dst, beta := dwd, float32(1)
	if !pl.full(p) {
		dst, beta = growF32(&c.dwlive, p.K*ct), 0
	}
	G := convChunk(p, T)
	col := growF32(&c.col, ct*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		c.im2col(col, ld, xd, n0, g, p, pl)
		m := dyd[n0*kpq:]
		if g > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, n0, g, p.K, pq)
		}
		gemm.Sgemm(false, true, p.K, ct, ld, 1, m, ld, col, ld, beta, dst, ct, c.threads)
		beta = 1
	}
	if !pl.full(p) {
		rs := p.R * p.S
		for kc := 0; kc < p.K*p.C; kc++ {
			d, s := dwd[kc*rs:][:rs], dst[kc*T:][:T]
			for t, tap := range pl.taps {
				d[tap] += s[t]
			}
		}
	}
}

package nn

// Dense convolutions: a convolution whose every output pixel's window
// covers the whole input plane (ResNet-18's 3x3, pad-1 convolutions on 2x2
// planes, the imagenet stem's layer 3 at 32x32 inputs) is a fully connected
// layer per image. With x as (N x C*HW), y as (N x K*PQ) and the expanded
// weight
//
//	Wd[(k, o), (c, i)] = w[k, c, tap(o, i)]   (K*PQ x C*HW)
//
// where tap(o, i) is the one tap through which output pixel o reads input
// pixel i,
//
//	forward:         Y   = X Wd^T
//	backward data:   dX  = dY Wd
//	backward filter: dWd = dY^T X, then dw[k, c, t] += Σ_{tap(o,i)=t} dWd[(k,o),(c,i)]
//
// Every product is a real one (no padding, no dead tap): the multiply-adds
// are exactly the convolution's, in one well-shaped GEMM (1024 x 1024 x
// batch for the 256-channel layer) with no padded copy, gather, scatter,
// col2im or Winograd transform; Wd costs one pass over K*C*HW*PQ values
// (16/9 of the weight for a 3x3 kernel on 2x2 planes).
//
// Determinism: each element of Y, dX and dWd is one GEMM element (fixed
// summation order over the batch or over (c, i), any thread count), and
// dw adds its taps' dWd terms in increasing (o, i) then adds the sum to dw,
// by one goroutine per (k, c).
//
// pointwise is the special case P = Q = 1 with the taps in pixel order
// (Wd is then the live-tap weight itself); it keeps its own path.

// denseMaxPairs bounds H*W*P*Q of a dense convolution: the expanded weight
// is that many values per (k, c).
const denseMaxPairs = 64

// dense reports whether convolution p runs as a dense product: more than
// one output pixel, every output pixel's window covering every input pixel
// (a tap for every pair), and a small enough expanded weight (unless a
// test sends dense shapes down the other paths: noDense).
func (c *CPU) dense(p ConvParams) bool {
	P, Q := p.P(), p.Q()
	if c.noDense || P*Q < 2 || p.R*p.S > 64 || p.H*p.W*P*Q > denseMaxPairs {
		return false
	}
	covers := func(out, in, stride, pad, r int) bool {
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				if t := i + pad - o*stride; t < 0 || t >= r {
					return false
				}
			}
		}
		return true
	}
	return covers(P, p.H, p.StrideH, p.PadH, p.R) && covers(Q, p.W, p.StrideW, p.PadW, p.S)
}

// newDenseTaps returns tap(o, i) = r*S+s for output pixel o and input
// pixel i, at [o*HW+i], of a convolution that dense accepts.
func newDenseTaps(p ConvParams) []int {
	P, Q, hw := p.P(), p.Q(), p.H*p.W
	tt := make([]int, P*Q*hw)
	for oh := 0; oh < P; oh++ {
		for ow := 0; ow < Q; ow++ {
			for ih := 0; ih < p.H; ih++ {
				for iw := 0; iw < p.W; iw++ {
					r, s := ih+p.PadH-oh*p.StrideH, iw+p.PadW-ow*p.StrideW
					tt[(oh*Q+ow)*hw+ih*p.W+iw] = r*p.S + s
				}
			}
		}
	}
	return tt
}

// denseWeights returns Wd (K*PQ x C*HW) of w (K x C x R x S) in the wlive
// scratch; tt is newDenseTaps(p).
func (c *CPU) denseWeights(w []float32, p ConvParams, tt []int) []float32 {
	pq, hw, rs := p.P()*p.Q(), p.H*p.W, p.R*p.S
	chw := p.C * hw
	wd := growF32(&c.wlive, p.K*pq*chw)
	c.parallel(p.K, max(1, 2048/(p.C*pq*hw)), func(lo, hi int) {
		if c.dense2x2(p) {
			for k := lo; k < hi; k++ {
				dense2x2Weights(wd[k*4*chw:][:4*chw], w[k*p.C*9:][:p.C*9], p.C)
			}
			return
		}
		for k := lo; k < hi; k++ {
			for ch := 0; ch < p.C; ch++ {
				g := w[(k*p.C+ch)*rs:][:rs]
				for o := 0; o < pq; o++ {
					row, taps := wd[(k*pq+o)*chw+ch*hw:][:hw], tt[o*hw:][:hw]
					for i, t := range taps {
						row[i] = g[t]
					}
				}
			}
		}
	})
	return wd
}

// dense2x2 reports whether p is the common dense shape: a 3x3, stride-1,
// pad-1 convolution on 2x2 planes, whose loops are unrolled (unless a
// test compares them with the generic loops: denseGeneric).
func (c *CPU) dense2x2(p ConvParams) bool {
	return !c.denseGeneric && p.H == 2 && p.W == 2 && p.R == 3 && p.S == 3 && p.StrideH == 1 && p.StrideW == 1 &&
		p.PadH == 1 && p.PadW == 1
}

// dense2x2Weights writes the four rows (o = 0..3, C*4 values each) of Wd
// of one output channel, from its weights w (C x 3 x 3): output pixel
// (oh, ow) reads input pixel (ih, iw) through tap (ih-oh+1, iw-ow+1), so
// rows o hold taps {4,5,7,8}, {3,4,6,7}, {1,2,4,5} and {0,1,3,4} per
// channel (newDenseTaps' table).
func dense2x2Weights(wd, w []float32, C int) {
	chw := 4 * C
	r0, r1, r2, r3 := wd[:chw], wd[chw:2*chw], wd[2*chw:3*chw], wd[3*chw:4*chw]
	for ch := 0; ch < C; ch++ {
		g := (*[9]float32)(w[ch*9:])
		*(*[4]float32)(r0[ch*4:]) = [4]float32{g[4], g[5], g[7], g[8]}
		*(*[4]float32)(r1[ch*4:]) = [4]float32{g[3], g[4], g[6], g[7]}
		*(*[4]float32)(r2[ch*4:]) = [4]float32{g[1], g[2], g[4], g[5]}
		*(*[4]float32)(r3[ch*4:]) = [4]float32{g[0], g[1], g[3], g[4]}
	}
}

// denseForward computes y = conv(x, w) for a convolution that dense
// accepts: Y (N x K*PQ) = X (N x C*HW) Wd^T (Wd as a transposed B
// operand: measured slightly faster than storing Wd^T).
func (c *CPU) denseForward(yd, xd, wd []float32, p ConvParams) {
	kpq, chw := p.K*p.P()*p.Q(), p.C*p.H*p.W
	wbig := c.denseWeights(wd, p, c.denseTaps(p))
	c.sgemm(false, true, p.N, kpq, chw, 1, xd, chw, wbig, chw, 0, yd, kpq)
}

// denseBackwardData computes dx for a convolution that dense accepts:
// dX (N x C*HW) = dY (N x K*PQ) Wd.
func (c *CPU) denseBackwardData(dxd, dyd, wd []float32, p ConvParams) {
	kpq, chw := p.K*p.P()*p.Q(), p.C*p.H*p.W
	wbig := c.denseWeights(wd, p, c.denseTaps(p))
	c.sgemm(false, false, p.N, chw, kpq, 1, dyd, kpq, wbig, chw, 0, dxd, chw)
}

// denseBackwardFilter adds the weight gradient of a convolution that dense
// accepts to dw.
func (c *CPU) denseBackwardFilter(dwd, xd, dyd []float32, p ConvParams) {
	pq, hw, rs := p.P()*p.Q(), p.H*p.W, p.R*p.S
	kpq, chw := p.K*pq, p.C*hw
	tt := c.denseTaps(p)
	dbig := growF32(&c.dwlive, kpq*chw)
	c.sgemm(true, false, kpq, chw, p.N, 1, dyd, kpq, xd, chw, 0, dbig, chw)
	var used [64]bool // taps some pair goes through (others get no term, not even +0)
	if rs > len(used) {
		panic("nn: dense convolution with more than 64 taps")
	}
	for _, t := range tt {
		used[t] = true
	}
	if c.dense2x2(p) {
		c.parallel(p.K, max(1, 4096/(p.C*16)), func(lo, hi int) {
			for k := lo; k < hi; k++ {
				dense2x2Fold(dwd[k*p.C*9:][:p.C*9], dbig[k*4*chw:][:4*chw], p.C)
			}
		})
		return
	}
	c.parallel(p.K*p.C, max(1, 4096/(pq*hw)), func(lo, hi int) {
		var s [64]float32
		for kc := lo; kc < hi; kc++ {
			k, ch := kc/p.C, kc%p.C
			clear(s[:rs])
			for o := 0; o < pq; o++ {
				src := dbig[(k*pq+o)*chw+ch*hw:][:hw]
				for i, t := range tt[o*hw:][:hw] {
					s[t] += src[i]
				}
			}
			d := dwd[kc*rs:][:rs]
			for t := range d {
				if used[t] {
					d[t] += s[t]
				}
			}
		}
	})
}

// dense2x2Fold adds to the weight gradient d (C x 3 x 3) of one output
// channel the terms of its four rows of dWd (src: rows o = 0..3 of C*4
// values; dense2x2Weights' taps), summed per tap in increasing (o, i) from
// 0, exactly as the generic loop.
func dense2x2Fold(d, src []float32, C int) {
	chw := 4 * C
	r0, r1, r2, r3 := src[:chw], src[chw:2*chw], src[2*chw:3*chw], src[3*chw:4*chw]
	var z float32
	for ch := 0; ch < C; ch++ {
		v0, v1 := (*[4]float32)(r0[ch*4:]), (*[4]float32)(r1[ch*4:])
		v2, v3 := (*[4]float32)(r2[ch*4:]), (*[4]float32)(r3[ch*4:])
		g := (*[9]float32)(d[ch*9:])
		g[0] += z + v3[0]
		g[1] += z + v2[0] + v3[1]
		g[2] += z + v2[1]
		g[3] += z + v1[0] + v3[2]
		g[4] += z + v0[0] + v1[1] + v2[2] + v3[3]
		g[5] += z + v0[1] + v2[3]
		g[6] += z + v1[2]
		g[7] += z + v0[2] + v1[3]
		g[8] += z + v0[3]
	}
}

// denseTaps returns newDenseTaps(p), cached in p's plan.
func (c *CPU) denseTaps(p ConvParams) []int {
	pl := c.plan(p)
	if pl.dense == nil {
		pl.dense = newDenseTaps(p)
	}
	return pl.dense
}

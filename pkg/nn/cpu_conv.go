package nn

import "github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"

// Convolutions of the CPU backend as im2col + GEMM.
//
// Images are processed in chunks of G (a function of the shape only, so the
// summation order never depends on the thread count). For a chunk, the
// column matrix col is (C*R*S) x (G*P*Q): image i of the chunk owns columns
// [i*P*Q, (i+1)*P*Q). Then
//
//	forward:         Y  (K x G*PQ)   = W (K x CRS) * col
//	backward data:   dcol (CRS x G*PQ) = W^T * dY, then col2im into dx
//	backward filter: dW (K x CRS)   += dY * col^T   (chunks added in order)
//
// GEMM itself runs on all threads; im2col, col2im, gather and scatter are
// split over (image, channel) pairs. A 1x1 stride-1 unpadded convolution
// over a large plane skips im2col: x_n is already its column matrix.

// colBudget bounds the im2col buffer of one chunk, in float32 elements (a
// variable so that tests can force many chunks).
var colBudget = 1 << 22

// convChunk is the number of images per chunk for shape p.
func convChunk(p ConvParams) int {
	per := p.C * p.R * p.S * p.P() * p.Q()
	g := colBudget / max(per, 1)
	return max(1, min(g, p.N))
}

// convDirect reports whether the convolution is a plain matrix product per
// image (1x1 kernel, stride 1, no padding) over a plane big enough that a
// per-image GEMM is efficient.
func convDirect(p ConvParams) bool {
	return p.R == 1 && p.S == 1 && p.StrideH == 1 && p.StrideW == 1 &&
		p.PadH == 0 && p.PadW == 0 && p.H*p.W >= 256
}

// im2col fills col (CRS rows, leading dimension ld) for images
// [n0, n0+g) of x.
func (c *CPU) im2col(col []float32, ld int, x []float32, n0, g int, p ConvParams) {
	P, Q := p.P(), p.Q()
	pq := P * Q
	hw := p.H * p.W
	c.parallel(g*p.C, 1, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, ch := u/p.C, u%p.C
			plane := x[((n0+i)*p.C+ch)*hw:][:hw]
			for r := 0; r < p.R; r++ {
				for s := 0; s < p.S; s++ {
					row := col[((ch*p.R+r)*p.S+s)*ld+i*pq:][:pq]
					for oh := 0; oh < P; oh++ {
						out := row[oh*Q : oh*Q+Q]
						ih := oh*p.StrideH - p.PadH + r
						if ih < 0 || ih >= p.H {
							clear(out)
							continue
						}
						src := plane[ih*p.W : ih*p.W+p.W]
						iw := s - p.PadW
						if p.StrideW == 1 {
							// out[ow] = src[ow+iw] where in range.
							a := max(0, -iw)
							b := min(Q, p.W-iw)
							if b <= a {
								clear(out)
								continue
							}
							clear(out[:a])
							copy(out[a:b], src[a+iw:b+iw])
							clear(out[b:])
							continue
						}
						for ow := range out {
							if w := ow*p.StrideW + iw; w >= 0 && w < p.W {
								out[ow] = src[w]
							} else {
								out[ow] = 0
							}
						}
					}
				}
			}
		}
	})
}

// col2im sets dx for images [n0, n0+g) to the sum of the column-matrix
// entries that im2col would have read from each pixel.
func (c *CPU) col2im(dx []float32, col []float32, ld int, n0, g int, p ConvParams) {
	P, Q := p.P(), p.Q()
	pq := P * Q
	hw := p.H * p.W
	c.parallel(g*p.C, 1, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, ch := u/p.C, u%p.C
			plane := dx[((n0+i)*p.C+ch)*hw:][:hw]
			clear(plane)
			for r := 0; r < p.R; r++ {
				for s := 0; s < p.S; s++ {
					row := col[((ch*p.R+r)*p.S+s)*ld+i*pq:][:pq]
					for oh := 0; oh < P; oh++ {
						ih := oh*p.StrideH - p.PadH + r
						if ih < 0 || ih >= p.H {
							continue
						}
						in := row[oh*Q : oh*Q+Q]
						dst := plane[ih*p.W : ih*p.W+p.W]
						iw := s - p.PadW
						if p.StrideW == 1 {
							a := max(0, -iw)
							b := min(Q, p.W-iw)
							for ow := a; ow < b; ow++ {
								dst[ow+iw] += in[ow]
							}
							continue
						}
						for ow, v := range in {
							if w := ow*p.StrideW + iw; w >= 0 && w < p.W {
								dst[w] += v
							}
						}
					}
				}
			}
		}
	})
}

// gatherChunk copies dy of images [n0,n0+g), (g,K,PQ), into m (K x g*PQ).
func (c *CPU) gatherChunk(m, dy []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, 64, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			copy(m[kk*ld+i*pq:][:pq], dy[((n0+i)*k+kk)*pq:][:pq])
		}
	})
}

// scatterChunk copies m (K x g*PQ) into y of images [n0,n0+g), (g,K,PQ).
func (c *CPU) scatterChunk(y, m []float32, n0, g, k, pq int) {
	ld := g * pq
	c.parallel(g*k, 64, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			i, kk := u/k, u%k
			copy(y[((n0+i)*k+kk)*pq:][:pq], m[kk*ld+i*pq:][:pq])
		}
	})
}

// Conv2d implements Backend.
func (c *CPU) Conv2d(y, x, w *Tensor, p ConvParams) {
	yd, xd, wd := mustHost(y), mustHost(x), mustHost(w)
	pq := p.P() * p.Q()
	crs := p.C * p.R * p.S
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(false, false, p.K, pq, p.C, 1, wd, p.C, xd[n*chw:], pq, 0, yd[n*kpq:], pq, c.threads)
		}
		return
	}
	G := convChunk(p)
	col := growF32(&c.col, crs*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		c.im2col(col, ld, xd, n0, g, p)
		if g == 1 {
			gemm.Sgemm(false, false, p.K, ld, crs, 1, wd, crs, col, ld, 0, yd[n0*kpq:], ld, c.threads)
			continue
		}
		out := growF32(&c.tmp, p.K*ld)
		gemm.Sgemm(false, false, p.K, ld, crs, 1, wd, crs, col, ld, 0, out, ld, c.threads)
		c.scatterChunk(yd, out, n0, g, p.K, pq)
	}
}

// Conv2dBackwardData implements Backend.
func (c *CPU) Conv2dBackwardData(dx, dy, w *Tensor, p ConvParams) {
	dxd, dyd, wd := mustHost(dx), mustHost(dy), mustHost(w)
	pq := p.P() * p.Q()
	crs := p.C * p.R * p.S
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(true, false, p.C, pq, p.K, 1, wd, p.C, dyd[n*kpq:], pq, 0, dxd[n*chw:], pq, c.threads)
		}
		return
	}
	G := convChunk(p)
	col := growF32(&c.col, crs*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		m := dyd[n0*kpq:]
		if g > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, n0, g, p.K, pq)
		}
		gemm.Sgemm(true, false, crs, ld, p.K, 1, wd, crs, m, ld, 0, col, ld, c.threads)
		c.col2im(dxd, col, ld, n0, g, p)
	}
}

// Conv2dBackwardFilter implements Backend.
func (c *CPU) Conv2dBackwardFilter(dw, x, dy *Tensor, p ConvParams) {
	dwd, xd, dyd := mustHost(dw), mustHost(x), mustHost(dy)
	pq := p.P() * p.Q()
	crs := p.C * p.R * p.S
	kpq := p.K * pq
	if convDirect(p) {
		chw := p.C * p.H * p.W
		for n := 0; n < p.N; n++ {
			gemm.Sgemm(false, true, p.K, p.C, pq, 1, dyd[n*kpq:], pq, xd[n*chw:], pq, 1, dwd, p.C, c.threads)
		}
		return
	}
	G := convChunk(p)
	col := growF32(&c.col, crs*G*pq)
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		ld := g * pq
		c.im2col(col, ld, xd, n0, g, p)
		m := dyd[n0*kpq:]
		if g > 1 {
			m = growF32(&c.tmp, p.K*ld)
			c.gatherChunk(m, dyd, n0, g, p.K, pq)
		}
		gemm.Sgemm(false, true, p.K, crs, ld, 1, m, ld, col, ld, 1, dwd, crs, c.threads)
	}
}

package nn

import (
	"math"

	"github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"
)

// Channel bias, linear and pooling ops of the CPU backend.

// planeSize returns (N, C, H*W) of a (N,C,H,W) or (N,C) tensor.
func planeSize(t *Tensor) (n, ch, hw int) {
	n, ch, hw = t.Shape[0], t.Shape[1], 1
	for _, d := range t.Shape[2:] {
		hw *= d
	}
	return n, ch, hw
}

// AddChannelBias implements Backend.
func (c *CPU) AddChannelBias(y, b *Tensor) {
	yd, bd := mustHost(y), mustHost(b)
	n, ch, hw := planeSize(y)
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			v := bd[u%ch]
			row := yd[u*hw : u*hw+hw]
			for i := range row {
				row[i] += v
			}
		}
	})
}

// ChannelBiasBackward implements Backend: per channel, a float64 sum over
// n (outer) and h,w (inner).
func (c *CPU) ChannelBiasBackward(db, dy *Tensor) {
	dbd, dyd := mustHost(db), mustHost(dy)
	n, ch, hw := planeSize(dy)
	c.parallel(ch, 1, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			var s float64
			for i := 0; i < n; i++ {
				for _, v := range dyd[(i*ch+k)*hw : (i*ch+k)*hw+hw] {
					s += float64(v)
				}
			}
			dbd[k] += float32(s)
		}
	})
}

// Linear implements Backend: y = b (broadcast) then y += x w^T.
func (c *CPU) Linear(y, x, w, b *Tensor) {
	yd, xd, wd := mustHost(y), mustHost(x), mustHost(w)
	n, in := x.Shape[0], x.Numel()/x.Shape[0]
	out := w.Shape[0]
	beta := float32(0)
	if b != nil {
		bd := mustHost(b)
		for i := 0; i < n; i++ {
			copy(yd[i*out:(i+1)*out], bd)
		}
		beta = 1
	}
	gemm.Sgemm(false, true, n, out, in, 1, xd, in, wd, in, beta, yd, out, c.threads)
}

// LinearBackward implements Backend.
func (c *CPU) LinearBackward(dx, dw, db, dy, x, w *Tensor) {
	dyd := mustHost(dy)
	n, out := dy.Shape[0], dy.Shape[1]
	in := w.Numel() / out
	if dx != nil {
		gemm.Sgemm(false, false, n, in, out, 1, dyd, out, mustHost(w), in, 0, mustHost(dx), in, c.threads)
	}
	if dw != nil {
		gemm.Sgemm(true, false, out, in, n, 1, dyd, out, mustHost(x), in, 1, mustHost(dw), in, c.threads)
	}
	if db != nil {
		dbd := mustHost(db)
		c.parallel(out, 64, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				var s float64
				for i := 0; i < n; i++ {
					s += float64(dyd[i*out+o])
				}
				dbd[o] += float32(s)
			}
		})
	}
}

// MaxPool2d implements Backend.
func (c *CPU) MaxPool2d(y, argmax, x *Tensor, p PoolParams) {
	yd, ad, xd := mustHost(y), mustHost(argmax), mustHost(x)
	P, Q := p.P(), p.Q()
	hw, pq := p.H*p.W, P*Q
	negInf := float32(math.Inf(-1))
	c.parallel(p.N*p.C, 1, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			in := xd[u*hw : u*hw+hw]
			out := yd[u*pq : u*pq+pq]
			idx := ad[u*pq : u*pq+pq]
			for oh := 0; oh < P; oh++ {
				h0 := oh*p.Stride - p.Pad
				h1 := min(h0+p.Kernel, p.H)
				h0 = max(h0, 0)
				for ow := 0; ow < Q; ow++ {
					w0 := ow*p.Stride - p.Pad
					w1 := min(w0+p.Kernel, p.W)
					w0 = max(w0, 0)
					best, bi := negInf, h0*p.W+w0
					for h := h0; h < h1; h++ {
						for w := w0; w < w1; w++ {
							v := in[h*p.W+w]
							if v > best || v != v { // NaN wins, as in torch
								best, bi = v, h*p.W+w
							}
						}
					}
					out[oh*Q+ow] = best
					idx[oh*Q+ow] = float32(bi)
				}
			}
		}
	})
}

// MaxPool2dBackward implements Backend.
func (c *CPU) MaxPool2dBackward(dx, dy, argmax *Tensor, p PoolParams) {
	dxd, dyd, ad := mustHost(dx), mustHost(dy), mustHost(argmax)
	hw, pq := p.H*p.W, p.P()*p.Q()
	c.parallel(p.N*p.C, 1, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			plane := dxd[u*hw : u*hw+hw]
			clear(plane)
			g := dyd[u*pq : u*pq+pq]
			for i, j := range ad[u*pq : u*pq+pq] {
				plane[int(j)] += g[i]
			}
		}
	})
}

// GlobalAvgPool implements Backend (float64 sum over each plane).
func (c *CPU) GlobalAvgPool(y, x *Tensor) {
	yd, xd := mustHost(y), mustHost(x)
	n, ch, hw := planeSize(x)
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			var s float64
			for _, v := range xd[u*hw : u*hw+hw] {
				s += float64(v)
			}
			yd[u] = float32(s / float64(hw))
		}
	})
}

// GlobalAvgPoolBackward implements Backend.
func (c *CPU) GlobalAvgPoolBackward(dx, dy *Tensor) {
	dxd, dyd := mustHost(dx), mustHost(dy)
	n, ch, hw := planeSize(dx)
	inv := 1 / float32(hw)
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			v := dyd[u] * inv
			plane := dxd[u*hw : u*hw+hw]
			for i := range plane {
				plane[i] = v
			}
		}
	})
}

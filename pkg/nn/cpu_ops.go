package nn

import "math"

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
	c.sgemm(false, true, n, out, in, 1, xd, in, wd, in, beta, yd, out)
}

// LinearBackward implements Backend.
func (c *CPU) LinearBackward(dx, dw, db, dy, x, w *Tensor) {
	dyd := mustHost(dy)
	n, out := dy.Shape[0], dy.Shape[1]
	in := w.Numel() / out
	if dx != nil {
		c.sgemm(false, false, n, in, out, 1, dyd, out, mustHost(w), in, 0, mustHost(dx), in)
	}
	if dw != nil {
		c.sgemm(true, false, out, in, n, 1, dyd, out, mustHost(x), in, 1, mustHost(dw), in)
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

// MaxPool2d implements Backend: per window the first maximum in row-major
// order wins, and a NaN wins over any number (the last NaN, as in torch).
// The 3x3, stride-2, pad-1 pool (ResNet's stem) runs 16 windows per vector
// on AVX-512 (maxPoolVector); otherwise planes without NaNs take a
// branch-free path on integer keys (maxKey). Both pick the same element as
// the plain loop (maxPoolPlane), whose comparisons are unpredictable
// branches on random data.
func (c *CPU) MaxPool2d(y, argmax, x *Tensor, p PoolParams) {
	yd, ad, xd := mustHost(y), mustHost(argmax), mustHost(x)
	hw, pq := p.H*p.W, p.P()*p.Q()
	for len(c.keys) < c.threads {
		c.keys = append(c.keys, nil)
	}
	for part := range c.keys[:c.threads] {
		if len(c.keys[part]) < hw {
			c.keys[part] = make([]int32, hw)
		}
	}
	c.parallelParts(p.N*p.C, max(1, 4096/hw), func(part, lo, hi int) {
		keys := c.keys[part][:hw]
		for u := lo; u < hi; u++ {
			in, out, idx := xd[u*hw:u*hw+hw], yd[u*pq:u*pq+pq], ad[u*pq:u*pq+pq]
			if maxPoolVector(out, idx, in, p) {
				continue
			}
			if maxKeys(keys, in) {
				maxPoolKeys(out, idx, in, keys, p)
			} else {
				maxPoolPlane(out, idx, in, p)
			}
		}
	})
}

// maxKeys sets keys[i] = maxKey(in[i]) and reports whether in holds no NaN.
func maxKeys(keys []int32, in []float32) bool {
	keys = keys[:len(in)]
	nan := int32(0)
	for i, v := range in {
		u := int32(math.Float32bits(v))
		s, m := u>>31, u&0x7fffffff
		keys[i] = (m ^ s) - s
		nan |= 0x7f800000 - m // negative for a NaN
	}
	return nan >= 0
}

// maxKey maps a float32 that is not a NaN to an int32 that compares as the
// float does: sign and magnitude to two's complement, so -0 and +0 both
// become 0 (they compare equal as floats).
func maxKey(v float32) int32 {
	u := int32(math.Float32bits(v))
	s, m := u>>31, u&0x7fffffff
	return (m ^ s) - s
}

// laneTables are the lane tables of the AVX-512 max-pool and stride-2
// padding: the even lanes, the odd lanes and the lanes of two vectors.
var laneTables = [3][16]int32{
	{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
	{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
}

// maxPoolRow is the widest output row maxPoolKeys handles.
const maxPoolRow = 64

// maxPoolKeys is maxPoolPlane on a plane without NaNs, given its keys:
// the same comparisons (strict greater, each window in row-major order) on
// keys, branch-free. An output row is done one window tap at a time
// across all its outputs, so the outputs' comparison chains are
// independent (the per-window chain is latency-bound). Rows wider than
// maxPoolRow, and padding over half the kernel (windows of padding only),
// go to maxPoolPlane.
func maxPoolKeys(out, idx, in []float32, keys []int32, p PoolParams) {
	P, Q := p.P(), p.Q()
	if Q > maxPoolRow || 2*p.Pad > p.Kernel { // (torch's limit: no window of padding only)
		maxPoolPlane(out, idx, in, p)
		return
	}
	negInf := int64(maxKey(float32(math.Inf(-1))))
	var best, bi [maxPoolRow]int64
	for oh := 0; oh < P; oh++ {
		h0 := oh*p.Stride - p.Pad
		for ow := 0; ow < Q; ow++ {
			// The first element of the window: where the plain loop
			// starts (and what it reports for a window of padding only).
			best[ow], bi[ow] = negInf, int64(max(h0, 0)*p.W+max(ow*p.Stride-p.Pad, 0))
		}
		for r := 0; r < p.Kernel; r++ {
			h := h0 + r
			if h < 0 || h >= p.H {
				continue
			}
			krow := keys[h*p.W : h*p.W+p.W]
			for s := 0; s < p.Kernel; s++ {
				// Outputs whose window column ow*Stride-Pad+s is inside.
				lo := max(0, (p.Pad-s+p.Stride-1)/p.Stride)
				hi := 0
				if e := p.W - 1 + p.Pad - s; e >= 0 {
					hi = min(Q, e/p.Stride+1)
				}
				for ow := lo; ow < hi; ow++ {
					w := ow*p.Stride - p.Pad + s
					k := int64(krow[w])
					gt := (best[ow] - k) >> 63 // -1 where k > best (no overflow: keys are 32-bit)
					best[ow] += (k - best[ow]) & gt
					bi[ow] ^= (bi[ow] ^ int64(h*p.W+w)) & gt
				}
			}
		}
		for ow := 0; ow < Q; ow++ {
			out[oh*Q+ow], idx[oh*Q+ow] = in[bi[ow]], float32(bi[ow])
		}
	}
}

// maxPoolPlane is the max-pool of one plane (in: H x W) into out and idx
// (P x Q), comparing floats.
func maxPoolPlane(out, idx, in []float32, p PoolParams) {
	P, Q := p.P(), p.Q()
	negInf := float32(math.Inf(-1))
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

package nn

import "math"

// Fused ops of the CPU backend (FusedOps): a ReLU folded into the pass of
// its neighbour. Each computes bit-for-bit what the separate ops compute,
// with one pass over memory fewer. ReLU and its mask are branch-free (on
// bits), so random signs cost no branch mispredictions.

var _ FusedOps = (*CPU)(nil)

// relu32 is max(v, 0) as CPU.ReLU defines it: NaN kept, -0 and negatives
// become +0. Branch-free: the sign bit selects, unless v is a NaN.
func relu32(v float32) float32 {
	u := math.Float32bits(v)
	keep := ^uint32(int32(u)>>31) | // sign clear
		uint32(int32(0x7f800000-(u&0x7fffffff))>>31) // NaN
	return math.Float32frombits(u & keep)
}

// positiveMask is all ones where y > 0 (not NaN, not ±0, not negative),
// else 0: ReLUBackward's mask, branch-free.
func positiveMask(y float32) uint32 {
	u := math.Float32bits(y)
	pos := uint32((0 - int64(int32(u))) >> 63)                 // int32(u) > 0: sign clear, not +0
	notNaN := uint32((int64(u&0x7fffffff) - 0x7f800001) >> 63) // |y| <= +Inf
	return pos & notNaN
}

// BatchNormReLUForward implements FusedOps.
func (c *CPU) BatchNormReLUForward(y, x, mean, invStd, gamma, beta *Tensor) {
	c.bnApply(mustHost(y), mustHost(x), x, mean, invStd, gamma, beta, true)
}

// AddReLU implements FusedOps.
func (c *CPU) AddReLU(y, a, b *Tensor) {
	checkSameNumel("AddReLU", y, a)
	checkSameNumel("AddReLU", y, b)
	yd, ad, bd := mustHost(y), mustHost(a), mustHost(b)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		out, as, bs := yd[lo:hi], ad[lo:hi], bd[lo:hi]
		if useBNAsm {
			addAVX512(&out[0], &as[0], &bs[0], len(out), true)
			return
		}
		for i := range out {
			out[i] = relu32(as[i] + bs[i])
		}
	})
}

// ReLUBatchNormBackwardStats implements FusedOps.
func (c *CPU) ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *Tensor) {
	checkSameNumel("ReLUBatchNormBackwardStats", dy, y)
	dyd, yd, xd, md, id := mustHost(dy), mustHost(y), mustHost(x), mustHost(mean), mustHost(invStd)
	n, ch, hw := planeSize(x)
	s := growF64(&c.chn, 2*ch)
	c.planeSums(n, ch, hw, func(lo, hi int, a, b []float64) {
		k := lo % ch
		for u := lo; u < hi; u++ {
			if hw == 1 { // one element: its lane is the sum
				gm := math.Float32frombits(math.Float32bits(dyd[u]) & positiveMask(yd[u]))
				dyd[u] = gm
				d := float64(gm)
				a[u], b[u] = d, d*(float64(xd[u])-float64(md[k]))
			} else if hw == 4 { // one element per lane
				g, ys := dyd[u*4:u*4+4:u*4+4], yd[u*4:u*4+4:u*4+4]
				for i := range g {
					g[i] = math.Float32frombits(math.Float32bits(g[i]) & positiveMask(ys[i]))
				}
				a[u], b[u] = sums4(g, xd[u*4:u*4+4], float64(md[k]))
			} else {
				a[u], b[u] = reluSumDyXmu64(dyd[u*hw:u*hw+hw], yd[u*hw:u*hw+hw], xd[u*hw:u*hw+hw], float64(md[k]))
			}
			if k++; k == ch {
				k = 0
			}
		}
	}, s[:ch], s[ch:])
	sd, sx := mustHost(sumDy), mustHost(sumDyXhat)
	for k := 0; k < ch; k++ {
		sd[k] = float32(s[k])
		sx[k] = float32(s[ch+k] * float64(id[k]))
	}
}

// reluSumDyXmu64 is sumDyXmu64 of g masked by ReLU's backward (g = 0
// where y is not positive), storing the masked g; the same lanes and
// order.
func reluSumDyXmu64(g, y, x []float32, mu float64) (sumDy, sumDyXmu float64) {
	if len(x) >= wideLanes {
		return bnBwdSumsWide(g, y, x, mu, true)
	}
	g, y = g[:len(x)], y[:len(x)]
	mask := func(i int) float64 {
		gm := math.Float32frombits(math.Float32bits(g[i]) & positiveMask(y[i]))
		g[i] = gm
		return float64(gm)
	}
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		d0, d1, d2, d3 := mask(i), mask(i+1), mask(i+2), mask(i+3)
		a0, a1, a2, a3 = a0+d0, a1+d1, a2+d2, a3+d3
		b0 += d0 * (float64(v[0]) - mu)
		b1 += d1 * (float64(v[1]) - mu)
		b2 += d2 * (float64(v[2]) - mu)
		b3 += d3 * (float64(v[3]) - mu)
	}
	if i < len(x) {
		d := mask(i)
		a0, b0 = a0+d, b0+d*(float64(x[i])-mu)
	}
	if i+1 < len(x) {
		d := mask(i + 1)
		a1, b1 = a1+d, b1+d*(float64(x[i+1])-mu)
	}
	if i+2 < len(x) {
		d := mask(i + 2)
		a2, b2 = a2+d, b2+d*(float64(x[i+2])-mu)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

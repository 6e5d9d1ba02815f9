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
	yd, xd := mustHost(y), mustHost(x)
	md, id, gd, bd := mustHost(mean), mustHost(invStd), mustHost(gamma), mustHost(beta)
	n, ch, hw := planeSize(x)
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			k := u % ch
			alpha := id[k] * gd[k]
			shift := bd[k] - md[k]*alpha
			out := yd[u*hw : u*hw+hw]
			for i, v := range xd[u*hw : u*hw+hw] {
				out[i] = relu32(v*alpha + shift)
			}
		}
	})
}

// AddReLU implements FusedOps.
func (c *CPU) AddReLU(y, a, b *Tensor) {
	checkSameNumel("AddReLU", y, a)
	checkSameNumel("AddReLU", y, b)
	yd, ad, bd := mustHost(y), mustHost(a), mustHost(b)
	c.parallel(len(yd), elemGrain, func(lo, hi int) {
		out, as, bs := yd[lo:hi], ad[lo:hi], bd[lo:hi]
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
	c.planeSums(n, ch, hw, func(u int) (float64, float64) {
		mu := float64(md[u%ch])
		g := dyd[u*hw : u*hw+hw]
		ys := yd[u*hw : u*hw+hw]
		var a, b float64
		for i, v := range xd[u*hw : u*hw+hw] {
			gm := math.Float32frombits(math.Float32bits(g[i]) & positiveMask(ys[i]))
			g[i] = gm
			d := float64(gm)
			a += d
			b += d * (float64(v) - mu)
		}
		return a, b
	}, s[:ch], s[ch:])
	sd, sx := mustHost(sumDy), mustHost(sumDyXhat)
	for k := 0; k < ch; k++ {
		sd[k] = float32(s[k])
		sx[k] = float32(s[ch+k] * float64(id[k]))
	}
}

package nn

import "math"

// Batch-normalisation ops of the CPU backend. Per-channel reductions are
// computed per (n, c) plane in float64 (the fixed unit of work), then the
// planes of each channel are added in order of n.

// planeSums computes, for every plane u = n*C + c, two float64 sums
// f(plane) into acc[u] and acc[N*C+u], then reduces them per channel into
// out1[c] and out2[c] (float64).
func (c *CPU) planeSums(n, ch, hw int, f func(u int) (float64, float64), out1, out2 []float64) {
	nc := n * ch
	acc := growF64(&c.acc, 2*nc)
	c.parallel(nc, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			acc[u], acc[nc+u] = f(u)
		}
	})
	for k := 0; k < ch; k++ {
		var a, b float64
		for i := 0; i < n; i++ {
			a += acc[i*ch+k]
			b += acc[nc+i*ch+k]
		}
		out1[k], out2[k] = a, b
	}
}

// BatchNormStats implements Backend.
func (c *CPU) BatchNormStats(sum, sumSq, x *Tensor) {
	xd := mustHost(x)
	n, ch, hw := planeSize(x)
	s1 := growF64(&c.chn, 2*ch)
	c.planeSums(n, ch, hw, func(u int) (float64, float64) {
		var a, b float64
		for _, v := range xd[u*hw : u*hw+hw] {
			f := float64(v)
			a += f
			b += f * f
		}
		return a, b
	}, s1[:ch], s1[ch:])
	sd, qd := mustHost(sum), mustHost(sumSq)
	for k := 0; k < ch; k++ {
		sd[k], qd[k] = float32(s1[k]), float32(s1[ch+k])
	}
}

// BatchNormStatsFinish implements Backend (float64 arithmetic).
func (c *CPU) BatchNormStatsFinish(mean, invStd, runMean, runVar, sum, sumSq *Tensor, m int, momentum, eps float32) {
	md, id, sd, qd := mustHost(mean), mustHost(invStd), mustHost(sum), mustHost(sumSq)
	var rm, rv []float32
	if runMean != nil {
		rm = mustHost(runMean)
	}
	if runVar != nil {
		rv = mustHost(runVar)
	}
	fm := float64(m)
	mom := float64(momentum)
	for k := range md {
		mu := float64(sd[k]) / fm
		v := math.Max(float64(qd[k])/fm-mu*mu, 0)
		md[k] = float32(mu)
		id[k] = float32(1 / math.Sqrt(v+float64(eps)))
		if rm != nil {
			rm[k] = float32(mom*mu + (1-mom)*float64(rm[k]))
		}
		if rv != nil {
			unbiased := v
			if m > 1 {
				unbiased = v * fm / (fm - 1)
			}
			rv[k] = float32(mom*unbiased + (1-mom)*float64(rv[k]))
		}
	}
}

// BatchNormInvStd implements Backend.
func (c *CPU) BatchNormInvStd(invStd, v *Tensor, eps float32) {
	id, vd := mustHost(invStd), mustHost(v)
	for k := range id {
		id[k] = float32(1 / math.Sqrt(float64(vd[k])+float64(eps)))
	}
}

// BatchNormForward implements Backend as torch's CPU kernel does:
// alpha = invStd*gamma, shift = beta - mean*alpha, y = x*alpha + shift.
func (c *CPU) BatchNormForward(y, x, mean, invStd, gamma, beta *Tensor) {
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
				out[i] = v*alpha + shift
			}
		}
	})
}

// BatchNormBackwardStats implements Backend: sumDyXhat = invStd * Σ dy*(x-mean).
func (c *CPU) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *Tensor) {
	dyd, xd, md, id := mustHost(dy), mustHost(x), mustHost(mean), mustHost(invStd)
	n, ch, hw := planeSize(x)
	s := growF64(&c.chn, 2*ch)
	c.planeSums(n, ch, hw, func(u int) (float64, float64) {
		mu := float64(md[u%ch])
		g := dyd[u*hw : u*hw+hw]
		var a, b float64
		for i, v := range xd[u*hw : u*hw+hw] {
			d := float64(g[i])
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

// BatchNormBackward implements Backend as torch's CPU kernel does:
// dx = (dy - (x-mean)*proj - gradMean) * invStd*gamma with
// proj = sumDyXhat*invStd/m and gradMean = sumDy/m.
func (c *CPU) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *Tensor, m int) {
	dxd, dyd, xd := mustHost(dx), mustHost(dy), mustHost(x)
	md, id, gd := mustHost(mean), mustHost(invStd), mustHost(gamma)
	sd, sx := mustHost(sumDy), mustHost(sumDyXhat)
	n, ch, hw := planeSize(x)
	fm := float64(m)
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			k := u % ch
			mu := md[k]
			proj := float32(float64(sx[k]) * float64(id[k]) / fm)
			gradMean := float32(float64(sd[k]) / fm)
			ws := id[k] * gd[k]
			out := dxd[u*hw : u*hw+hw]
			g := dyd[u*hw : u*hw+hw]
			for i, v := range xd[u*hw : u*hw+hw] {
				out[i] = (g[i] - (v-mu)*proj - gradMean) * ws
			}
		}
	})
}

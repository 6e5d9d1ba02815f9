package nn

import "math"

// Batch-normalisation ops of the CPU backend. Per-channel reductions are
// computed per (n, c) plane in float64 (the fixed unit of work), then the
// planes of each channel are added in order of n. Within a plane the sum
// runs in interleaved float64 lanes, a fixed order that depends on the
// plane size only, with independent addition chains instead of one (a
// single chain waits for each add's latency: 4 cycles per element):
// planes of fewer than wideLanes elements use 4 lanes (element i
// in lane i%4, added as (l0+l1)+(l2+l3)); larger ones use wideLanes
// lanes (element i in lane i%16, added by laneTree), which is what the
// AVX-512 loops (two vectors of 8 float64) compute.

// wideLanes is the number of float64 accumulators of the sum of a plane
// of wideLanes elements or more.
const wideLanes = 16

// laneTree adds 16 lanes as t_j = l_j + l_(j+8), then t_j + t_(j+4), then
// t_j + t_(j+2), then t_0 + t_1.
func laneTree(l *[wideLanes]float64) float64 {
	var t [8]float64
	for j := range t {
		t[j] = l[j] + l[j+8]
	}
	for j := 0; j < 4; j++ {
		t[j] += t[j+4]
	}
	t[0], t[1] = t[0]+t[2], t[1]+t[3]
	return t[0] + t[1]
}

// sumSqWide is sumSq64 over wideLanes lanes.
func sumSqWide(xs []float32) (sum, sumSq float64) {
	if useBNAsm && len(xs) > 0 {
		var out [2]float64
		sumSqAVX512(&xs[0], len(xs), &out)
		return out[0], out[1]
	}
	var a, b [wideLanes]float64
	for i, v := range xs {
		f := float64(v)
		a[i%wideLanes] += f
		b[i%wideLanes] += f * f
	}
	return laneTree(&a), laneTree(&b)
}

// bnBwdSumsWide is sumDyXmu64 (mask unset) or reluSumDyXmu64 (mask set:
// g masked by y > 0 and stored) over wideLanes lanes.
func bnBwdSumsWide(g, y, x []float32, mu float64, mask bool) (sumDy, sumDyXmu float64) {
	g = g[:len(x)]
	if mask {
		y = y[:len(x)]
	}
	if useBNAsm && len(x) > 0 {
		var out [2]float64
		yp := &g[0]
		if mask {
			yp = &y[0]
		}
		bnBwdSumsAVX512(&g[0], yp, &x[0], len(x), mu, mask, &out)
		return out[0], out[1]
	}
	var a, b [wideLanes]float64
	for i, v := range x {
		gm := g[i]
		if mask {
			gm = math.Float32frombits(math.Float32bits(gm) & positiveMask(y[i]))
			g[i] = gm
		}
		d := float64(gm)
		a[i%wideLanes] += d
		b[i%wideLanes] += d * (float64(v) - mu)
	}
	return laneTree(&a), laneTree(&b)
}

// sumSq64 returns the float64 sums of v and of v*v over the plane xs
// (lanes as described above).
func sumSq64(xs []float32) (sum, sumSq float64) {
	if len(xs) >= wideLanes {
		return sumSqWide(xs)
	}
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(xs); i += 4 {
		v := xs[i : i+4 : i+4]
		f0, f1, f2, f3 := float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])
		a0, a1, a2, a3 = a0+f0, a1+f1, a2+f2, a3+f3
		b0, b1, b2, b3 = b0+f0*f0, b1+f1*f1, b2+f2*f2, b3+f3*f3
	}
	if i < len(xs) {
		f := float64(xs[i])
		a0, b0 = a0+f, b0+f*f
	}
	if i+1 < len(xs) {
		f := float64(xs[i+1])
		a1, b1 = a1+f, b1+f*f
	}
	if i+2 < len(xs) {
		f := float64(xs[i+2])
		a2, b2 = a2+f, b2+f*f
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// sumDyXmu64 returns the float64 sums of g and of g*(x-mu) over a plane
// (len(x) == len(g); lanes as described above).
func sumDyXmu64(g, x []float32, mu float64) (sumDy, sumDyXmu float64) {
	if len(x) >= wideLanes {
		return bnBwdSumsWide(g, nil, x, mu, false)
	}
	g = g[:len(x)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v, d := x[i:i+4:i+4], g[i:i+4:i+4]
		d0, d1, d2, d3 := float64(d[0]), float64(d[1]), float64(d[2]), float64(d[3])
		a0, a1, a2, a3 = a0+d0, a1+d1, a2+d2, a3+d3
		b0 += d0 * (float64(v[0]) - mu)
		b1 += d1 * (float64(v[1]) - mu)
		b2 += d2 * (float64(v[2]) - mu)
		b3 += d3 * (float64(v[3]) - mu)
	}
	if i < len(x) {
		d := float64(g[i])
		a0, b0 = a0+d, b0+d*(float64(x[i])-mu)
	}
	if i+1 < len(x) {
		d := float64(g[i+1])
		a1, b1 = a1+d, b1+d*(float64(x[i+1])-mu)
	}
	if i+2 < len(x) {
		d := float64(g[i+2])
		a2, b2 = a2+d, b2+d*(float64(x[i+2])-mu)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// planeSums computes, for every plane u = n*C + c, two float64 sums into
// acc[u] and acc[N*C+u] (f(lo, hi, s1, s2) fills s1[u], s2[u] for the
// planes u in [lo, hi)), then reduces them per channel into out1[c] and
// out2[c] (float64).
func (c *CPU) planeSums(n, ch, hw int, f func(lo, hi int, s1, s2 []float64), out1, out2 []float64) {
	nc := n * ch
	acc := growF64(&c.acc, 2*nc)
	c.parallel(nc, max(1, elemGrain/hw), func(lo, hi int) {
		f(lo, hi, acc[:nc], acc[nc:])
	})
	// Per channel in order of n; image-major, so the channels' sums are
	// independent chains over contiguous memory.
	out1, out2 = out1[:ch], out2[:ch]
	clear(out1)
	clear(out2)
	for i := 0; i < n; i++ {
		a, b := acc[i*ch:i*ch+ch], acc[nc+i*ch:nc+i*ch+ch]
		for k := range out1 {
			out1[k] += a[k]
			out2[k] += b[k]
		}
	}
}

// BatchNormStats implements Backend.
func (c *CPU) BatchNormStats(sum, sumSq, x *Tensor) {
	xd := mustHost(x)
	n, ch, hw := planeSize(x)
	s1 := growF64(&c.chn, 2*ch)
	c.planeSums(n, ch, hw, func(lo, hi int, a, b []float64) {
		if hw == 1 {
			for u, v := range xd[lo:hi] {
				f := float64(v)
				a[lo+u], b[lo+u] = f, f*f
			}
			return
		}
		if hw == 4 { // one element per lane (+0 for -0 partials: the same channel sums)
			for u := lo; u < hi; u++ {
				v := xd[u*4 : u*4+4 : u*4+4]
				f0, f1, f2, f3 := float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])
				a[u], b[u] = (f0+f1)+(f2+f3), (f0*f0+f1*f1)+(f2*f2+f3*f3)
			}
			return
		}
		for u := lo; u < hi; u++ {
			a[u], b[u] = sumSq64(xd[u*hw : u*hw+hw])
		}
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
	c.bnApply(mustHost(y), mustHost(x), x, mean, invStd, gamma, beta, false)
}

// bnApply is BatchNormForward, followed by the ReLU when relu is set. The
// per-channel alpha and shift are computed once (the same float32
// operations as per plane), and the channel of each plane is tracked
// without a division: for small planes both cost more than the plane.
func (c *CPU) bnApply(yd, xd []float32, x, mean, invStd, gamma, beta *Tensor, relu bool) {
	md, id, gd, bd := mustHost(mean), mustHost(invStd), mustHost(gamma), mustHost(beta)
	n, ch, hw := planeSize(x)
	coef := growF32(&c.coef, 2*ch)
	for k := 0; k < ch; k++ {
		alpha := id[k] * gd[k]
		coef[2*k], coef[2*k+1] = alpha, bd[k]-md[k]*alpha
	}
	if useBNAsm && n*ch*hw > 0 {
		_, _ = yd[n*ch*hw-1], xd[n*ch*hw-1]
		cv := c.bnVecCoef(coef, 2, ch, hw)
		blk := len(cv) / (2 * ch)
		c.bnVector(n, ch, hw, func(off, k, cnt, cstep int) {
			bnApplyAVX512(&yd[off], &xd[off], &cv[k*blk], &cv[(ch+k)*blk], cnt, cstep, relu)
		})
		return
	}
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		k := lo % ch
		for u := lo; u < hi; u++ {
			alpha, shift := coef[2*k], coef[2*k+1]
			out, in := yd[u*hw:u*hw+hw], xd[u*hw:u*hw+hw]
			if relu {
				for i, v := range in {
					out[i] = relu32(v*alpha + shift)
				}
			} else {
				for i, v := range in {
					out[i] = v*alpha + shift
				}
			}
			if k++; k == ch {
				k = 0
			}
		}
	})
}

// BatchNormBackwardStats implements Backend: sumDyXhat = invStd * Σ dy*(x-mean).
func (c *CPU) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *Tensor) {
	dyd, xd, md, id := mustHost(dy), mustHost(x), mustHost(mean), mustHost(invStd)
	n, ch, hw := planeSize(x)
	s := growF64(&c.chn, 2*ch)
	c.planeSums(n, ch, hw, func(lo, hi int, a, b []float64) {
		k := lo % ch
		for u := lo; u < hi; u++ {
			if hw == 1 { // one element: its lane is the sum
				d := float64(dyd[u])
				a[u], b[u] = d, d*(float64(xd[u])-float64(md[k]))
			} else if hw == 4 { // one element per lane
				a[u], b[u] = sums4(dyd[u*4:u*4+4], xd[u*4:u*4+4], float64(md[k]))
			} else {
				a[u], b[u] = sumDyXmu64(dyd[u*hw:u*hw+hw], xd[u*hw:u*hw+hw], float64(md[k]))
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

// BatchNormBackward implements Backend as torch's CPU kernel does:
// dx = (dy - (x-mean)*proj - gradMean) * invStd*gamma with
// proj = sumDyXhat*invStd/m and gradMean = sumDy/m.
func (c *CPU) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *Tensor, m int) {
	dxd, dyd, xd := mustHost(dx), mustHost(dy), mustHost(x)
	md, id, gd := mustHost(mean), mustHost(invStd), mustHost(gamma)
	sd, sx := mustHost(sumDy), mustHost(sumDyXhat)
	n, ch, hw := planeSize(x)
	fm := float64(m)
	// Per channel, once: mean, proj, gradMean, invStd*gamma.
	coef := growF32(&c.coef, 4*ch)
	for k := 0; k < ch; k++ {
		coef[4*k] = md[k]
		coef[4*k+1] = float32(float64(sx[k]) * float64(id[k]) / fm)
		coef[4*k+2] = float32(float64(sd[k]) / fm)
		coef[4*k+3] = id[k] * gd[k]
	}
	if useBNAsm && n*ch*hw > 0 {
		_, _ = dxd[n*ch*hw-1], dyd[n*ch*hw-1]
		cv := c.bnVecCoef(coef, 4, ch, hw)
		blk := len(cv) / (4 * ch)
		c.bnVector(n, ch, hw, func(off, k, cnt, cstep int) {
			bnBackwardAVX512(&dxd[off], &dyd[off], &xd[off], &cv[k*blk], &cv[(ch+k)*blk],
				&cv[(2*ch+k)*blk], &cv[(3*ch+k)*blk], cnt, cstep)
		})
		return
	}
	c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
		k := lo % ch
		for u := lo; u < hi; u++ {
			cf := coef[4*k : 4*k+4 : 4*k+4]
			mu, proj, gradMean, ws := cf[0], cf[1], cf[2], cf[3]
			out := dxd[u*hw : u*hw+hw]
			g := dyd[u*hw : u*hw+hw]
			for i, v := range xd[u*hw : u*hw+hw] {
				out[i] = (g[i] - (v-mu)*proj - gradMean) * ws
			}
			if k++; k == ch {
				k = 0
			}
		}
	})
}

// bnVecCoef lays out the per-channel coefficients coef (m per channel,
// interleaved) for the vector loops, as m arrays of ch blocks: for planes
// of 16 elements and more, a block is 16 copies of the channel's value
// (the loop repeats it: cstep 0); for smaller planes, hw copies, so that
// the m arrays run along a whole image (cstep 64).
func (c *CPU) bnVecCoef(coef []float32, m, ch, hw int) []float32 {
	blk := min(hw, 16)
	cv := growF32(&c.coefv, m*ch*blk)
	for j := 0; j < m; j++ {
		for k := 0; k < ch; k++ {
			v, b := coef[m*k+j], cv[(j*ch+k)*blk:][:blk]
			for i := range b {
				b[i] = v
			}
		}
	}
	return cv
}

// bnVector runs a vector BatchNorm loop over (n, ch, hw) elements in
// parallel: f(off, k, cnt, cstep) handles cnt elements from element off,
// starting at channel k's coefficient block: one call per plane (cstep 0)
// for planes of 16 elements and more, else one per image (cstep 64).
func (c *CPU) bnVector(n, ch, hw int, f func(off, k, cnt, cstep int)) {
	if hw >= 16 {
		c.parallel(n*ch, max(1, elemGrain/hw), func(lo, hi int) {
			k := lo % ch
			for u := lo; u < hi; u++ {
				f(u*hw, k, hw, 0)
				if k++; k == ch {
					k = 0
				}
			}
		})
		return
	}
	chw := ch * hw
	c.parallel(n, max(1, elemGrain/chw), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			f(i*chw, 0, chw, 64)
		}
	})
}

// sums4 is sumDyXmu64 of a 4-element plane: one element per lane, added
// as (l0+l1)+(l2+l3) (a -0 partial may come out +0: the same channel
// sums, which start at +0).
func sums4(g, x []float32, mu float64) (sumDy, sumDyXmu float64) {
	g, x = g[:4:4], x[:4:4]
	d0, d1, d2, d3 := float64(g[0]), float64(g[1]), float64(g[2]), float64(g[3])
	return (d0 + d1) + (d2 + d3),
		(d0*(float64(x[0])-mu) + d1*(float64(x[1])-mu)) + (d2*(float64(x[2])-mu) + d3*(float64(x[3])-mu))
}

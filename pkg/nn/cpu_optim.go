package nn

import (
	"fmt"
	"math"
)

// Optimizer kernels of the CPU backend.
//
// Each kernel reproduces torch.optim's single-tensor (foreach=False) update
// of torch 1.13 operation by operation, in float32, with torch's rounding:
//
//   - a Python-float hyper-parameter is rounded to float32 where torch hands
//     it to a tensor op; scalars torch derives in Python (1-beta1, lr/bc1,
//     1-lr*wd, …) are derived in float64 first, as Python does;
//   - t.add(u, alpha=a) is a fused multiply-add, round(t + a*u) with one
//     rounding, because torch's vectorised CPU kernel computes it with
//     vec::fmadd (an FMA instruction on AVX2/AVX-512 machines);
//   - addcmul (t + v*u1*u2) is fma(v*u1, u2, t): the product v*u1 is
//     rounded, the rest fused, because GCC contracts the kernel's vector
//     multiply and add into an FMA (torch 1.13 is built with
//     -ffp-contract=fast semantics and -mfma for its AVX2/AVX-512 kernels);
//   - addcdiv (t + v*u1/u2) rounds after every operation, left to right;
//   - every float32 expression below is written with explicit conversions,
//     which stop the Go compiler from fusing a*b+c on its own (the Go spec
//     allows fusion otherwise, and arm64 does it).
//
// Elements are independent, so splitting them across goroutines cannot
// change a result: the kernels are deterministic for any thread count.

// hostData returns t's host storage, panicking on a device tensor or a size
// mismatch: handing a CPU kernel anything else is a programming error.
func hostData(what string, t *Tensor, n int) []float32 {
	if t == nil || t.Data == nil {
		panic(fmt.Sprintf("nn: cpu optimizer kernel: %s is not a host tensor", what))
	}
	if len(t.Data) != n {
		panic(fmt.Sprintf("nn: cpu optimizer kernel: %s has %d elements, want %d", what, len(t.Data), n))
	}
	return t.Data
}

// fma32 returns a*b+c rounded once to float32, as an FMA instruction does.
//
// Fast path: math.FMA (one hardware instruction where the CPU has FMA)
// rounds the exact value once to float64; rounding that to float32 is the
// correct rounding of the exact value unless the float64 result sits
// exactly on a float32 rounding midpoint (low 29 mantissa bits 1000...0)
// or below float32's normal range (where float32 has fewer bits), the only
// cases where double rounding can differ. Those, zeros, infinities and NaNs
// take fma32Exact.
func fma32(a, b, c float32) float32 {
	r := math.FMA(float64(a), float64(b), float64(c))
	u := math.Float64bits(r)
	// Biased exponent in [897, 2047): 2^-126 <= |r| < Inf (and not NaN).
	if (u>>52)&0x7ff-897 < 0x7ff-897 && u&0x1fffffff != 0x10000000 {
		return float32(r)
	}
	return fma32Exact(a, b, c)
}

// fma32Exact is fma32 without hardware help.
//
// The product of two float32 values is exact in float64; the sum is
// rounded to float64 with its exact error recovered (TwoSum), then rounded
// to odd (an inexact result with an even last bit moves one float64 ulp
// towards the exact value). Rounding a round-to-odd value with 53 bits to
// 24 bits is correct rounding of the exact value, so no double-rounding
// error can occur.
func fma32Exact(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact
	cc := float64(c)
	s := float64(p + cc)
	bv := float64(s - p)
	e := float64(float64(p-float64(s-bv)) + float64(cc-bv))
	if e != 0 && e == e { // inexact (e is NaN when s is infinite)
		bits := math.Float64bits(s)
		if bits&1 == 0 {
			if (e > 0) == (s > 0) {
				bits++
			} else {
				bits--
			}
			s = math.Float64frombits(bits)
		}
	}
	return float32(s)
}

// sqrt32 is a correctly rounded float32 square root (a float64 square root
// of a float32 rounds correctly to float32: 53 >= 2*24+2).
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// SGDStep implements Backend; torch 1.13 _single_tensor_sgd:
//
//	d = g + wd*p                          (grad.add(p, alpha=wd), when wd != 0)
//	buf = d (first) | buf*mom + (1-damp)*d (buf.mul_(mom).add_(d, alpha=1-damp))
//	d = d + mom*buf (nesterov) | buf       (when mom != 0)
//	p = p - lr*d                           (p.add_(d, alpha=-lr))
//
// buf may be nil when Momentum is 0.
func (c *CPU) SGDStep(p, g, buf *Tensor, o SGDParams, first bool) {
	n := p.Numel()
	pd, gd := hostData("param", p, n), hostData("grad", g, n)
	wd := float32(o.WeightDecay)
	mom := float32(o.Momentum)
	damp1 := float32(1 - float64(o.Dampening))
	negLR := float32(-float64(o.LR))
	var bd []float32
	if mom != 0 {
		bd = hostData("momentum buffer", buf, n)
	}
	nesterov := o.Nesterov
	vector := mom != 0 && !first && damp1 == 1 && !nesterov && wd != 0
	c.parallel(n, elemGrain, func(lo, hi int) {
		if vector { // the common case, bit-identical (cpu_sgd_amd64.go)
			lo += sgdMomentumVector(pd[lo:hi], gd[lo:hi], bd[lo:hi], wd, mom, negLR)
		}
		for i := lo; i < hi; i++ {
			d := gd[i]
			if wd != 0 {
				d = fma32(pd[i], wd, d)
			}
			if mom != 0 {
				b := d
				if !first {
					bm := float32(bd[i] * mom) // the conversion forbids fusing
					if damp1 == 1 {
						b = d + bm // = fma32(d, 1, bm): one float32 rounding either way
					} else {
						b = fma32(d, damp1, bm)
					}
				}
				bd[i] = b
				if nesterov {
					d = fma32(b, mom, d)
				} else {
					d = b
				}
			}
			pd[i] = fma32(d, negLR, pd[i])
		}
	})
}

// AdamStep implements Backend; torch 1.13 _single_tensor_adam (Decoupled
// false) and _single_tensor_adamw (Decoupled true), step t = o.Step:
//
//	p = p * (1 - lr*wd)                  (AdamW only)
//	d = g + wd*p                         (Adam only, when wd != 0)
//	m = m*beta1 + (1-beta1)*d            (m.mul_(beta1).add_(d, alpha=1-beta1))
//	v = v*beta2 + (1-beta2)*d*d          (v.mul_(beta2).addcmul_(d, d, value=1-beta2))
//	vMax = max(vMax, v)                  (AMSGrad; then used instead of v)
//	denom = sqrt(v)/sqrt(1-beta2^t) + eps
//	p = p + (-(lr/(1-beta1^t)) * m) / denom   (p.addcdiv_(m, denom, value=-step_size))
//
// The bias corrections and the step size are float64, as in Python.
// vMax may be nil unless AMSGrad.
func (c *CPU) AdamStep(p, g, m, v, vMax *Tensor, o AdamParams) {
	n := p.Numel()
	pd, gd := hostData("param", p, n), hostData("grad", g, n)
	md, vd := hostData("exp_avg", m, n), hostData("exp_avg_sq", v, n)
	var vmd []float32
	if o.AMSGrad {
		vmd = hostData("max_exp_avg_sq", vMax, n)
	}
	lr, wd64 := float64(o.LR), float64(o.WeightDecay)
	beta1, beta2 := float64(o.Beta1), float64(o.Beta2)
	t := float64(o.Step)
	bc1 := 1 - math.Pow(beta1, t)
	bc2 := 1 - math.Pow(beta2, t)
	negStepSize := float32(-(lr / bc1))
	bc2Sqrt := float32(math.Sqrt(bc2))
	eps := float32(o.Eps)
	b1, b2 := float32(beta1), float32(beta2)
	omb1, omb2 := float32(1-beta1), float32(1-beta2)
	decoupled := o.Decoupled
	decay := float32(1 - lr*wd64)
	wd := float32(wd64)
	ams := o.AMSGrad
	c.parallel(n, elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			pi := pd[i]
			d := gd[i]
			if decoupled {
				pi = float32(pi * decay)
			} else if wd != 0 {
				d = fma32(pi, wd, d)
			}
			mi := fma32(d, omb1, float32(md[i]*b1))
			vi := fma32(float32(omb2*d), d, float32(vd[i]*b2))
			md[i], vd[i] = mi, vi
			if ams {
				vm := vmd[i]
				if vi > vm || vi != vi {
					vm = vi
				}
				vmd[i] = vm
				vi = vm
			}
			denom := float32(sqrt32(vi)/bc2Sqrt) + eps
			pd[i] = pi + float32(float32(negStepSize*mi)/denom)
		}
	})
}

// AdagradStep implements Backend; torch 1.13 _single_tensor_adagrad (dense):
//
//	d = g + wd*p                         (when wd != 0)
//	clr = lr / (1 + (t-1)*lr_decay)      (float64)
//	sum = sum + d*d                      (sum.addcmul_(d, d, value=1))
//	p = p + (-clr * d) / (sqrt(sum) + eps)
func (c *CPU) AdagradStep(p, g, sum *Tensor, o AdagradParams) {
	n := p.Numel()
	pd, gd, sd := hostData("param", p, n), hostData("grad", g, n), hostData("sum", sum, n)
	wd := float32(o.WeightDecay)
	clr := float64(o.LR) / (1 + float64(o.Step-1)*float64(o.LRDecay))
	negCLR := float32(-clr)
	eps := float32(o.Eps)
	c.parallel(n, elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			d := gd[i]
			if wd != 0 {
				d = fma32(pd[i], wd, d)
			}
			s := fma32(d, d, sd[i])
			sd[i] = s
			std := sqrt32(s) + eps
			pd[i] = pd[i] + float32(float32(negCLR*d)/std)
		}
	})
}

// RMSpropStep implements Backend; torch 1.13 _single_tensor_rmsprop:
//
//	d = g + wd*p                             (when wd != 0)
//	sq = sq*alpha + (1-alpha)*d*d            (sq.mul_(alpha).addcmul_(d, d, value=1-alpha))
//	gAvg = gAvg*alpha + (1-alpha)*d          (centered: gAvg.mul_(alpha).add_(d, alpha=1-alpha))
//	avg = sqrt(sq - gAvg*gAvg) | sqrt(sq), then avg += eps
//	buf = buf*mom + d/avg; p = p - lr*buf    (momentum > 0)
//	p = p + (-lr*d)/avg                      (otherwise)
//
// buf may be nil unless Momentum > 0, gAvg unless Centered.
func (c *CPU) RMSpropStep(p, g, sq, buf, gAvg *Tensor, o RMSpropParams) {
	n := p.Numel()
	pd, gd, sqd := hostData("param", p, n), hostData("grad", g, n), hostData("square_avg", sq, n)
	var bd, gad []float32
	mom := float32(o.Momentum)
	if o.Momentum > 0 {
		bd = hostData("momentum_buffer", buf, n)
	}
	centered := o.Centered
	if centered {
		gad = hostData("grad_avg", gAvg, n)
	}
	wd := float32(o.WeightDecay)
	alpha := float32(o.Alpha)
	oma := float32(1 - float64(o.Alpha))
	eps := float32(o.Eps)
	negLR := float32(-float64(o.LR))
	useMom := o.Momentum > 0
	c.parallel(n, elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			d := gd[i]
			if wd != 0 {
				d = fma32(pd[i], wd, d)
			}
			s := fma32(float32(oma*d), d, float32(sqd[i]*alpha))
			sqd[i] = s
			var avg float32
			if centered {
				ga := fma32(d, oma, float32(gad[i]*alpha))
				gad[i] = ga
				avg = sqrt32(fma32(-ga, ga, s)) // square_avg.addcmul(ga, ga, value=-1)
			} else {
				avg = sqrt32(s)
			}
			avg += eps
			if useMom {
				b := float32(bd[i]*mom) + float32(d/avg)
				bd[i] = b
				pd[i] = fma32(b, negLR, pd[i])
			} else {
				pd[i] = pd[i] + float32(float32(negLR*d)/avg)
			}
		}
	})
}

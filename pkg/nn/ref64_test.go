package nn

import (
	"math"
	"testing"
)

// Float64 reference implementations of every op, as plain loops. They are
// checked against central differences (TestRefGradients) and then serve as
// the truth the float32 CPU backend is compared with.

func convRef(x, w []float64, p ConvParams) []float64 {
	P, Q := p.P(), p.Q()
	y := make([]float64, p.N*p.K*P*Q)
	for n := 0; n < p.N; n++ {
		for k := 0; k < p.K; k++ {
			for oh := 0; oh < P; oh++ {
				for ow := 0; ow < Q; ow++ {
					var s float64
					for c := 0; c < p.C; c++ {
						for r := 0; r < p.R; r++ {
							for q := 0; q < p.S; q++ {
								ih, iw := oh*p.StrideH-p.PadH+r, ow*p.StrideW-p.PadW+q
								if ih < 0 || ih >= p.H || iw < 0 || iw >= p.W {
									continue
								}
								s += x[((n*p.C+c)*p.H+ih)*p.W+iw] * w[((k*p.C+c)*p.R+r)*p.S+q]
							}
						}
					}
					y[((n*p.K+k)*P+oh)*Q+ow] = s
				}
			}
		}
	}
	return y
}

func convBackRef(dy, x, w []float64, p ConvParams) (dx, dw []float64) {
	P, Q := p.P(), p.Q()
	dx, dw = make([]float64, len(x)), make([]float64, len(w))
	for n := 0; n < p.N; n++ {
		for k := 0; k < p.K; k++ {
			for oh := 0; oh < P; oh++ {
				for ow := 0; ow < Q; ow++ {
					g := dy[((n*p.K+k)*P+oh)*Q+ow]
					for c := 0; c < p.C; c++ {
						for r := 0; r < p.R; r++ {
							for q := 0; q < p.S; q++ {
								ih, iw := oh*p.StrideH-p.PadH+r, ow*p.StrideW-p.PadW+q
								if ih < 0 || ih >= p.H || iw < 0 || iw >= p.W {
									continue
								}
								xi, wi := ((n*p.C+c)*p.H+ih)*p.W+iw, ((k*p.C+c)*p.R+r)*p.S+q
								dx[xi] += g * w[wi]
								dw[wi] += g * x[xi]
							}
						}
					}
				}
			}
		}
	}
	return dx, dw
}

// addBiasRef / biasBackRef: y[n,c,...] += b[c]; db[c] = Σ dy.
func addBiasRef(y, b []float64, n, c, hw int) {
	for i := 0; i < n*c*hw; i++ {
		y[i] += b[(i/hw)%c]
	}
}

func biasBackRef(dy []float64, n, c, hw int) []float64 {
	db := make([]float64, c)
	for i := 0; i < n*c*hw; i++ {
		db[(i/hw)%c] += dy[i]
	}
	return db
}

// bnTrainRef normalises with the biased batch variance.
func bnTrainRef(x, gamma, beta []float64, n, c, hw int, eps float64) (y, mean, invStd, varBiased []float64) {
	m := float64(n * hw)
	mean, invStd, varBiased = make([]float64, c), make([]float64, c), make([]float64, c)
	for i, v := range x {
		mean[(i/hw)%c] += v
	}
	for k := range mean {
		mean[k] /= m
	}
	for i, v := range x {
		d := v - mean[(i/hw)%c]
		varBiased[(i/hw)%c] += d * d
	}
	for k := range varBiased {
		varBiased[k] /= m
		invStd[k] = 1 / math.Sqrt(varBiased[k]+eps)
	}
	y = make([]float64, len(x))
	for i, v := range x {
		k := (i / hw) % c
		y[i] = (v-mean[k])*invStd[k]*gamma[k] + beta[k]
	}
	return y, mean, invStd, varBiased
}

// bnTrainBackRef is the textbook batch-norm backward.
func bnTrainBackRef(dy, x, gamma, mean, invStd []float64, n, c, hw int) (dx, dgamma, dbeta []float64) {
	m := float64(n * hw)
	dgamma, dbeta = make([]float64, c), make([]float64, c)
	sumDxhat, sumDxhatXhat := make([]float64, c), make([]float64, c)
	for i, g := range dy {
		k := (i / hw) % c
		xhat := (x[i] - mean[k]) * invStd[k]
		dgamma[k] += g * xhat
		dbeta[k] += g
		sumDxhat[k] += g * gamma[k]
		sumDxhatXhat[k] += g * gamma[k] * xhat
	}
	dx = make([]float64, len(x))
	for i, g := range dy {
		k := (i / hw) % c
		xhat := (x[i] - mean[k]) * invStd[k]
		dx[i] = invStd[k] / m * (m*g*gamma[k] - sumDxhat[k] - xhat*sumDxhatXhat[k])
	}
	return dx, dgamma, dbeta
}

func bnEvalRef(x, gamma, beta, rm, rv []float64, c, hw int, eps float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		k := (i / hw) % c
		y[i] = (v-rm[k])/math.Sqrt(rv[k]+eps)*gamma[k] + beta[k]
	}
	return y
}

func reluRef(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = math.Max(v, 0)
	}
	return y
}

func reluBackRef(dy, y []float64) []float64 {
	dx := make([]float64, len(dy))
	for i := range dy {
		if y[i] > 0 {
			dx[i] = dy[i]
		}
	}
	return dx
}

// maxPoolRef returns y and the flat in-plane index of each maximum (first
// maximum in row-major window order; padding never wins).
func maxPoolRef(x []float64, p PoolParams) (y []float64, arg []int) {
	P, Q := p.P(), p.Q()
	y, arg = make([]float64, p.N*p.C*P*Q), make([]int, p.N*p.C*P*Q)
	for u := 0; u < p.N*p.C; u++ {
		for oh := 0; oh < P; oh++ {
			for ow := 0; ow < Q; ow++ {
				best, bi := math.Inf(-1), -1
				for r := 0; r < p.Kernel; r++ {
					for q := 0; q < p.Kernel; q++ {
						ih, iw := oh*p.Stride-p.Pad+r, ow*p.Stride-p.Pad+q
						if ih < 0 || ih >= p.H || iw < 0 || iw >= p.W {
							continue
						}
						if v := x[u*p.H*p.W+ih*p.W+iw]; bi < 0 || v > best {
							best, bi = v, ih*p.W+iw
						}
					}
				}
				y[(u*P+oh)*Q+ow], arg[(u*P+oh)*Q+ow] = best, bi
			}
		}
	}
	return y, arg
}

func maxPoolBackRef(dy []float64, arg []int, p PoolParams) []float64 {
	dx := make([]float64, p.N*p.C*p.H*p.W)
	pq := p.P() * p.Q()
	for i, g := range dy {
		dx[(i/pq)*p.H*p.W+arg[i]] += g
	}
	return dx
}

func avgPoolRef(x []float64, nc, hw int) []float64 {
	y := make([]float64, nc)
	for i, v := range x {
		y[i/hw] += v / float64(hw)
	}
	return y
}

func avgPoolBackRef(dy []float64, hw int) []float64 {
	dx := make([]float64, len(dy)*hw)
	for i := range dx {
		dx[i] = dy[i/hw] / float64(hw)
	}
	return dx
}

// linearRef: y = x w^T + b.
func linearRef(x, w, b []float64, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for i := 0; i < n; i++ {
		for o := 0; o < out; o++ {
			s := b[o]
			for j := 0; j < in; j++ {
				s += x[i*in+j] * w[o*in+j]
			}
			y[i*out+o] = s
		}
	}
	return y
}

func linearBackRef(dy, x, w []float64, n, in, out int) (dx, dw, db []float64) {
	dx, dw, db = make([]float64, n*in), make([]float64, out*in), make([]float64, out)
	for i := 0; i < n; i++ {
		for o := 0; o < out; o++ {
			g := dy[i*out+o]
			db[o] += g
			for j := 0; j < in; j++ {
				dx[i*in+j] += g * w[o*in+j]
				dw[o*in+j] += g * x[i*in+j]
			}
		}
	}
	return dx, dw, db
}

// crossEntropyRef is torch's label-smoothed mean cross entropy and its
// gradient, written from the definition with log-softmax.
func crossEntropyRef(logits []float64, labels []int32, n, k int, s float64) (float64, []float64) {
	var loss float64
	grad := make([]float64, n*k)
	for i := 0; i < n; i++ {
		row := logits[i*k : (i+1)*k]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var se float64
		for _, v := range row {
			se += math.Exp(v - mx)
		}
		logp := make([]float64, k)
		for j, v := range row {
			logp[j] = v - mx - math.Log(se)
		}
		y := int(labels[i])
		var smooth float64
		for j := range logp {
			smooth -= logp[j] / float64(k)
		}
		loss += ((1-s)*(-logp[y]) + s*smooth) / float64(n)
		for j := range logp {
			g := math.Exp(logp[j]) - s/float64(k)
			if j == y {
				g -= 1 - s
			}
			grad[i*k+j] = g / float64(n)
		}
	}
	return loss, grad
}

// ---- helpers ----

// randVec returns n normal values times scale, each exactly representable
// in float32 (so float32 and float64 code see the same inputs).
func randVec(r *RNG, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(float32(r.Normal() * scale))
	}
	return v
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// checkNumGrad compares analytic gradient g of f with respect to v against
// central differences at up to 40 positions.
func checkNumGrad(t *testing.T, what string, f func() float64, v, g []float64) {
	t.Helper()
	const h = 1e-5
	step := max(1, len(v)/40)
	worst := 0.0
	for i := 0; i < len(v); i += step {
		old := v[i]
		v[i] = old + h
		fp := f()
		v[i] = old - h
		fm := f()
		v[i] = old
		num := (fp - fm) / (2 * h)
		e := math.Abs(num-g[i]) / math.Max(1, math.Abs(num))
		worst = math.Max(worst, e)
		if e > 1e-6 {
			t.Errorf("%s[%d]: analytic %.10g, numeric %.10g", what, i, g[i], num)
			return
		}
	}
	t.Logf("%s: worst relative error %.2e", what, worst)
}

func TestRefGradients(t *testing.T) {
	r := NewRNG(7)
	t.Run("conv", func(t *testing.T) {
		for _, p := range []ConvParams{
			{N: 2, C: 3, H: 5, W: 6, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
			{N: 1, C: 2, H: 7, W: 7, K: 3, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
			{N: 2, C: 2, H: 4, W: 5, K: 2, R: 1, S: 1, StrideH: 2, StrideW: 2},
		} {
			x, w := randVec(r, p.N*p.C*p.H*p.W, 1), randVec(r, p.K*p.C*p.R*p.S, 1)
			b := randVec(r, p.K, 1)
			rw := randVec(r, p.N*p.K*p.P()*p.Q(), 1)
			f := func() float64 {
				y := convRef(x, w, p)
				addBiasRef(y, b, p.N, p.K, p.P()*p.Q())
				return dot(y, rw)
			}
			dx, dw := convBackRef(rw, x, w, p)
			checkNumGrad(t, "conv dx", f, x, dx)
			checkNumGrad(t, "conv dw", f, w, dw)
			checkNumGrad(t, "conv db", f, b, biasBackRef(rw, p.N, p.K, p.P()*p.Q()))
		}
	})
	t.Run("batchnorm", func(t *testing.T) {
		n, c, hw := 3, 4, 5
		x, gamma, beta := randVec(r, n*c*hw, 2), randVec(r, c, 1), randVec(r, c, 1)
		rw := randVec(r, n*c*hw, 1)
		f := func() float64 {
			y, _, _, _ := bnTrainRef(x, gamma, beta, n, c, hw, 1e-5)
			return dot(y, rw)
		}
		_, mean, invStd, _ := bnTrainRef(x, gamma, beta, n, c, hw, 1e-5)
		dx, dg, db := bnTrainBackRef(rw, x, gamma, mean, invStd, n, c, hw)
		checkNumGrad(t, "bn dx", f, x, dx)
		checkNumGrad(t, "bn dgamma", f, gamma, dg)
		checkNumGrad(t, "bn dbeta", f, beta, db)
		rm, rv := randVec(r, c, 1), randVec(r, c, 0)
		for i := range rv {
			rv[i] = 0.5 + float64(i)
		}
		fe := func() float64 { return dot(bnEvalRef(x, gamma, beta, rm, rv, c, hw, 1e-5), rw) }
		dxe := make([]float64, len(x))
		for i := range dxe {
			k := (i / hw) % c
			dxe[i] = rw[i] * gamma[k] / math.Sqrt(rv[k]+1e-5)
		}
		checkNumGrad(t, "bn eval dx", fe, x, dxe)
	})
	t.Run("relu", func(t *testing.T) {
		x := randVec(r, 50, 1)
		rw := randVec(r, 50, 1)
		f := func() float64 { return dot(reluRef(x), rw) }
		checkNumGrad(t, "relu dx", f, x, reluBackRef(rw, reluRef(x)))
	})
	t.Run("maxpool", func(t *testing.T) {
		p := PoolParams{N: 2, C: 2, H: 7, W: 6, Kernel: 3, Stride: 2, Pad: 1}
		x := randVec(r, p.N*p.C*p.H*p.W, 1)
		rw := randVec(r, p.N*p.C*p.P()*p.Q(), 1)
		f := func() float64 { y, _ := maxPoolRef(x, p); return dot(y, rw) }
		_, arg := maxPoolRef(x, p)
		checkNumGrad(t, "maxpool dx", f, x, maxPoolBackRef(rw, arg, p))
	})
	t.Run("avgpool", func(t *testing.T) {
		x := randVec(r, 2*3*10, 1)
		rw := randVec(r, 6, 1)
		f := func() float64 { return dot(avgPoolRef(x, 6, 10), rw) }
		checkNumGrad(t, "avgpool dx", f, x, avgPoolBackRef(rw, 10))
	})
	t.Run("linear", func(t *testing.T) {
		n, in, out := 3, 5, 4
		x, w, b := randVec(r, n*in, 1), randVec(r, out*in, 1), randVec(r, out, 1)
		rw := randVec(r, n*out, 1)
		f := func() float64 { return dot(linearRef(x, w, b, n, in, out), rw) }
		dx, dw, db := linearBackRef(rw, x, w, n, in, out)
		checkNumGrad(t, "linear dx", f, x, dx)
		checkNumGrad(t, "linear dw", f, w, dw)
		checkNumGrad(t, "linear db", f, b, db)
	})
	t.Run("dropout", func(t *testing.T) {
		x := randVec(r, 20, 1)
		mask := make([]float64, 20)
		for i := range mask {
			if i%3 != 0 {
				mask[i] = 1 / (1 - 0.3)
			}
		}
		rw := randVec(r, 20, 1)
		f := func() float64 {
			var s float64
			for i := range x {
				s += x[i] * mask[i] * rw[i]
			}
			return s
		}
		dx := make([]float64, 20)
		for i := range dx {
			dx[i] = rw[i] * mask[i]
		}
		checkNumGrad(t, "dropout dx", f, x, dx)
	})
	t.Run("crossentropy", func(t *testing.T) {
		n, k := 3, 5
		logits := randVec(r, n*k, 2)
		labels := []int32{0, 4, 2}
		for _, s := range []float64{0, 0.1, 1} {
			f := func() float64 { l, _ := crossEntropyRef(logits, labels, n, k, s); return l }
			_, g := crossEntropyRef(logits, labels, n, k, s)
			checkNumGrad(t, "ce dlogits", f, logits, g)
		}
	})
}

package nn

import (
	"fmt"
	"math"
	"testing"
)

// Whole-model tests: a float64 reference interpreter of the model's units,
// bit-identical results across thread counts, hook order, freezing, head
// replacement and bad input.

// refNet evaluates a Model's units in float64 with the reference ops.
type refNet struct {
	t      *testing.T
	grads  map[*Param][]float64
	runExp map[*Buffer][]float64 // expected running stats after the forward
}

type backFn func(dy []float64) []float64

func pv(p *Param) []float64 { return f64s(p.Value.Data) }

func (rn *refNet) addGrad(p *Param, g []float64) {
	acc := rn.grads[p]
	if acc == nil {
		acc = make([]float64, len(g))
		rn.grads[p] = acc
	}
	for i, v := range g {
		acc[i] += v
	}
}

func (rn *refNet) forward(u unit, x []float64, xs []int, run0 map[*Buffer][]float64) ([]float64, []int, backFn) {
	switch l := u.(type) {
	case *Conv2d:
		p, err := l.convParams(xs)
		if err != nil {
			rn.t.Fatal(err)
		}
		w := pv(l.Weight)
		y := convRef(x, w, p)
		if l.Bias != nil {
			addBiasRef(y, pv(l.Bias), p.N, p.K, p.P()*p.Q())
		}
		return y, []int{p.N, p.K, p.P(), p.Q()}, func(dy []float64) []float64 {
			dx, dw := convBackRef(dy, x, w, p)
			rn.addGrad(l.Weight, dw)
			if l.Bias != nil {
				rn.addGrad(l.Bias, biasBackRef(dy, p.N, p.K, p.P()*p.Q()))
			}
			return dx
		}
	case *BatchNorm2d:
		n, c, hw := xs[0], xs[1], xs[2]*xs[3]
		gamma, beta := pv(l.Weight), pv(l.Bias)
		if l.Train {
			y, mean, invStd, vb := bnTrainRef(x, gamma, beta, n, c, hw, 1e-5)
			m := float64(n * hw)
			rm, rv := make([]float64, c), make([]float64, c)
			for k := 0; k < c; k++ {
				rm[k] = 0.9*run0[l.RunningMean][k] + 0.1*mean[k]
				rv[k] = 0.9*run0[l.RunningVar][k] + 0.1*vb[k]*m/(m-1)
			}
			rn.runExp[l.RunningMean], rn.runExp[l.RunningVar] = rm, rv
			return y, xs, func(dy []float64) []float64 {
				dx, dg, db := bnTrainBackRef(dy, x, gamma, mean, invStd, n, c, hw)
				rn.addGrad(l.Weight, dg)
				rn.addGrad(l.Bias, db)
				return dx
			}
		}
		rm, rv := run0[l.RunningMean], run0[l.RunningVar]
		y := bnEvalRef(x, gamma, beta, rm, rv, c, hw, 1e-5)
		return y, xs, func(dy []float64) []float64 {
			dx, dg, db := make([]float64, len(dy)), make([]float64, c), make([]float64, c)
			for i, g := range dy {
				k := (i / hw) % c
				is := 1 / math.Sqrt(rv[k]+1e-5)
				dx[i] = g * gamma[k] * is
				dg[k] += g * (x[i] - rm[k]) * is
				db[k] += g
			}
			rn.addGrad(l.Weight, dg)
			rn.addGrad(l.Bias, db)
			return dx
		}
	case *ReLU:
		y := reluRef(x)
		return y, xs, func(dy []float64) []float64 { return reluBackRef(dy, y) }
	case *MaxPool2d:
		p, err := l.poolParams(xs)
		if err != nil {
			rn.t.Fatal(err)
		}
		y, arg := maxPoolRef(x, p)
		return y, []int{p.N, p.C, p.P(), p.Q()}, func(dy []float64) []float64 { return maxPoolBackRef(dy, arg, p) }
	case *GlobalAvgPool:
		hw := xs[2] * xs[3]
		return avgPoolRef(x, xs[0]*xs[1], hw), []int{xs[0], xs[1], 1, 1}, func(dy []float64) []float64 {
			return avgPoolBackRef(dy, hw)
		}
	case *Flatten:
		return x, []int{xs[0], numel(xs[1:])}, func(dy []float64) []float64 { return dy }
	case *Dropout:
		if !l.active {
			return x, xs, func(dy []float64) []float64 { return dy }
		}
		mask := f64s(l.mask.view.Data)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] * mask[i]
		}
		return y, xs, func(dy []float64) []float64 {
			dx := make([]float64, len(dy))
			for i := range dy {
				dx[i] = dy[i] * mask[i]
			}
			return dx
		}
	case *Linear:
		w, b := pv(l.Weight), pv(l.Bias)
		n := xs[0]
		y := linearRef(x, w, b, n, l.In, l.Out)
		return y, []int{n, l.Out}, func(dy []float64) []float64 {
			dx, dw, db := linearBackRef(dy, x, w, n, l.In, l.Out)
			rn.addGrad(l.Weight, dw)
			rn.addGrad(l.Bias, db)
			return dx
		}
	case *Block:
		h, hs := x, xs
		var mainBack []backFn
		for _, v := range l.Main {
			var bf backFn
			h, hs, bf = rn.forward(v, h, hs, run0)
			mainBack = append(mainBack, bf)
		}
		s, ss := x, xs
		var downBack []backFn
		for _, v := range l.Down {
			var bf backFn
			s, ss, bf = rn.forward(v, s, ss, run0)
			downBack = append(downBack, bf)
		}
		sum := make([]float64, len(h))
		for i := range h {
			sum[i] = h[i] + s[i]
		}
		y := reluRef(sum)
		return y, hs, func(dy []float64) []float64 {
			g := reluBackRef(dy, y)
			gs := g
			for i := len(downBack) - 1; i >= 0; i-- {
				gs = downBack[i](gs)
			}
			gm := g
			for i := len(mainBack) - 1; i >= 0; i-- {
				gm = mainBack[i](gm)
			}
			dx := make([]float64, len(gm))
			for i := range gm {
				dx[i] = gm[i] + gs[i]
			}
			return dx
		}
	}
	rn.t.Fatalf("refNet: unknown unit %T", u)
	return nil, nil, nil
}

// tinyConfigs are the small models the model tests run.
var tinyConfigs = []struct {
	name string
	cfg  ResNetConfig
	in   []int
}{
	{"resnet18-cifar", ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 1}, []int{3, 3, 12, 12}},
	{"resnet18-imagenet-dropout", ResNetConfig{Depth: 18, Stem: "imagenet", Width: 1.0 / 16, Classes: 7, Dropout: 0.2, Seed: 2}, []int{3, 3, 40, 36}},
	{"resnet50-cifar", ResNetConfig{Depth: 50, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 3}, []int{2, 3, 10, 10}},
}

func testInput(r *RNG, shape []int) ([]float64, []int32) {
	x := randVec(r, numel(shape), 1)
	labels := make([]int32, shape[0])
	for i := range labels {
		labels[i] = int32(r.Uint64() % 7)
	}
	return x, labels
}

func TestModelMatchesFloat64Reference(t *testing.T) {
	for _, tc := range tinyConfigs {
		for _, train := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/train=%v", tc.name, train), func(t *testing.T) {
				b := NewCPU(3)
				m, err := NewResNet(b, tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				r := NewRNG(5)
				if !train {
					// Non-trivial running statistics for evaluation.
					for _, buf := range m.Buffers() {
						if buf.Value != nil {
							for i := range buf.Value.Data {
								buf.Value.Data[i] = float32(0.5 + r.Float64())
							}
						}
					}
				}
				m.SetTrain(train)
				m.SetInputGrad(true)
				run0 := map[*Buffer][]float64{}
				for _, buf := range m.Buffers() {
					if buf.Value != nil {
						run0[buf] = f64s(buf.Value.Data)
					}
				}
				x, labels := testInput(r, tc.in)
				logits, err := m.Forward(hostTensor(x, tc.in...))
				if err != nil {
					t.Fatal(err)
				}
				ce := &CrossEntropy{Smoothing: 0.1}
				loss, dl, err := ce.Compute(b, logits, labels)
				if err != nil {
					t.Fatal(err)
				}
				m.ZeroGrad()
				if err := m.Backward(dl); err != nil {
					t.Fatal(err)
				}

				rn := &refNet{t: t, grads: map[*Param][]float64{}, runExp: map[*Buffer][]float64{}}
				h, hs := x, tc.in
				var backs []backFn
				for _, u := range m.units {
					var bf backFn
					h, hs, bf = rn.forward(u, h, hs, run0)
					backs = append(backs, bf)
				}
				wl, wdl := crossEntropyRef(h, labels, hs[0], hs[1], 0.1)
				expectClose(t, "logits", logits.Data, h, 2e-4)
				if math.Abs(float64(loss)-wl) > 2e-4*math.Max(1, wl) {
					t.Errorf("loss %v, want %v", loss, wl)
				}
				g := wdl
				for i := len(backs) - 1; i >= 0; i-- {
					g = backs[i](g)
				}
				tol := 2e-3
				for _, p := range m.Params() {
					expectClose(t, "grad "+p.Name, p.Grad.Data, rn.grads[p], tol)
				}
				expectClose(t, "input grad", m.InputGrad().Data, g, tol)
				if train {
					for buf, want := range rn.runExp {
						expectClose(t, buf.Name, buf.Value.Data, want, 1e-4)
					}
					for _, buf := range m.Buffers() {
						if buf.Count != nil && *buf.Count != 1 {
							t.Errorf("%s = %d, want 1", buf.Name, *buf.Count)
						}
					}
				}
			})
		}
	}
}

package nn

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"testing"
)

// Optimizers are checked against float64 implementations written from
// torch's documented algorithms (not from the kernels' operation order), on
// small vectors over several steps, for every option combination.

const optimSteps = 6

// testParams returns two trainable parameters and one frozen one.
func testParams() []*Param {
	mk := func(name string, shape []int, vals ...float32) *Param {
		v, _ := FromSlice(append([]float32(nil), vals...), shape...)
		return &Param{Name: name, Value: v, Grad: NewTensor(shape...)}
	}
	return []*Param{
		mk("conv1.weight", []int{2, 3}, 0.5, -1.2, 0.3, 2.0, -0.7, 0.05),
		mk("fc.bias", []int{4}, -0.25, 0.8, 1.5, -3.0),
		mk("frozen.weight", []int{3}, 1, 2, 3),
	}
}

// gradAt is a deterministic gradient for step s: it depends on the current
// parameter value (so errors compound) and changes sign over time.
func gradAt(s, i int, p float64) float64 {
	return 0.3*p + math.Sin(float64(3*s+i+1)) + 0.1*float64(i%3)
}

// refOpt is one float64 reference optimizer step for a parameter vector:
// p, g are the value and gradient; st is the reference's own state.
type refOpt func(p, g []float64, st map[string][]float64, step int)

func runOptim(t *testing.T, newOpt func(b Backend, ps []*Param) (Optimizer, error), ref refOpt, steps int) {
	t.Helper()
	b := NewCPU(2)
	ps := testParams()
	ps[2].Frozen = true
	frozenBefore := append([]float32(nil), ps[2].Value.Data...)
	opt, err := newOpt(b, ps)
	if err != nil {
		t.Fatal(err)
	}
	refP := make([][]float64, 2)
	refSt := make([]map[string][]float64, 2)
	for k := range refP {
		for _, v := range ps[k].Value.Data {
			refP[k] = append(refP[k], float64(v))
		}
		refSt[k] = map[string][]float64{}
	}
	worst := 0.0
	for s := 1; s <= steps; s++ {
		for k := range refP {
			g := make([]float64, len(refP[k]))
			for i := range g {
				// Both sides see the same float32 gradient.
				gv := float32(gradAt(s, i, float64(ps[k].Value.Data[i])))
				ps[k].Grad.Data[i] = gv
				g[i] = float64(gv)
			}
			ref(refP[k], g, refSt[k], s)
		}
		for i := range ps[2].Grad.Data {
			ps[2].Grad.Data[i] = 1 // a frozen param's grad must be ignored
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
		for k := range refP {
			for i, want := range refP[k] {
				got := float64(ps[k].Value.Data[i])
				e := math.Abs(got-want) / math.Max(math.Abs(want), 1e-2)
				worst = math.Max(worst, e)
				if e > 2e-5 {
					t.Fatalf("step %d %s[%d] = %.9g, reference %.9g (rel err %.2g)", s, ps[k].Name, i, got, want, e)
				}
			}
		}
	}
	for i, v := range ps[2].Value.Data {
		if v != frozenBefore[i] {
			t.Fatalf("frozen parameter changed: %v, was %v", ps[2].Value.Data, frozenBefore)
		}
	}
	st, err := opt.State()
	if err != nil {
		t.Fatal(err)
	}
	for key := range st.Tensors {
		if len(key) >= len("frozen.") && key[:len("frozen.")] == "frozen." {
			t.Fatalf("frozen parameter has optimizer state %s", key)
		}
	}
	if _, ok := st.Steps["frozen.weight"]; ok {
		t.Fatalf("frozen parameter has a step count")
	}
	if st.Steps["fc.bias"] != int64(steps) {
		t.Fatalf("fc.bias step = %d, want %d", st.Steps["fc.bias"], steps)
	}
	t.Logf("worst relative error over %d steps: %.3g", steps, worst)
}

func refState(st map[string][]float64, name string, n int, init float64) []float64 {
	v, ok := st[name]
	if !ok {
		v = make([]float64, n)
		for i := range v {
			v[i] = init
		}
		st[name] = v
	}
	return v
}

func TestSGDAllOptions(t *testing.T) {
	for _, mom := range []float64{0, 0.9} {
		for _, damp := range []float64{0, 0.1} {
			for _, nesterov := range []bool{false, true} {
				for _, wd := range []float64{0, 1e-2} {
					if nesterov && (mom == 0 || damp != 0) {
						continue
					}
					cfg := SGDConfig{LR: 0.05, Momentum: mom, Dampening: damp, Nesterov: nesterov, WeightDecay: wd}
					t.Run(fmt.Sprintf("mom=%v,damp=%v,nesterov=%v,wd=%v", mom, damp, nesterov, wd), func(t *testing.T) {
						runOptim(t, func(b Backend, ps []*Param) (Optimizer, error) { return NewSGD(b, ps, cfg) },
							func(p, g []float64, st map[string][]float64, step int) {
								_, had := st["buf"]
								buf := refState(st, "buf", len(p), 0)
								for i := range p {
									d := g[i] + wd*p[i]
									if mom != 0 {
										if !had {
											buf[i] = d
										} else {
											buf[i] = mom*buf[i] + (1-damp)*d
										}
										if nesterov {
											d += mom * buf[i]
										} else {
											d = buf[i]
										}
									}
									p[i] -= cfg.LR * d
								}
							}, optimSteps)
					})
				}
			}
		}
	}
}

func adamRef(cfg AdamConfig, decoupled bool) refOpt {
	return func(p, g []float64, st map[string][]float64, step int) {
		m := refState(st, "m", len(p), 0)
		v := refState(st, "v", len(p), 0)
		vmax := refState(st, "vmax", len(p), 0)
		for i := range p {
			d := g[i]
			if decoupled {
				p[i] *= 1 - cfg.LR*cfg.WeightDecay
			} else {
				d += cfg.WeightDecay * p[i]
			}
			m[i] = cfg.Beta1*m[i] + (1-cfg.Beta1)*d
			v[i] = cfg.Beta2*v[i] + (1-cfg.Beta2)*d*d
			mhat := m[i] / (1 - math.Pow(cfg.Beta1, float64(step)))
			vv := v[i]
			if cfg.AMSGrad {
				vmax[i] = math.Max(vmax[i], v[i])
				vv = vmax[i]
			}
			vhat := vv / (1 - math.Pow(cfg.Beta2, float64(step)))
			p[i] -= cfg.LR * mhat / (math.Sqrt(vhat) + cfg.Eps)
		}
	}
}

func TestAdamAllOptions(t *testing.T) {
	for _, decoupled := range []bool{false, true} {
		for _, ams := range []bool{false, true} {
			for _, wd := range []float64{0, 0.05} {
				cfg := DefaultAdamConfig()
				if decoupled {
					cfg = DefaultAdamWConfig()
				}
				cfg.LR, cfg.AMSGrad, cfg.WeightDecay = 0.01, ams, wd
				t.Run(fmt.Sprintf("adamw=%v,amsgrad=%v,wd=%v", decoupled, ams, wd), func(t *testing.T) {
					runOptim(t, func(b Backend, ps []*Param) (Optimizer, error) {
						if decoupled {
							return NewAdamW(b, ps, cfg)
						}
						return NewAdam(b, ps, cfg)
					}, adamRef(cfg, decoupled), optimSteps)
				})
			}
		}
	}
}

func TestAdagradAllOptions(t *testing.T) {
	for _, lrDecay := range []float64{0, 0.05} {
		for _, wd := range []float64{0, 0.02} {
			for _, acc := range []float64{0, 0.1} {
				cfg := DefaultAdagradConfig()
				cfg.LR, cfg.LRDecay, cfg.WeightDecay, cfg.InitialAccumulatorValue = 0.05, lrDecay, wd, acc
				t.Run(fmt.Sprintf("lr_decay=%v,wd=%v,acc=%v", lrDecay, wd, acc), func(t *testing.T) {
					runOptim(t, func(b Backend, ps []*Param) (Optimizer, error) { return NewAdagrad(b, ps, cfg) },
						func(p, g []float64, st map[string][]float64, step int) {
							sum := refState(st, "sum", len(p), acc)
							clr := cfg.LR / (1 + float64(step-1)*lrDecay)
							for i := range p {
								d := g[i] + wd*p[i]
								sum[i] += d * d
								p[i] -= clr * d / (math.Sqrt(sum[i]) + cfg.Eps)
							}
						}, optimSteps)
				})
			}
		}
	}
}

func TestRMSpropAllOptions(t *testing.T) {
	for _, centered := range []bool{false, true} {
		for _, mom := range []float64{0, 0.9} {
			for _, wd := range []float64{0, 0.02} {
				cfg := DefaultRMSpropConfig()
				cfg.Centered, cfg.Momentum, cfg.WeightDecay = centered, mom, wd
				t.Run(fmt.Sprintf("centered=%v,mom=%v,wd=%v", centered, mom, wd), func(t *testing.T) {
					runOptim(t, func(b Backend, ps []*Param) (Optimizer, error) { return NewRMSprop(b, ps, cfg) },
						func(p, g []float64, st map[string][]float64, step int) {
							sq := refState(st, "sq", len(p), 0)
							ga := refState(st, "ga", len(p), 0)
							buf := refState(st, "buf", len(p), 0)
							for i := range p {
								d := g[i] + wd*p[i]
								sq[i] = cfg.Alpha*sq[i] + (1-cfg.Alpha)*d*d
								avg := sq[i]
								if centered {
									ga[i] = cfg.Alpha*ga[i] + (1-cfg.Alpha)*d
									avg -= ga[i] * ga[i]
								}
								den := math.Sqrt(avg) + cfg.Eps
								if mom > 0 {
									buf[i] = mom*buf[i] + d/den
									p[i] -= cfg.LR * buf[i]
								} else {
									p[i] -= cfg.LR * d / den
								}
							}
						}, optimSteps)
				})
			}
		}
	}
}

// allOptimizers builds one optimizer of each kind over ps.
func allOptimizers() map[string]func(b Backend, ps []*Param) (Optimizer, error) {
	return map[string]func(b Backend, ps []*Param) (Optimizer, error){
		"sgd": func(b Backend, ps []*Param) (Optimizer, error) {
			return NewSGD(b, ps, SGDConfig{LR: 0.1, Momentum: 0.9, Nesterov: true, WeightDecay: 5e-4})
		},
		"adam": func(b Backend, ps []*Param) (Optimizer, error) {
			c := DefaultAdamConfig()
			c.AMSGrad = true
			return NewAdam(b, ps, c)
		},
		"adamw":   func(b Backend, ps []*Param) (Optimizer, error) { return NewAdamW(b, ps, DefaultAdamWConfig()) },
		"adagrad": func(b Backend, ps []*Param) (Optimizer, error) { return NewAdagrad(b, ps, DefaultAdagradConfig()) },
		"rmsprop": func(b Backend, ps []*Param) (Optimizer, error) {
			c := DefaultRMSpropConfig()
			c.Momentum, c.Centered = 0.9, true
			return NewRMSprop(b, ps, c)
		},
	}
}

func setGrads(ps []*Param, s int) {
	for _, p := range ps {
		for i := range p.Grad.Data {
			p.Grad.Data[i] = float32(gradAt(s, i, float64(p.Value.Data[i])))
		}
	}
}

// TestOptimizerResumeBitIdentical: 3 steps, state saved to a file and
// loaded into a fresh optimizer, 3 more steps == 6 uninterrupted steps.
func TestOptimizerResumeBitIdentical(t *testing.T) {
	for name, newOpt := range allOptimizers() {
		t.Run(name, func(t *testing.T) {
			b := NewCPU(1)
			straight := testParams()
			o1, err := newOpt(b, straight)
			if err != nil {
				t.Fatal(err)
			}
			for s := 1; s <= 6; s++ {
				setGrads(straight, s)
				if err := o1.Step(); err != nil {
					t.Fatal(err)
				}
			}
			resumed := testParams()
			o2, _ := newOpt(b, resumed)
			for s := 1; s <= 3; s++ {
				setGrads(resumed, s)
				if err := o2.Step(); err != nil {
					t.Fatal(err)
				}
			}
			st, err := o2.State()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "optim.safetensors")
			if err := SaveOptimizerState(path, st, map[string]string{"step": "3"}); err != nil {
				t.Fatal(err)
			}
			st2, meta, err := LoadOptimizerState(path)
			if err != nil {
				t.Fatal(err)
			}
			if meta["step"] != "3" || st2.Algorithm != name {
				t.Fatalf("metadata %v, algorithm %q", meta, st2.Algorithm)
			}
			params3 := testParams() // a fresh process: new params restored from weights
			for i := range params3 {
				copy(params3[i].Value.Data, resumed[i].Value.Data)
			}
			o3, _ := newOpt(b, params3)
			if err := o3.LoadState(st2); err != nil {
				t.Fatal(err)
			}
			for s := 4; s <= 6; s++ {
				setGrads(params3, s)
				if err := o3.Step(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range straight {
				for j, v := range straight[i].Value.Data {
					if math.Float32bits(v) != math.Float32bits(params3[i].Value.Data[j]) {
						t.Fatalf("%s[%d]: resumed %v, straight %v", straight[i].Name, j, params3[i].Value.Data[j], v)
					}
				}
			}
		})
	}
}

func TestOptimizerLoadStateRejects(t *testing.T) {
	b := NewCPU(1)
	ps := testParams()
	ps[2].Frozen = true
	c := DefaultAdamConfig()
	opt, _ := NewAdam(b, ps, c)
	setGrads(ps, 1)
	if err := opt.Step(); err != nil {
		t.Fatal(err)
	}
	good, _ := opt.State()
	clone := func() *OptimizerState {
		st := &OptimizerState{Algorithm: good.Algorithm, Tensors: map[string]*Tensor{}, Steps: map[string]int64{}}
		for k, v := range good.Tensors {
			st.Tensors[k] = &Tensor{Shape: v.Shape, Data: append([]float32(nil), v.Data...)}
		}
		for k, v := range good.Steps {
			st.Steps[k] = v
		}
		return st
	}
	cases := map[string]func(st *OptimizerState) *OptimizerState{
		"wrong algorithm": func(st *OptimizerState) *OptimizerState { st.Algorithm = "sgd"; return st },
		"unknown param": func(st *OptimizerState) *OptimizerState {
			st.Steps["nope.weight"] = 1
			return st
		},
		"frozen param": func(st *OptimizerState) *OptimizerState {
			st.Steps["frozen.weight"] = 1
			return st
		},
		"unexpected slot": func(st *OptimizerState) *OptimizerState {
			st.Tensors["fc.bias.momentum_buffer"] = NewTensor(4)
			return st
		},
		"missing slot": func(st *OptimizerState) *OptimizerState {
			delete(st.Tensors, "fc.bias.exp_avg_sq")
			return st
		},
		"wrong shape": func(st *OptimizerState) *OptimizerState {
			st.Tensors["fc.bias.exp_avg"] = NewTensor(5)
			return st
		},
		"negative step": func(st *OptimizerState) *OptimizerState { st.Steps["fc.bias"] = -1; return st },
		"nil":           func(*OptimizerState) *OptimizerState { return nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			before, _ := opt.State()
			err := opt.LoadState(mutate(clone()))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrOptimState) && !errors.Is(err, ErrShape) {
				t.Fatalf("error %v wraps neither ErrOptimState nor ErrShape", err)
			}
			after, _ := opt.State()
			if len(after.Tensors) != len(before.Tensors) || after.Steps["fc.bias"] != before.Steps["fc.bias"] {
				t.Fatalf("a rejected LoadState changed the state")
			}
		})
	}
	if err := opt.LoadState(clone()); err != nil {
		t.Fatalf("valid state rejected: %v", err)
	}
}

func TestOptimizerConfigErrors(t *testing.T) {
	b := NewCPU(1)
	ps := testParams()
	bad := []func() error{
		func() error { _, err := NewSGD(b, ps, SGDConfig{}); return err },
		func() error { _, err := NewSGD(b, ps, SGDConfig{LR: -1}); return err },
		func() error { _, err := NewSGD(b, ps, SGDConfig{LR: 0.1, Nesterov: true}); return err },
		func() error {
			_, err := NewSGD(b, ps, SGDConfig{LR: 0.1, Momentum: 0.9, Dampening: 0.1, Nesterov: true})
			return err
		},
		func() error { _, err := NewSGD(b, ps, SGDConfig{LR: 0.1, Momentum: -0.1}); return err },
		func() error { _, err := NewSGD(b, ps, SGDConfig{LR: math.NaN()}); return err },
		func() error { c := DefaultAdamConfig(); c.Beta2 = 1; _, err := NewAdam(b, ps, c); return err },
		func() error { c := DefaultAdamConfig(); c.Eps = -1; _, err := NewAdamW(b, ps, c); return err },
		func() error { c := DefaultAdagradConfig(); c.LRDecay = -1; _, err := NewAdagrad(b, ps, c); return err },
		func() error { c := DefaultRMSpropConfig(); c.Alpha = -1; _, err := NewRMSprop(b, ps, c); return err },
		func() error { _, err := NewAdam(b, nil, DefaultAdamConfig()); return err },
		func() error { _, err := NewAdam(nil, ps, DefaultAdamConfig()); return err },
		func() error {
			dup := []*Param{ps[0], ps[0]}
			_, err := NewAdam(b, dup, DefaultAdamConfig())
			return err
		},
		func() error {
			odd := &Param{Name: "x", Value: NewTensor(3), Grad: NewTensor(4)}
			_, err := NewAdam(b, []*Param{odd}, DefaultAdamConfig())
			return err
		},
	}
	for i, f := range bad {
		if err := f(); !errors.Is(err, ErrConfig) {
			t.Errorf("case %d: error %v, want ErrConfig", i, err)
		}
	}
}

func TestOptimizerStepErrorsChangeNothing(t *testing.T) {
	b := NewCPU(1)
	ps := testParams()
	opt, err := NewSGD(b, ps, DefaultSGDConfig(0.1))
	if err != nil {
		t.Fatal(err)
	}
	setGrads(ps, 1)
	before := append([]float32(nil), ps[0].Value.Data...)
	ps[1].Grad = nil
	if err := opt.Step(); !errors.Is(err, ErrNoGrad) {
		t.Fatalf("Step without a gradient: %v, want ErrNoGrad", err)
	}
	for i, v := range ps[0].Value.Data {
		if v != before[i] {
			t.Fatalf("a failed Step changed %s", ps[0].Name)
		}
	}
	ps[1].Frozen = true // a frozen param needs no gradient
	if err := opt.Step(); err != nil {
		t.Fatal(err)
	}
}

func TestZeroGradAndCheckGradsFinite(t *testing.T) {
	b := NewCPU(1)
	ps := testParams()
	opt, _ := NewAdam(b, ps, DefaultAdamConfig())
	setGrads(ps, 1)
	if err := CheckGradsFinite(b, ps); err != nil {
		t.Fatal(err)
	}
	ps[1].Grad.Data[2] = float32(math.Inf(1))
	if err := CheckGradsFinite(b, ps); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("got %v, want ErrNonFinite", err)
	}
	opt.ZeroGrad()
	for _, p := range ps {
		for _, v := range p.Grad.Data {
			if v != 0 {
				t.Fatalf("%s grad not zeroed: %v", p.Name, p.Grad.Data)
			}
		}
	}
}

func TestSetLRAndMomentum(t *testing.T) {
	b := NewCPU(1)
	ps := testParams()
	sgd, _ := NewSGD(b, ps, SGDConfig{LR: 0.1, Momentum: 0.9})
	sgd.SetLR(0.5)
	sgd.SetMomentum(0.8)
	if sgd.LR() != 0.5 || sgd.Config().LR != 0.5 || sgd.Momentum() != 0.8 {
		t.Fatalf("lr %v momentum %v", sgd.LR(), sgd.Momentum())
	}
	// One step with lr 0.5 and no momentum history: p -= 0.5*g.
	setGrads(ps, 1)
	want := ps[0].Value.Data[0] - 0.5*ps[0].Grad.Data[0]
	if err := sgd.Step(); err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(ps[0].Value.Data[0]-want)) > 1e-6 {
		t.Fatalf("p = %v, want %v", ps[0].Value.Data[0], want)
	}
	adam, _ := NewAdam(b, testParams(), DefaultAdamConfig())
	adam.SetMomentum(0.85)
	if adam.Config().Beta1 != 0.85 {
		t.Fatalf("beta1 = %v", adam.Config().Beta1)
	}
}

package nn

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

// countingBackend counts the optimizer kernels' calls.
type countingBackend struct {
	Backend
	calls int
}

func (c *countingBackend) SGDStep(p, g, buf *Tensor, o SGDParams, first bool) {
	c.calls++
	c.Backend.SGDStep(p, g, buf, o, first)
}

func (c *countingBackend) AdamStep(p, g, m, v, vMax *Tensor, o AdamParams) {
	c.calls++
	c.Backend.AdamStep(p, g, m, v, vMax, o)
}

func (c *countingBackend) AdagradStep(p, g, sum *Tensor, o AdagradParams) {
	c.calls++
	c.Backend.AdagradStep(p, g, sum, o)
}

func (c *countingBackend) RMSpropStep(p, g, sq, buf, gAvg *Tensor, o RMSpropParams) {
	c.calls++
	c.Backend.RMSpropStep(p, g, sq, buf, gAvg, o)
}

// fuseOptimizers is allOptimizers plus the SGD variants whose state differs
// (none; a momentum buffer created on the first step with dampening).
func fuseOptimizers() map[string]func(b Backend, ps []*Param) (Optimizer, error) {
	m := allOptimizers()
	m["sgd-plain"] = func(b Backend, ps []*Param) (Optimizer, error) {
		return NewSGD(b, ps, SGDConfig{LR: 0.05, WeightDecay: 1e-4})
	}
	m["sgd-dampening"] = func(b Backend, ps []*Param) (Optimizer, error) {
		return NewSGD(b, ps, SGDConfig{LR: 0.05, Momentum: 0.8, Dampening: 0.3})
	}
	m["adam-plain"] = func(b Backend, ps []*Param) (Optimizer, error) { return NewAdam(b, ps, DefaultAdamConfig()) }
	return m
}

// fuseModel is a small ResNet-18 on b; freeze freezes its backbone.
func fuseModel(t *testing.T, b Backend, freeze bool) *Model {
	t.Helper()
	m, err := NewResNet(b, ResNetConfig{Depth: 18, Stem: "cifar", Width: 0.0625, Classes: 10, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if freeze {
		m.FreezeBackbone()
	}
	t.Cleanup(m.Free)
	return m
}

// fuseGrads writes step s's gradients (deterministic, both signs, a few
// zeros) into the model's flat gradient tensor.
func fuseGrads(m *Model, s int) {
	g := m.GradsFlat().Data
	for i := range g {
		g[i] = float32(math.Sin(float64(i)*0.37+float64(s)*1.3)) * 0.1
		if (i+s)%17 == 0 {
			g[i] = 0
		}
	}
}

// requireSameOptim fails unless both models' parameters and both
// optimizers' states are bit-identical.
func requireSameOptim(t *testing.T, when string, ma, mb *Model, oa, ob Optimizer) {
	t.Helper()
	a, b := ma.ParamsFlat().Data, mb.ParamsFlat().Data
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: parameter element %d: %v (per parameter) vs %v (fused)", when, i, a[i], b[i])
		}
	}
	sa, err := oa.State()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := ob.State()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sa.Steps) != fmt.Sprint(sb.Steps) || len(sa.Tensors) != len(sb.Tensors) {
		t.Fatalf("%s: state differs: steps %v vs %v, %d vs %d tensors", when, sa.Steps, sb.Steps, len(sa.Tensors), len(sb.Tensors))
	}
	for k, ta := range sa.Tensors {
		tb := sb.Tensors[k]
		if tb == nil || !SameShape(ta.Shape, tb.Shape) {
			t.Fatalf("%s: state tensor %s missing or reshaped in the fused optimizer", when, k)
		}
		for i := range ta.Data {
			if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
				t.Fatalf("%s: state %s element %d: %v vs %v", when, k, i, ta.Data[i], tb.Data[i])
			}
		}
	}
}

// TestFusedStepBitIdentical: every optimizer, fused over the model's flat
// tensors, gives the per-parameter path's parameters and state bit for bit
// over steps with a changing learning rate (and momentum), with one kernel
// call per step for the whole model; with a frozen backbone the head alone
// is one run.
func TestFusedStepBitIdentical(t *testing.T) {
	for name, newOpt := range fuseOptimizers() {
		for _, freeze := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/frozen=%v", name, freeze), func(t *testing.T) {
				ca, cb := &countingBackend{Backend: NewCPU(1)}, &countingBackend{Backend: NewCPU(1)}
				ma, mb := fuseModel(t, ca, freeze), fuseModel(t, cb, freeze)
				oa, err := newOpt(ca, ma.Params())
				if err != nil {
					t.Fatal(err)
				}
				ob, err := newOpt(cb, mb.Params())
				if err != nil {
					t.Fatal(err)
				}
				runs, err := ob.(Fuser).Fuse(mb.ParamsFlat(), mb.GradsFlat())
				if err != nil || runs != 1 {
					t.Fatalf("Fuse: %d runs, %v; want 1 run (the whole model, or the head when frozen)", runs, err)
				}
				trainable := 0
				for _, p := range ma.Params() {
					if !p.Frozen {
						trainable++
					}
				}
				for s := 0; s < 4; s++ {
					fuseGrads(ma, s)
					fuseGrads(mb, s)
					lr := 0.1 / float64(s+1)
					oa.SetLR(lr)
					ob.SetLR(lr)
					if ms, ok := oa.(MomentumSetter); ok && ms.Momentum() > 0 {
						ms.SetMomentum(0.9 - 0.05*float64(s))
						ob.(MomentumSetter).SetMomentum(0.9 - 0.05*float64(s))
					}
					ca.calls, cb.calls = 0, 0
					if err := oa.Step(); err != nil {
						t.Fatal(err)
					}
					if err := ob.Step(); err != nil {
						t.Fatal(err)
					}
					if ca.calls != trainable || cb.calls != 1 {
						t.Fatalf("step %d: %d kernel calls per parameter (want %d), %d fused (want 1)", s, ca.calls, trainable, cb.calls)
					}
					requireSameOptim(t, fmt.Sprintf("step %d", s), ma, mb, oa, ob)
				}
			})
		}
	}
}

// TestFusedLoadState: state saved by the per-parameter optimizer loads into
// a fused one (and the other way) and both go on bit-identically; a state
// whose step counts differ between parameters of a run steps per parameter
// (through the run's views) and still matches.
func TestFusedLoadState(t *testing.T) {
	for name, newOpt := range fuseOptimizers() {
		t.Run(name, func(t *testing.T) {
			ca, cb := &countingBackend{Backend: NewCPU(1)}, &countingBackend{Backend: NewCPU(1)}
			ma, mb := fuseModel(t, ca, false), fuseModel(t, cb, false)
			oa, _ := newOpt(ca, ma.Params())
			ob, _ := newOpt(cb, mb.Params())
			for s := 0; s < 2; s++ {
				fuseGrads(ma, s)
				if err := oa.Step(); err != nil {
					t.Fatal(err)
				}
			}
			copy(mb.ParamsFlat().Data, ma.ParamsFlat().Data)
			st, err := oa.State()
			if err != nil {
				t.Fatal(err)
			}
			// Uneven steps: the first parameter has taken one more.
			first := ma.Params()[0].Name
			st.Steps[first]++
			if err := oa.LoadState(st); err != nil {
				t.Fatal(err)
			}
			if _, err := ob.(Fuser).Fuse(mb.ParamsFlat(), mb.GradsFlat()); err != nil {
				t.Fatal(err)
			}
			if err := ob.LoadState(st); err != nil {
				t.Fatal(err)
			}
			requireSameOptim(t, "after loading", ma, mb, oa, ob)
			fuseGrads(ma, 2)
			fuseGrads(mb, 2)
			cb.calls = 0
			if err := oa.Step(); err != nil {
				t.Fatal(err)
			}
			if err := ob.Step(); err != nil {
				t.Fatal(err)
			}
			if cb.calls != len(mb.Params()) {
				t.Fatalf("uneven steps: %d kernel calls, want one per parameter (%d)", cb.calls, len(mb.Params()))
			}
			requireSameOptim(t, "uneven steps", ma, mb, oa, ob)

			// Even again: load the fused optimizer's state back into the
			// per-parameter one and the state with even steps into the fused.
			st, err = oa.State()
			if err != nil {
				t.Fatal(err)
			}
			st.Steps[first]--
			if err := oa.LoadState(st); err != nil {
				t.Fatal(err)
			}
			if err := ob.LoadState(st); err != nil {
				t.Fatal(err)
			}
			fuseGrads(ma, 3)
			fuseGrads(mb, 3)
			cb.calls = 0
			if err := oa.Step(); err != nil {
				t.Fatal(err)
			}
			if err := ob.Step(); err != nil {
				t.Fatal(err)
			}
			if cb.calls != 1 {
				t.Fatalf("even steps after a load: %d kernel calls, want 1", cb.calls)
			}
			requireSameOptim(t, "even steps after a load", ma, mb, oa, ob)

			// Fusing again (after a ReplaceHead, say) moves the state and
			// changes nothing.
			if _, err := ob.(Fuser).Fuse(mb.ParamsFlat(), mb.GradsFlat()); err != nil {
				t.Fatal(err)
			}
			requireSameOptim(t, "fused again", ma, mb, oa, ob)
		})
	}
}

// TestFuseOnlyViews: parameters that are not views of the flat tensors, or
// not adjacent, are left to the per-parameter path; bad arguments are
// refused.
func TestFuseOnlyViews(t *testing.T) {
	b := NewCPU(1)
	m := fuseModel(t, b, false)
	o, err := NewSGD(b, m.Params(), SGDConfig{LR: 0.1, Momentum: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	f := o
	if _, err := f.Fuse(nil, m.GradsFlat()); !errors.Is(err, ErrFuse) {
		t.Fatalf("nil values: %v", err)
	}
	if _, err := f.Fuse(m.ParamsFlat(), NewTensor(3)); !errors.Is(err, ErrFuse) {
		t.Fatalf("mismatched sizes: %v", err)
	}
	// Other tensors of the same size: nothing is a view of them.
	n := m.ParamsFlat().Numel()
	if runs, err := f.Fuse(NewTensor(n), NewTensor(n)); err != nil || runs != 0 {
		t.Fatalf("foreign tensors: %d runs, %v", runs, err)
	}
	// Values and gradients swapped: offsets agree but the roles do not.
	if runs, err := f.Fuse(m.GradsFlat(), m.ParamsFlat()); err != nil || runs != 0 {
		t.Fatalf("swapped tensors: %d runs, %v", runs, err)
	}
	// A parameter list in another order: runs only where neighbours are
	// adjacent in the flat tensor.
	ps := m.Params()
	shuffled := append([]*Param{ps[3], ps[0], ps[1], ps[2]}, ps[4:]...)
	o2, err := NewSGD(b, shuffled, SGDConfig{LR: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if runs, err := o2.Fuse(m.ParamsFlat(), m.GradsFlat()); err != nil || runs != 2 {
		t.Fatalf("reordered parameters: %d runs, %v; want 2 (0-2 and 4-)", runs, err)
	}
}

// allocCounter counts the tensors allocated and freed through it.
type allocCounter struct {
	Backend
	news, frees int
}

func (a *allocCounter) New(shape ...int) *Tensor { a.news++; return a.Backend.New(shape...) }
func (a *allocCounter) Free(t *Tensor)           { a.frees++; a.Backend.Free(t) }

// TestOptimizerReset: Reset frees every state tensor the optimizer
// allocated (fused or not) and the next step is a first step again, bit
// for bit as a fresh optimizer's.
func TestOptimizerReset(t *testing.T) {
	for name, newOpt := range fuseOptimizers() {
		for _, fused := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fused=%v", name, fused), func(t *testing.T) {
				b := &allocCounter{Backend: NewCPU(1)}
				ma, mb := fuseModel(t, b, false), fuseModel(t, NewCPU(1), false)
				b.news, b.frees = 0, 0
				oa, err := newOpt(b, ma.Params())
				if err != nil {
					t.Fatal(err)
				}
				if fused {
					if _, err := oa.(Fuser).Fuse(ma.ParamsFlat(), ma.GradsFlat()); err != nil {
						t.Fatal(err)
					}
				}
				for s := 0; s < 2; s++ {
					fuseGrads(ma, s)
					if err := oa.Step(); err != nil {
						t.Fatal(err)
					}
				}
				oa.Reset()
				if b.news == 0 && name != "sgd-plain" {
					t.Fatal("the optimizer allocated no state")
				}
				if b.news != b.frees {
					t.Fatalf("after Reset: %d state tensors allocated, %d freed", b.news, b.frees)
				}
				if st, _ := oa.State(); len(st.Steps) != 0 || len(st.Tensors) != 0 {
					t.Fatalf("state after Reset: %d steps, %d tensors", len(st.Steps), len(st.Tensors))
				}
				copy(mb.ParamsFlat().Data, ma.ParamsFlat().Data)
				ob, err := newOpt(mb.Backend(), mb.Params())
				if err != nil {
					t.Fatal(err)
				}
				fuseGrads(ma, 5)
				fuseGrads(mb, 5)
				if err := oa.Step(); err != nil {
					t.Fatal(err)
				}
				if err := ob.Step(); err != nil {
					t.Fatal(err)
				}
				requireSameOptim(t, "first step after Reset", mb, ma, ob, oa)
			})
		}
	}
}

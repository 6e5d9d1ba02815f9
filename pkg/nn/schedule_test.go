package nn

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"
)

func approx(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Max(math.Abs(want), 1e-300) {
		t.Errorf("%s = %.17g, want %.17g", what, got, want)
	}
}

// TestScheduleDocumentedValues checks the examples of torch's
// lr_scheduler documentation and closed forms at key steps.
func TestScheduleDocumentedValues(t *testing.T) {
	// StepLR(step_size=30, gamma=0.1), lr 0.05: 0.05 for epochs 0-29,
	// 0.005 for 30-59, 0.0005 for 60-89.
	st, err := NewStepLR(0.05, 30, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		t    int
		want float64
	}{{0, 0.05}, {29, 0.05}, {30, 0.005}, {59, 0.005}, {60, 0.0005}, {89, 0.0005}, {-3, 0.05}} {
		approx(t, "StepLR", st.LR(c.t), c.want, 1e-15)
	}
	// MultiStepLR(milestones=[30,80], gamma=0.1), lr 0.05.
	ms, err := NewMultiStepLR(0.05, []int{80, 30}, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		t    int
		want float64
	}{{0, 0.05}, {29, 0.05}, {30, 0.005}, {79, 0.005}, {80, 0.0005}, {1000, 0.0005}} {
		approx(t, "MultiStepLR", ms.LR(c.t), c.want, 1e-15)
	}
	// LinearLR(start_factor=0.5, total_iters=4), lr 0.05: 0.025, 0.03125,
	// 0.0375, 0.04375, then 0.05.
	lin, err := NewLinearLR(0.05, 0.5, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{0.025, 0.03125, 0.0375, 0.04375, 0.05, 0.05, 0.05} {
		approx(t, "LinearLR", lin.LR(i), want, 1e-15)
	}
	// Cosine: base at 0, midpoint average at T/2, eta_min at T, base again at 2T.
	cos, err := NewCosineAnnealingLR(0.1, 50, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	approx(t, "cos(0)", cos.LR(0), 0.1, 1e-15)
	approx(t, "cos(25)", cos.LR(25), (0.1+0.001)/2, 1e-15)
	approx(t, "cos(50)", cos.LR(50), 0.001, 1e-15)
	approx(t, "cos(100)", cos.LR(100), 0.1, 1e-15)
	// OneCycle defaults: max/25 at 0, max at pct*total-1, max/25/1e4 at
	// the last step; momentum 0.95 → 0.85 → 0.95.
	oc, err := NewOneCycleLR(DefaultOneCycleConfig(0.1, 100))
	if err != nil {
		t.Fatal(err)
	}
	approx(t, "onecycle(0)", oc.LR(0), 0.1/25, 1e-12)
	approx(t, "onecycle(29)", oc.LR(29), 0.1, 1e-15)
	approx(t, "onecycle(99)", oc.LR(99), 0.1/25/1e4, 1e-12)
	approx(t, "onecycle(1000) clamps", oc.LR(1000), oc.LR(100), 0)
	m0, on := oc.Momentum(0)
	m29, _ := oc.Momentum(29)
	m99, _ := oc.Momentum(99)
	if !on {
		t.Fatal("momentum cycling off by default")
	}
	approx(t, "momentum(0)", m0, 0.95, 1e-15)
	approx(t, "momentum(29)", m29, 0.85, 1e-15)
	approx(t, "momentum(99)", m99, 0.95, 1e-15)
	// Warmup(5, 0.1) into cosine(100): 0.01, 0.028, …, then cosine from 0.1.
	c100, _ := NewCosineAnnealingLR(0.1, 100, 0)
	w, err := NewWarmup(5, 0.1, c100)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{0.01, 0.028, 0.046, 0.064, 0.082, 0.1} {
		approx(t, "warmup", w.LR(i), want, 1e-14)
	}
	approx(t, "warmup then cosine", w.LR(55), c100.LR(50), 0)
	approx(t, "ConstantLR", ConstantLR(0.3).LR(7), 0.3, 0)
}

// TestSchedulesMatchTorch compares every schedule with the rates torch's
// chainable schedulers produced (testdata/schedule_torch_gen.py).
func TestSchedulesMatchTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/schedule_torch.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Cases []struct {
			Name     string
			Args     map[string]any
			LR       []float64
			Momentum []float64
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for _, c := range golden.Cases {
		f := func(k string) float64 { return c.Args[k].(float64) }
		var s Schedule
		var err error
		switch c.Name {
		case "step", "step7":
			s, err = NewStepLR(f("base"), int(f("step_size")), f("gamma"))
		case "multistep":
			var ms []int
			for _, m := range c.Args["milestones"].([]any) {
				ms = append(ms, int(m.(float64)))
			}
			s, err = NewMultiStepLR(f("base"), ms, f("gamma"))
		case "cosine", "cosine0":
			s, err = NewCosineAnnealingLR(f("base"), int(f("t_max")), f("eta_min"))
		case "linear", "linear_down":
			s, err = NewLinearLR(f("base"), f("start_factor"), f("end_factor"), int(f("total_iters")))
		case "onecycle", "onecycle_adam", "onecycle_linear_3phase":
			cfg := DefaultOneCycleConfig(f("max_lr"), int(f("total_steps")))
			if c.Name == "onecycle_linear_3phase" {
				cfg.PctStart, cfg.AnnealLinear, cfg.ThreePhase = f("pct_start"), true, true
				cfg.DivFactor, cfg.FinalDivFactor = f("div_factor"), f("final_div_factor")
			}
			s, err = NewOneCycleLR(cfg)
		case "warmup_cosine":
			var after Schedule
			after, err = NewCosineAnnealingLR(f("base"), int(f("t_max")), f("eta_min"))
			if err == nil {
				s, err = NewWarmup(int(f("warmup")), f("start_factor"), after)
			}
		default:
			t.Fatalf("unknown golden case %q", c.Name)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		// Errors are relative to the schedule's largest rate: the recursive
		// cosine reaches eta_min = 0 only approximately.
		scale := 0.0
		for _, v := range c.LR {
			scale = math.Max(scale, v)
		}
		// OneCycle is closed-form in torch too: only math.Cos may differ
		// (Go's is not correctly rounded; glibc's is), by an ulp or so.
		tol := 1e-12
		if _, ok := s.(*OneCycleLR); ok {
			tol = 1e-15
		}
		for step, want := range c.LR {
			got := s.LR(step)
			e := math.Abs(got-want) / scale
			worst = math.Max(worst, e)
			if e > tol {
				t.Errorf("%s: LR(%d) = %.17g, torch %.17g", c.Name, step, got, want)
				break
			}
			if ms, ok := s.(*OneCycleLR); ok {
				m, _ := ms.Momentum(step)
				if math.Abs(m-c.Momentum[step]) > 1e-15 {
					t.Errorf("%s: Momentum(%d) = %.17g, torch %.17g", c.Name, step, m, c.Momentum[step])
					break
				}
			}
		}
	}
	t.Logf("worst difference from torch's schedulers, relative to the largest rate: %.3g", worst)
}

func TestApplyScheduleCyclesMomentum(t *testing.T) {
	b := NewCPU(1)
	sgd, _ := NewSGD(b, testParams(), SGDConfig{LR: 1, Momentum: 0.9})
	oc, _ := NewOneCycleLR(DefaultOneCycleConfig(0.1, 100))
	ApplySchedule(sgd, oc, 29)
	if sgd.LR() != 0.1 || math.Abs(sgd.Momentum()-0.85) > 1e-15 {
		t.Fatalf("lr %v momentum %v, want 0.1, 0.85", sgd.LR(), sgd.Momentum())
	}
	adam, _ := NewAdam(b, testParams(), DefaultAdamConfig())
	ApplySchedule(adam, oc, 0)
	if math.Abs(adam.Config().Beta1-0.95) > 1e-15 {
		t.Fatalf("beta1 %v, want 0.95", adam.Config().Beta1)
	}
	st, _ := NewStepLR(0.5, 10, 0.1)
	ApplySchedule(adam, st, 10)
	if math.Abs(adam.LR()-0.05) > 1e-15 || math.Abs(adam.Config().Beta1-0.95) > 1e-15 {
		t.Fatalf("lr %v beta1 %v", adam.LR(), adam.Config().Beta1)
	}
}

func TestScheduleConfigErrors(t *testing.T) {
	bad := []func() error{
		func() error { _, err := NewStepLR(0.1, 0, 0.1); return err },
		func() error { _, err := NewStepLR(-1, 10, 0.1); return err },
		func() error { _, err := NewStepLR(math.NaN(), 10, 0.1); return err },
		func() error { _, err := NewMultiStepLR(0.1, []int{0, 10}, 0.1); return err },
		func() error { _, err := NewCosineAnnealingLR(0.1, 0, 0); return err },
		func() error { _, err := NewCosineAnnealingLR(0.1, 10, -1); return err },
		func() error { _, err := NewLinearLR(0.1, 0, 1, 5); return err },
		func() error { _, err := NewLinearLR(0.1, 0.5, 1, 0); return err },
		func() error { _, err := NewWarmup(0, 0.1, ConstantLR(0.1)); return err },
		func() error { _, err := NewWarmup(5, 0.1, nil); return err },
		func() error { _, err := NewOneCycleLR(DefaultOneCycleConfig(0.1, 0)); return err },
		func() error {
			c := DefaultOneCycleConfig(0.1, 100)
			c.PctStart = 1.5
			_, err := NewOneCycleLR(c)
			return err
		},
		func() error {
			c := DefaultOneCycleConfig(0.1, 100)
			c.DivFactor = 0
			_, err := NewOneCycleLR(c)
			return err
		},
		func() error {
			c := DefaultOneCycleConfig(0.1, 10)
			c.PctStart = 0.1 // phase 1 ends at step 0: torch divides by zero
			_, err := NewOneCycleLR(c)
			return err
		},
	}
	for i, f := range bad {
		if err := f(); !errors.Is(err, ErrConfig) {
			t.Errorf("case %d: %v, want ErrConfig", i, err)
		}
	}
}

package explain_test

import (
	"errors"
	"math"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/explain"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

func tinyModel(t *testing.T, seed int64) *nn.Model {
	t.Helper()
	m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Width: 0.125, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	randomise(t, m, seed+1)
	return m
}

// TestShapleySampledWithinErrorOfExact: on a tiny model with 4 patches
// (2x2 grid), the values computed exhaustively from all 16 coalitions lie
// within 3 reported standard errors of the permutation-sampled ones, for
// two baselines; both satisfy efficiency.
func TestShapleySampledWithinErrorOfExact(t *testing.T) {
	m := tinyModel(t, 7)
	defer m.Free()
	const h, w = 16, 16
	img := randomImage(11, h, w)
	for _, bl := range []struct {
		name string
		v    []float32
	}{{"mean", explain.MeanBaseline(h, w)}, {"blur", explain.BlurBaseline(img, h, w, 3)}} {
		o := explain.ShapleyOptions{Grid: 2, Samples: 200, Baseline: bl.v, Class: -1, Seed: 3}
		exact, err := explain.ExactShapley(m, img, h, w, o)
		if err != nil {
			t.Fatal(err)
		}
		est, err := explain.EstimateShapley(m, img, h, w, o)
		if err != nil {
			t.Fatal(err)
		}
		if exact.Class != est.Class {
			t.Fatalf("%s: classes %d and %d", bl.name, exact.Class, est.Class)
		}
		spread := 0.0
		for i := range exact.Values {
			d := math.Abs(est.Values[i] - exact.Values[i])
			t.Logf("%s baseline, patch %d: exact %+.5f, sampled %+.5f ± %.5f (%.2f SE)", bl.name, i, exact.Values[i], est.Values[i], est.StdErr[i], d/est.StdErr[i])
			if d > 3*est.StdErr[i]+1e-5 {
				t.Errorf("%s baseline, patch %d: sampled %.5f ± %.5f is %.2f standard errors from the exact %.5f", bl.name, i, est.Values[i], est.StdErr[i], d/est.StdErr[i], exact.Values[i])
			}
			spread = max(spread, est.StdErr[i])
		}
		if spread == 0 {
			t.Errorf("%s baseline: every standard error is 0: the patches do not interact, the test shows nothing", bl.name)
		}
		for _, r := range []*explain.Shapley{exact, est} {
			if gap, tol, ok := r.Efficiency(); !ok {
				t.Errorf("%s baseline: efficiency fails: sum %.6f vs f(x)-f(b) %.6f (gap %.3g > %.3g)", bl.name, r.Sum(), r.FImage-r.FBaseline, gap, tol)
			}
		}
	}
}

// TestShapleyEfficiencyCheckCanFail: a wrong value makes the check fail.
func TestShapleyEfficiencyCheckCanFail(t *testing.T) {
	m := tinyModel(t, 8)
	defer m.Free()
	img := randomImage(12, 16, 16)
	r, err := explain.EstimateShapley(m, img, 16, 16, explain.ShapleyOptions{Grid: 4, Samples: 8, Class: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := r.Efficiency(); !ok {
		t.Fatalf("efficiency fails on a correct estimate")
	}
	if len(r.Values) != 16 || r.Class != 3 || r.Samples != 8 {
		t.Fatalf("got %d values, class %d, %d samples", len(r.Values), r.Class, r.Samples)
	}
	r.Values[5] += 0.01 * (math.Abs(r.FImage-r.FBaseline) + 1)
	if gap, tol, ok := r.Efficiency(); ok {
		t.Fatalf("efficiency holds after a value was changed (gap %.3g, tolerance %.3g)", gap, tol)
	}
}

func TestShapleyBadOptions(t *testing.T) {
	m := tinyModel(t, 9)
	defer m.Free()
	img := randomImage(13, 16, 16)
	for _, o := range []explain.ShapleyOptions{
		{Grid: 17},
		{Samples: 1},
		{Baseline: make([]float32, 5)},
		{Class: 10},
	} {
		if _, err := explain.EstimateShapley(m, img, 16, 16, o); !errors.Is(err, explain.ErrInput) {
			t.Errorf("%+v: got %v, want ErrInput", o, err)
		}
	}
	if _, err := explain.ExactShapley(m, img, 16, 16, explain.ShapleyOptions{Grid: 4}); !errors.Is(err, explain.ErrInput) {
		t.Errorf("exact on 16 patches: got %v, want ErrInput", err)
	}
}

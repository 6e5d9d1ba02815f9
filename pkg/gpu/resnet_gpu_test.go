package gpu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// copyModel makes dst's parameters and buffers equal to src's.
func copyModel(t *testing.T, dst, src *nn.Model) {
	t.Helper()
	for _, f := range []func(*nn.Model) *nn.Tensor{(*nn.Model).ParamsFlat, (*nn.Model).BuffersFlat} {
		s, d := f(src), f(dst)
		h := make([]float32, s.Numel())
		src.Backend().ToHost(h, s)
		dst.Backend().FromHost(d, h)
	}
	if err := dst.Backend().Sync(); err != nil {
		t.Fatal(err)
	}
}

// learnable returns nb batches of n images whose label is visible in the
// pixels (a per-class template plus noise), so training loss falls.
func learnable(seed int64, nb, n, size int) ([][]float32, [][]int32) {
	rng := rand.New(rand.NewSource(seed))
	px := 3 * size * size
	tmpl := make([][]float32, 10)
	for c := range tmpl {
		tmpl[c] = make([]float32, px)
		for i := range tmpl[c] {
			tmpl[c][i] = float32(rng.NormFloat64())
		}
	}
	xs, ls := make([][]float32, nb), make([][]int32, nb)
	for b := range xs {
		xs[b], ls[b] = make([]float32, n*px), make([]int32, n)
		for i := 0; i < n; i++ {
			c := rng.Intn(10)
			ls[b][i] = int32(c)
			for j := 0; j < px; j++ {
				xs[b][i*px+j] = tmpl[c][j] + float32(rng.NormFloat64())
			}
		}
	}
	return xs, ls
}

// TestGPUResNet18Step runs one full training step of ResNet-18 (both
// stems) on the GPU and on the CPU from the same weights and compares
// logits, loss, every gradient and the updated parameters.
func TestGPUResNet18Step(t *testing.T) {
	g := openGPU(t, PrecisionFP32)
	c := nn.NewCPU(0)
	for _, tc := range []struct {
		stem string
		n, s int
	}{{"cifar", 4, 32}, {"imagenet", 4, 64}} {
		t.Run(tc.stem, func(t *testing.T) {
			cfg := nn.ResNetConfig{Depth: 18, Stem: tc.stem, Classes: 10, Seed: 5}
			mg, err := nn.NewResNet(g, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mg.Free()
			mc, err := nn.NewResNet(c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			copyModel(t, mg, mc)
			xs, ls := learnable(9, 1, tc.n, tc.s)
			e := &env{t: t, g: g, c: c}
			x := e.from(xs[0], tc.n, 3, tc.s, tc.s)
			lg, err := mg.Forward(x[0])
			if err != nil {
				t.Fatal("gpu forward:", err)
			}
			lc, err := mc.Forward(x[1])
			if err != nil {
				t.Fatal("cpu forward:", err)
			}
			e.check("logits", tp{lg, lc}, fp32Tol)
			ceg, cec := &nn.CrossEntropy{Smoothing: 0.1}, &nn.CrossEntropy{Smoothing: 0.1}
			lossG, dg, err := ceg.Compute(g, lg, ls[0])
			if err != nil {
				t.Fatal(err)
			}
			lossC, dc, err := cec.Compute(c, lc, ls[0])
			if err != nil {
				t.Fatal(err)
			}
			if r := math.Abs(float64(lossG-lossC)) / math.Abs(float64(lossC)); r > fp32Tol {
				t.Errorf("loss gpu %v cpu %v (rel %.3g)", lossG, lossC, r)
			}
			mg.ZeroGrad()
			mc.ZeroGrad()
			if err := mg.Backward(dg); err != nil {
				t.Fatal(err)
			}
			if err := mc.Backward(dc); err != nil {
				t.Fatal(err)
			}
			// Gradients: norm-wise per parameter (small gradients of deep
			// layers are sums of many terms in different orders).
			worst, wn := 0.0, ""
			for i, p := range mg.Params() {
				r := e.normErr(tp{p.Grad, mc.Params()[i].Grad})
				if r > worst {
					worst, wn = r, p.Name
				}
			}
			if worst > 1e-3 {
				t.Errorf("gradients: worst ||gpu-cpu||/||cpu|| = %.3g (%s) > 1e-3", worst, wn)
			} else {
				t.Logf("gradients: worst norm error %.3g (%s)", worst, wn)
			}
			sgd := nn.SGDConfig{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}
			og, err := nn.NewSGD(g, mg.Params(), sgd)
			if err != nil {
				t.Fatal(err)
			}
			oc, err := nn.NewSGD(c, mc.Params(), sgd)
			if err != nil {
				t.Fatal(err)
			}
			if err := og.Step(); err != nil {
				t.Fatal(err)
			}
			if err := oc.Step(); err != nil {
				t.Fatal(err)
			}
			e.check("params after SGD", tp{mg.ParamsFlat(), mc.ParamsFlat()}, fp32Tol)
			e.check("running stats", tp{mg.BuffersFlat(), mc.BuffersFlat()}, fp32Tol)
		})
	}
}

// TestGPUBF16TracksFP32 trains ResNet-18 (cifar stem) for 50 steps from the
// same weights in fp32 and bf16 on the GPU. Stated tolerance: every step's
// bf16 loss within 10% (+0.05) of the fp32 loss, and both runs must learn
// (final loss below 60% of the first).
func TestGPUBF16TracksFP32(t *testing.T) {
	g32 := openGPU(t, PrecisionFP32)
	g16 := openGPU(t, PrecisionBF16)
	const steps, n = 50, 32
	cfg := nn.ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Seed: 11}
	xs, ls := learnable(3, 4, n, 32)
	run := func(b *Backend, init *nn.Model) ([]float32, *nn.Model) {
		m, err := nn.NewResNet(b, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if init != nil {
			copyModel(t, m, init)
		}
		m.SetCheckFinite(false)
		opt, err := nn.NewSGD(b, m.Params(), nn.SGDConfig{LR: 0.02, Momentum: 0.9, WeightDecay: 5e-4})
		if err != nil {
			t.Fatal(err)
		}
		x := b.New(n, 3, 32, 32)
		ce := &nn.CrossEntropy{}
		var losses []float32
		for s := 0; s < steps; s++ {
			b.FromHost(x, xs[s%len(xs)])
			lg, err := m.Forward(x)
			if err != nil {
				t.Fatal(err)
			}
			l, dl, err := ce.Compute(b, lg, ls[s%len(ls)])
			if err != nil {
				t.Fatalf("%s step %d: %v", b.Precision(), s, err)
			}
			losses = append(losses, l)
			m.ZeroGrad()
			if err := m.Backward(dl); err != nil {
				t.Fatal(err)
			}
			if err := opt.Step(); err != nil {
				t.Fatal(err)
			}
		}
		return losses, m
	}
	init, err := nn.NewResNet(g32, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l32, m32 := run(g32, init)
	l16, m16 := run(g16, init)
	defer init.Free()
	defer m32.Free()
	defer m16.Free()
	worst := 0.0
	for s := range l32 {
		d := math.Abs(float64(l16[s] - l32[s]))
		worst = math.Max(worst, d/float64(l32[s]))
		if d > 0.1*float64(l32[s])+0.05 {
			t.Errorf("step %d: bf16 loss %.4f vs fp32 %.4f", s, l16[s], l32[s])
		}
	}
	t.Logf("losses fp32 %s", fmtLosses(l32))
	t.Logf("losses bf16 %s", fmtLosses(l16))
	t.Logf("worst relative loss difference %.3g", worst)
	for _, l := range [][]float32{l32, l16} {
		if !(l[len(l)-1] < 0.6*l[0]) {
			t.Errorf("did not learn: first loss %.4f, last %.4f", l[0], l[len(l)-1])
		}
	}
}

func fmtLosses(l []float32) string {
	s := ""
	for i := 0; i < len(l); i += 7 {
		s += fmt.Sprintf("%d:%.3f ", i, l[i])
	}
	return s + fmt.Sprintf("%d:%.3f", len(l)-1, l[len(l)-1])
}

package gpu

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
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

// flatNormErr is ||gpu-cpu|| / ||cpu|| of two tensors.
func flatNormErr(e *env, g, c *nn.Tensor) float64 { return e.normErr(tp{g, c}) }

// bitDiffs counts values of t (on b) whose bits differ from want.
func bitDiffs(t *testing.T, b *Backend, x *nn.Tensor, want []float32) int {
	t.Helper()
	h := make([]float32, x.Numel())
	b.ToHost(h, x)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range h {
		if math.Float32bits(h[i]) != math.Float32bits(want[i]) {
			n++
		}
	}
	return n
}

// hostNormErr is ||a-b|| / ||b||.
func hostNormErr(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / math.Max(n, 1e-300))
}

// roundingResponse measures how far the CPU's own logits and gradients
// move when every weight of ref is perturbed by one rounding (a relative
// ±2^-24, random signs): the step's sensitivity to rounding. A GEMM that
// rounds in float32 returns the exact product of operands perturbed by up
// to k·u (typically about sqrt(k)·u, 68u for ResNet-18's longest sums of
// 4608), so a correct GPU step is expected within ~100x this response;
// gradients that nearly cancel make the response, and so the allowance,
// large.
func roundingResponse(t *testing.T, c nn.Backend, cfg nn.ResNetConfig, ref *nn.Model, x *nn.Tensor, labels []int32, logits0, grads0 []float32) (dLogits, dGrads float64) {
	t.Helper()
	m, err := nn.NewResNet(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	copyModel(t, m, ref)
	rng := rand.New(rand.NewSource(77))
	w := make([]float32, m.ParamsFlat().Numel())
	c.ToHost(w, m.ParamsFlat())
	for i := range w {
		if rng.Intn(2) == 0 {
			w[i] *= 1 + 1.0/(1<<24)
		} else {
			w[i] *= 1 - 1.0/(1<<24)
		}
	}
	c.FromHost(m.ParamsFlat(), w)
	lg, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	_, dl, err := (&nn.CrossEntropy{Smoothing: 0.1}).Compute(c, lg, labels)
	if err != nil {
		t.Fatal(err)
	}
	m.ZeroGrad()
	if err := m.Backward(dl); err != nil {
		t.Fatal(err)
	}
	l := make([]float32, lg.Numel())
	c.ToHost(l, lg)
	g := make([]float32, m.GradsFlat().Numel())
	c.ToHost(g, m.GradsFlat())
	return hostNormErr(l, logits0), hostNormErr(g, grads0)
}

// responseFactor: see roundingResponse.
const responseFactor = 100

// gradTol bounds the whole model's gradient difference. The per-op check
// holds every op to its rounding bound; end to end, the weight gradients
// of convolutions followed by BN are sums of N·P·Q products (4096 at
// 32x32, batch 4) that nearly cancel (BN makes dy zero-mean per channel
// while the post-ReLU x is not), so a float32 GEMM summing them in a
// different order than the CPU's blocked one differs by ~1e-3 relative
// (measured with the emulator: 2e-3 on conv1/layer1, 5e-6 on layer4).
// 1e-2 still fails a missing, doubled or misplaced term.
const gradTol = 1e-2

// TestGPUResNet18Step runs one full training step of ResNet-18 (both
// stems) on the GPU and on the CPU from the same weights.
//
// Per op (the shadow backend): every op of the step, run on the CPU with
// the GPU's own inputs, must be within that op's tolerance (exact, one
// rounding, or the rounding bound of its sums). This is the check that
// can blame an op; the first op over its tolerance is reported.
//
// End to end, norm-wise over the whole model, within fp32Tol (1e-4):
// logits, loss, the flat gradient, parameters after one SGD step, running
// statistics. Single small gradients (a BN bias whose gradient is a sum
// that nearly cancels) amplify rounding differences of upstream sums by
// the cancellation factor, so per-parameter norms are reported, not
// asserted.
func TestGPUResNet18Step(t *testing.T) {
	g := openGPU(t, PrecisionFP32)
	c := plainCPU()
	emulated := g.info.Arch == "host"
	for _, tc := range []struct {
		stem string
		n, s int
	}{{"cifar", 4, 32}, {"imagenet", 4, 64}} {
		t.Run(tc.stem, func(t *testing.T) {
			if emulated && tc.stem == "cifar" {
				tc.n = 2 // the emulator is slow; two images still exercise every path
			}
			sh := newShadow(g)
			cfg := nn.ResNetConfig{Depth: 18, Stem: tc.stem, Classes: 10, Seed: 5}
			mg, err := nn.NewResNet(sh, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mg.Free()
			mc, err := nn.NewResNet(c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			copyModel(t, mg, mc)
			mc0, err := nn.NewResNet(c, cfg) // the initial weights, for the rerun
			if err != nil {
				t.Fatal(err)
			}
			defer mc0.Free()
			copyModel(t, mc0, mc)
			mg.SetGradReadyHook(func(i int) { sh.label = "backward, after " + mg.Params()[i].Name + "'s gradient" })
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
			hl := make([]float32, lc.Numel())
			c.ToHost(hl, lc)
			ceg, cec := &nn.CrossEntropy{Smoothing: 0.1}, &nn.CrossEntropy{Smoothing: 0.1}
			lossG, dg, err := ceg.Compute(sh, lg, ls[0])
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
			hg := make([]float32, mc.GradsFlat().Numel())
			c.ToHost(hg, mc.GradsFlat())
			rl, rg := roundingResponse(t, c, cfg, mc, x[1], ls[0], hl, hg)
			for _, o := range []struct {
				name string
				g, c *nn.Tensor
				resp float64
				min  float64
			}{{"logits", lg, lc, rl, fp32Tol}, {"gradients", mg.GradsFlat(), mc.GradsFlat(), rg, gradTol}} {
				tol := math.Max(o.min, responseFactor*o.resp)
				if r := flatNormErr(e, o.g, o.c); r > tol {
					t.Errorf("%s: ||gpu-cpu||/||cpu|| over the model = %.3g > %.3g (the CPU's response to one rounding of every weight: %.3g)", o.name, r, tol, o.resp)
				} else {
					t.Logf("%s: ||gpu-cpu||/||cpu|| over the model = %.3g <= %.3g (the CPU's response to one rounding of every weight: %.3g)", o.name, r, tol, o.resp)
				}
			}
			worst, wn := 0.0, ""
			for i, p := range mg.Params() {
				if r := e.normErr(tp{p.Grad, mc.Params()[i].Grad}); r > worst {
					worst, wn = r, p.Name
				}
			}
			{ // per-parameter differences, largest first (information)
				type row struct {
					name string
					d, n float64
				}
				var rows []row
				for i, p := range mg.Params() {
					hg1 := make([]float32, p.Grad.Numel())
					hc1 := make([]float32, p.Grad.Numel())
					g.ToHost(hg1, p.Grad)
					c.ToHost(hc1, mc.Params()[i].Grad)
					var d, n float64
					for j := range hg1 {
						d += (float64(hg1[j]) - float64(hc1[j])) * (float64(hg1[j]) - float64(hc1[j]))
						n += float64(hc1[j]) * float64(hc1[j])
					}
					rows = append(rows, row{p.Name, math.Sqrt(d), math.Sqrt(n)})
				}
				sort.Slice(rows, func(i, j int) bool { return rows[i].d > rows[j].d })
				var b strings.Builder
				for _, r := range rows[:min(8, len(rows))] {
					fmt.Fprintf(&b, "\n  %-28s ||gpu-cpu|| %.3g  ||cpu|| %.3g  relative %.3g", r.name, r.d, r.n, r.d/math.Max(r.n, 1e-300))
				}
				t.Logf("gradients, largest differences (information):%s", b.String())
			}
			t.Logf("gradients: worst single-parameter ||gpu-cpu||/||cpu|| = %.3g (%s) (information)", worst, wn)
			gradsShadow := make([]float32, mg.GradsFlat().Numel())
			g.ToHost(gradsShadow, mg.GradsFlat())
			sgd := nn.SGDConfig{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}
			sh.label = "optimizer"
			og, err := nn.NewSGD(sh, mg.Params(), sgd)
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
			for _, o := range []struct {
				name string
				g, c *nn.Tensor
			}{{"params after SGD", mg.ParamsFlat(), mc.ParamsFlat()}, {"running stats", mg.BuffersFlat(), mc.BuffersFlat()}} {
				if r := flatNormErr(e, o.g, o.c); r > fp32Tol {
					t.Errorf("%s: ||gpu-cpu||/||cpu|| = %.3g > %g", o.name, r, fp32Tol)
				} else {
					t.Logf("%s: ||gpu-cpu||/||cpu|| = %.3g", o.name, r)
				}
			}
			// The same step again without the shadow (which synchronises
			// before every op): bit-identical gradients, so no result
			// depends on timing or on a hazard the synchronisation hid.
			mg2, err := nn.NewResNet(g, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mg2.Free()
			copyModel(t, mg2, mc0)
			lg2, err := mg2.Forward(x[0])
			if err != nil {
				t.Fatal(err)
			}
			_, dg2, err := (&nn.CrossEntropy{Smoothing: 0.1}).Compute(g, lg2, ls[0])
			if err != nil {
				t.Fatal(err)
			}
			mg2.ZeroGrad()
			if err := mg2.Backward(dg2); err != nil {
				t.Fatal(err)
			}
			if d := bitDiffs(t, g, mg2.GradsFlat(), gradsShadow); d != 0 {
				t.Errorf("determinism: %d gradient values differ between the synchronised and the free-running step", d)
			}
			first, summary := sh.report()
			if first != "" {
				t.Errorf("per-op check: first op over its tolerance: %s", first)
			}
			t.Logf("per-op check (%d ops, each from the GPU's own inputs):%s", sh.seq, summary)
		})
	}
}

// TestGPUBF16TracksFP32 trains ResNet-18 (cifar stem) for 50 steps from the
// same weights in fp32 and bf16 on the GPU. Stated tolerance: every step's
// bf16 loss within 10% (+0.05) of the fp32 loss, and both runs must learn
// (final loss below 60% of the first).
func TestGPUBF16TracksFP32(t *testing.T) {
	g32 := openGPU(t, PrecisionFP32)
	if g32.info.Arch == "host" {
		t.Skip("100 ResNet-18 steps are too slow on the kernel emulator; runs on a GPU")
	}
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

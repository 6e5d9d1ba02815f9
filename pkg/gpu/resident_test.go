package gpu

import (
	"errors"
	"math"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// roundBF16 rounds v to the nearest bf16 (ties to even), as f2bf does.
func roundBF16(v float32) float32 {
	u := math.Float32bits(v)
	if u&0x7fffffff > 0x7f800000 {
		return math.Float32frombits((u | 0x400000) & 0xffff0000)
	}
	u += 0x7fff + (u>>16)&1
	return math.Float32frombits(u & 0xffff0000)
}

// round16 rounds the CPU side of x to bf16 in place.
func (e *env) round16(x tp) {
	h := make([]float32, x[1].Numel())
	e.c.ToHost(h, x[1])
	for i := range h {
		h[i] = roundBF16(h[i])
	}
	e.c.FromHost(x[1], h)
}

// makeResident turns the GPU side of x into a resident bf16 tensor and
// rounds the CPU side to the same values.
func (e *env) makeResident(x tp) {
	e.t.Helper()
	n, c, hw := dims4(x[0])
	if !e.g.begin() {
		e.t.Fatal(e.g.Err())
	}
	e.g.narrow(x[0], actDims{n, c, hw})
	e.g.end()
	e.round16(x)
	e.mustResident("makeResident", x[0], true)
}

func (e *env) mustResident(what string, t *nn.Tensor, want bool) {
	e.t.Helper()
	if _, ok := e.g.res[ptr(t)]; ok != want {
		e.t.Fatalf("%s: resident %v, want %v", what, ok, want)
	}
}

// TestGPUResidentOps runs every op that has a resident bf16 kernel on
// resident inputs and compares with the CPU backend run on the same
// (bf16) values. Tolerances: exact where the op only moves or selects
// values or adds two bf16 values once; 2^-7 relative (one bf16 rounding
// of a float32 result that may differ from the CPU's in its last bits)
// for BN passes and pooled sums; 1e-5 for float64 statistics.
func TestGPUResidentOps(t *testing.T) {
	e := newEnv(t, PrecisionBF16)
	const r16 = 1.0 / 128
	for _, sh := range [][4]int{{3, 16, 5, 5}, {2, 64, 4, 4}, {2, 2048, 1, 1}} {
		N, C, H, W := sh[0], sh[1], sh[2], sh[3]
		m := N * H * W
		x := e.rand(N, C, H, W)
		e.makeResident(x)
		e.check("ToHost of a resident tensor", x, 0)

		sum, sq := e.out(C), e.out(C)
		e.g.BatchNormStats(sum[0], sq[0], x[0])
		e.c.BatchNormStats(sum[1], sq[1], x[1])
		e.check("BatchNormStats sum", sum, 1e-5)
		e.check("BatchNormStats sumSq", sq, 1e-5)

		mean, gamma, beta := e.rand(C), e.rand(C), e.rand(C)
		invStd := e.from(positive(e, C), C)
		for _, relu := range []bool{false, true} {
			y := e.out(N, C, H, W)
			if relu {
				e.g.BatchNormReLUForward(y[0], x[0], mean[0], invStd[0], gamma[0], beta[0])
				e.c.(nn.FusedOps).BatchNormReLUForward(y[1], x[1], mean[1], invStd[1], gamma[1], beta[1])
			} else {
				e.g.BatchNormForward(y[0], x[0], mean[0], invStd[0], gamma[0], beta[0])
				e.c.BatchNormForward(y[1], x[1], mean[1], invStd[1], gamma[1], beta[1])
			}
			e.mustResident("BatchNormForward output", y[0], true)
			e.round16(y)
			e.check("BatchNormForward", y, r16)
		}

		y := e.out(N, C, H, W)
		e.g.ReLU(y[0], x[0])
		e.c.ReLU(y[1], x[1])
		e.mustResident("ReLU output", y[0], true)
		e.check("ReLU", y, 0)

		x2 := e.rand(N, C, H, W)
		e.makeResident(x2)
		s := e.out(N, C, H, W)
		e.g.Add(s[0], x[0], x2[0])
		e.c.Add(s[1], x[1], x2[1])
		e.round16(s)
		e.check("Add", s, 0)
		e.g.AddReLU(x2[0], x2[0], x[0]) // in place, as ResNet's blocks do
		e.c.(nn.FusedOps).AddReLU(x2[1], x2[1], x[1])
		e.round16(x2)
		e.check("AddReLU in place", x2, 0)

		dy := e.rand(N, C, H, W)
		e.makeResident(dy)
		sd, sdx := e.out(C), e.out(C)
		e.g.BatchNormBackwardStats(sd[0], sdx[0], dy[0], x[0], mean[0], invStd[0])
		e.c.BatchNormBackwardStats(sd[1], sdx[1], dy[1], x[1], mean[1], invStd[1])
		e.check("BatchNormBackwardStats sumDy", sd, 1e-5)
		e.check("BatchNormBackwardStats sumDyXhat", sdx, 1e-5)

		dx := e.out(N, C, H, W)
		e.g.BatchNormBackward(dx[0], dy[0], x[0], mean[0], invStd[0], gamma[0], sd[0], sdx[0], m)
		e.c.BatchNormBackward(dx[1], dy[1], x[1], mean[1], invStd[1], gamma[1], sd[1], sdx[1], m)
		e.mustResident("BatchNormBackward output", dx[0], true)
		e.round16(dx)
		e.check("BatchNormBackward", dx, r16)

		// ReLU mask fused into the statistics, in place on dy; y is the
		// ReLU output from above.
		sd2, sdx2 := e.out(C), e.out(C)
		e.g.ReLUBatchNormBackwardStats(sd2[0], sdx2[0], dy[0], y[0], x[0], mean[0], invStd[0])
		e.c.(nn.FusedOps).ReLUBatchNormBackwardStats(sd2[1], sdx2[1], dy[1], y[1], x[1], mean[1], invStd[1])
		e.check("ReLUBatchNormBackwardStats masked dy", dy, 0)
		e.check("ReLUBatchNormBackwardStats sumDy", sd2, 1e-5)
		e.check("ReLUBatchNormBackwardStats sumDyXhat", sdx2, 1e-5)

		g2 := e.rand(N, C, H, W)
		e.makeResident(g2)
		rb := e.out(N, C, H, W)
		e.g.ReLUBackward(rb[0], g2[0], y[0])
		e.c.ReLUBackward(rb[1], g2[1], y[1])
		e.mustResident("ReLUBackward output", rb[0], true)
		e.check("ReLUBackward", rb, 0)

		pp := nn.PoolParams{N: N, C: C, H: H, W: W, Kernel: 3, Stride: 2, Pad: 1}
		py, arg := e.out(N, C, pp.P(), pp.Q()), e.out(N, C, pp.P(), pp.Q())
		e.g.MaxPool2d(py[0], arg[0], x[0], pp)
		e.c.MaxPool2d(py[1], arg[1], x[1], pp)
		e.mustResident("MaxPool2d output", py[0], true)
		e.check("MaxPool2d", py, 0)
		pdy := e.rand(N, C, pp.P(), pp.Q())
		e.makeResident(pdy)
		pdx := e.out(N, C, H, W)
		e.g.MaxPool2dBackward(pdx[0], pdy[0], arg[0], pp)
		e.c.MaxPool2dBackward(pdx[1], pdy[1], arg[1], pp)
		e.mustResident("MaxPool2dBackward output", pdx[0], true)
		e.round16(pdx)
		e.check("MaxPool2dBackward", pdx, r16)

		gp := e.out(N, C)
		e.g.GlobalAvgPool(gp[0], x[0])
		e.c.GlobalAvgPool(gp[1], x[1])
		e.mustResident("GlobalAvgPool output", gp[0], false)
		e.check("GlobalAvgPool", gp, 1e-6)

		cp := e.out(N, C, H, W)
		e.g.Copy(cp[0], x[0])
		e.c.Copy(cp[1], x[1])
		e.mustResident("Copy of a resident tensor", cp[0], true)
		e.check("Copy", cp, 0)

		// Mixed inputs: the float32 one is rounded to resident bf16 first.
		pl := e.rand(N, C, H, W)
		mx := e.out(N, C, H, W)
		e.g.Add(mx[0], x[0], pl[0])
		e.mustResident("float32 input of a mixed Add", pl[0], true)
		e.round16(pl)
		e.c.Add(mx[1], x[1], pl[1])
		e.round16(mx)
		e.check("mixed Add", mx, 0)

		// An op without a resident kernel widens in place, exactly.
		e.g.Scale(cp[0], 2)
		e.c.Scale(cp[1], 2)
		e.mustResident("Scale's tensor", cp[0], false)
		e.check("Scale after widening", cp, 0)
		e.g.Fill(x2[0], 1)
		e.mustResident("filled tensor", x2[0], false)
	}
	if err := e.g.Sync(); err != nil {
		t.Fatal(err)
	}
}

func positive(e *env, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 0.5 + float32(e.rng.Float64())
	}
	return v
}

// A convolution's output is resident in the bf16 precision when its
// channel count allows, and never with FP32Activations or in fp32.
func TestGPUResidentConvOutputs(t *testing.T) {
	e := newEnv(t, PrecisionBF16)
	p := nn.ConvParams{N: 2, C: 3, H: 6, W: 6, K: 16, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	x, w := e.rand(p.N, p.C, p.H, p.W), e.rand(p.K, p.C, p.R, p.S)
	y := e.out(p.N, p.K, p.P(), p.Q())
	e.g.Conv2d(y[0], x[0], w[0], p)
	e.mustResident("Conv2d output (16 channels)", y[0], true)
	p6 := p
	p6.K = 6
	w6 := e.rand(6, 3, 3, 3)
	y6 := e.out(p.N, 6, p.P(), p.Q())
	e.g.Conv2d(y6[0], x[0], w6[0], p6)
	e.mustResident("Conv2d output (6 channels)", y6[0], false)
	// backward data into 16 channels from a resident dy
	q := nn.ConvParams{N: 2, C: 16, H: 6, W: 6, K: 16, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	wq := e.rand(16, 16, 3, 3)
	dx := e.out(2, 16, 6, 6)
	e.g.Conv2dBackwardData(dx[0], y[0], wq[0], q)
	e.mustResident("Conv2dBackwardData output", dx[0], true)
	if err := e.g.Sync(); err != nil {
		t.Fatal(err)
	}

	for _, o := range []Options{{Precision: PrecisionBF16, FP32Activations: true}, {Precision: PrecisionFP32}} {
		f := newFakeDevice(t)
		if err := o.validate(); err != nil {
			t.Fatal(err)
		}
		b := newBackend(o, f, 4)
		bx, bw, by := b.New(p.N, p.C, p.H, p.W), b.New(p.K, p.C, p.R, p.S), b.New(p.N, p.K, p.P(), p.Q())
		b.Conv2d(by, bx, bw, p)
		if err := errors.Join(append(f.errs, b.Sync())...); err != nil {
			t.Fatal(err)
		}
		if len(b.res) != 0 || f.launches["k_nchw_to_nhwc_bf16"] != 0 && o.Precision == PrecisionFP32 {
			t.Fatalf("%+v: resident tensors %v", o, b.res)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []Options{{Precision: PrecisionBF16, GemmPlanes: -2}, {Precision: PrecisionBF16, ConvSearch: "fast"}} {
		if err := o.validate(); !errors.Is(err, ErrOptions) {
			t.Fatalf("%+v: %v, want ErrOptions", o, err)
		}
	}
}

// TestGPUResNet18BF16Step runs one ResNet-18 training step (cifar stem)
// in the bf16 precision with resident activations, in the bf16 precision
// with float32 activations (FP32Activations), and on the CPU in float32,
// from the same weights. Stated tolerances: loss within 2% and logits
// within 5% norm-wise of the CPU's; the flat gradient's norm-wise error
// at most 1.5x that of the float32-activation path (or 10%): keeping
// activations in bf16 must not cost more than half again the error the
// bf16 convolutions already make (with 2 images a BN layer sees few
// values, which amplifies both). The resident step runs twice:
// bit-identical gradients.
func TestGPUResNet18BF16Step(t *testing.T) {
	g := openGPU(t, PrecisionBF16)
	c := plainCPU()
	n := 8
	if g.info.Arch == "host" {
		n = 2 // the emulator is slow
	}
	cfg := nn.ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Seed: 5}
	mc, err := nn.NewResNet(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Free()
	xs, ls := learnable(9, 1, n, 32)
	e := &env{t: t, g: g, c: c}
	x := e.from(xs[0], n, 3, 32, 32)
	step := func(b nn.Backend, m *nn.Model, x *nn.Tensor) (float32, *nn.Tensor) {
		lg, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		if b == nn.Backend(g) && len(g.res) == 0 && !g.opts.FP32Activations {
			t.Fatal("no resident activations after the bf16 forward pass")
		}
		l, dl, err := (&nn.CrossEntropy{}).Compute(b, lg, ls[0])
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		return l, lg
	}
	lossC, lc := step(c, mc, x[1])
	defer func() { g.opts.FP32Activations = false }()
	var first, firstSecond []float32
	var errFP32Act float64
	for run := 0; run < 3; run++ {
		g.opts.FP32Activations = run == 0
		mg, err := nn.NewResNet(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		copyModel(t, mg, mc)
		lossG, lg0 := step(g, mg, x[0])
		lg := g.New(lg0.Shape...) // the second step below overwrites lg0
		defer g.Free(lg)
		g.Copy(lg, lg0)
		// A second step after an SGD update: every pool buffer now comes
		// back in another role, with the first step's records behind it.
		var second []float32
		if run > 0 {
			opt, err := nn.NewSGD(g, mg.Params(), nn.SGDConfig{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4})
			if err != nil {
				t.Fatal(err)
			}
			g1 := make([]float32, mg.GradsFlat().Numel())
			g.ToHost(g1, mg.GradsFlat())
			if err := opt.Step(); err != nil {
				t.Fatal(err)
			}
			l2, _ := step(g, mg, x[0])
			if err := g.Sync(); err != nil || math.IsNaN(float64(l2)) {
				t.Fatalf("second bf16 step: loss %v, %v", l2, err)
			}
			second = make([]float32, mg.GradsFlat().Numel())
			g.ToHost(second, mg.GradsFlat())
			g.FromHost(mg.GradsFlat(), g1) // the first step's gradients, for the checks below
		}
		what := "resident"
		if run == 0 {
			what = "fp32 activations"
		}
		rg := flatNormErr(e, mg.GradsFlat(), mc.GradsFlat())
		switch run {
		case 0:
			errFP32Act = rg
			t.Logf("%s: gradients ||bf16-fp32||/||fp32|| = %.3g", what, rg)
		case 1:
			if r := math.Abs(float64(lossG-lossC)) / float64(lossC); r > 0.02 {
				t.Errorf("loss bf16 %v fp32 cpu %v (relative %.3g > 0.02)", lossG, lossC, r)
			}
			if r := flatNormErr(e, lg, lc); r > 0.05 {
				t.Errorf("logits: ||bf16-fp32||/||fp32|| = %.3g > 0.05", r)
			}
			tol := math.Max(0.1, 1.5*errFP32Act)
			if rg > tol {
				t.Errorf("%s: gradients ||bf16-fp32||/||fp32|| = %.3g > %.3g", what, rg, tol)
			}
			t.Logf("%s: gradients ||bf16-fp32||/||fp32|| = %.3g (tolerance %.3g)", what, rg, tol)
			first = make([]float32, mg.GradsFlat().Numel())
			g.ToHost(first, mg.GradsFlat())
			firstSecond = second
		case 2:
			if d := bitDiffs(t, g, mg.GradsFlat(), first); d != 0 {
				t.Errorf("determinism: %d gradient values differ between two identical bf16 steps", d)
			}
			g.FromHost(mg.GradsFlat(), second)
			if d := bitDiffs(t, g, mg.GradsFlat(), firstSecond); d != 0 {
				t.Errorf("determinism: %d gradient values of the second step differ between two identical runs", d)
			}
		}
		mg.Free()
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

package gpu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// emuOps runs a fixed sequence of the backend's own kernels (no cuBLAS or
// cuDNN) on inputs drawn from seed and returns every output by name:
// resident bf16 BN passes (64 channels), the fused ReLU passes, pooling,
// float32 BN passes (12 channels: not resident), the loss and the SGD and
// Adam steps. The reduced inputs hold values of +-2^40 that cancel, so
// that reductions in another order give other bits; the shapes are large
// enough that the reductions' chunk counts depend on the multiprocessor
// count (1M elements a tensor).
func emuOps(t *testing.T, b *Backend, seed int64) map[string][]float32 {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	draw := func(wide bool, shape ...int) *nn.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		sign := 1.0
		for i := range v {
			v[i] = float32(rng.NormFloat64())
			if wide && rng.Intn(64) == 0 {
				// +-2^40 in turn: what one absorbs before the next
				// cancels it depends on the summation order.
				v[i], sign = float32(math.Ldexp(sign, 40)), -sign
			}
		}
		x := b.New(shape...)
		b.FromHost(x, v)
		return x
	}
	positive := func(n int) *nn.Tensor {
		v := make([]float32, n)
		for i := range v {
			v[i] = 0.5 + rng.Float32()
		}
		x := b.New(n)
		b.FromHost(x, v)
		return x
	}
	resident := func(x *nn.Tensor) *nn.Tensor {
		n, c, hw := dims4(x)
		if !b.begin() {
			t.Fatal(b.Err())
		}
		b.narrow(x, actDims{n, c, hw})
		b.end()
		return x
	}
	out := map[string][]float32{}
	keep := func(name string, x *nn.Tensor) {
		h := make([]float32, x.Numel())
		b.ToHost(h, x)
		out[name] = h
	}

	for _, sh := range []struct {
		name       string
		n, c, h, w int
		res        bool
	}{{"bf16", 16, 64, 32, 32, true}, {"fp32", 16, 12, 32, 32, false}} {
		N, C, H, W := sh.n, sh.c, sh.h, sh.w
		x, dy, g2 := draw(true, N, C, H, W), draw(true, N, C, H, W), draw(false, N, C, H, W)
		if sh.res {
			resident(x)
			resident(dy)
			resident(g2)
		}
		mean, gamma, beta, invStd := draw(false, C), draw(false, C), draw(false, C), positive(C)
		sum, sq := b.New(C), b.New(C)
		b.BatchNormStats(sum, sq, x)
		keep(sh.name+" BatchNormStats sum", sum)
		keep(sh.name+" BatchNormStats sumSq", sq)
		y, yr := b.New(N, C, H, W), b.New(N, C, H, W)
		b.BatchNormForward(y, x, mean, invStd, gamma, beta)
		b.BatchNormReLUForward(yr, x, mean, invStd, gamma, beta)
		keep(sh.name+" BatchNormForward", y)
		keep(sh.name+" BatchNormReLUForward", yr)
		sd, sdx := b.New(C), b.New(C)
		b.BatchNormBackwardStats(sd, sdx, dy, x, mean, invStd)
		keep(sh.name+" BatchNormBackwardStats sumDy", sd)
		keep(sh.name+" BatchNormBackwardStats sumDyXhat", sdx)
		dx := b.New(N, C, H, W)
		b.BatchNormBackward(dx, dy, x, mean, invStd, gamma, sd, sdx, N*H*W)
		keep(sh.name+" BatchNormBackward", dx)
		b.ReLUBatchNormBackwardStats(sd, sdx, dy, yr, x, mean, invStd)
		keep(sh.name+" ReLUBatchNormBackwardStats sumDy", sd)
		keep(sh.name+" ReLUBatchNormBackwardStats sumDyXhat", sdx)
		keep(sh.name+" ReLUBatchNormBackwardStats masked dy", dy)
		a, s := b.New(N, C, H, W), b.New(N, C, H, W)
		b.ReLU(a, g2)
		keep(sh.name+" ReLU", a)
		b.Add(s, g2, y)
		keep(sh.name+" Add", s)
		b.AddReLU(s, s, g2)
		keep(sh.name+" AddReLU", s)
		b.ReLUBackward(a, g2, yr)
		keep(sh.name+" ReLUBackward", a)
		pp := nn.PoolParams{N: N, C: C, H: H, W: W, Kernel: 3, Stride: 2, Pad: 1}
		py, arg := b.New(N, C, pp.P(), pp.Q()), b.New(N, C, pp.P(), pp.Q())
		b.MaxPool2d(py, arg, g2, pp)
		keep(sh.name+" MaxPool2d", py)
		pdx := b.New(N, C, H, W)
		b.MaxPool2dBackward(pdx, py, arg, pp)
		keep(sh.name+" MaxPool2dBackward", pdx)
		gp := b.New(N, C)
		b.GlobalAvgPool(gp, x)
		keep(sh.name+" GlobalAvgPool", gp)
	}

	logits := draw(false, 32, 10)
	labels := make([]int32, 32)
	for i := range labels {
		labels[i] = int32(rng.Intn(10))
	}
	loss, dl := b.New(1), b.New(32, 10)
	b.SoftmaxCrossEntropy(loss, dl, nil, logits, labels, 0.1, 1)
	keep("loss", loss)
	keep("loss dlogits", dl)

	const n = 100003
	p, g, buf := draw(false, n), draw(false, n), b.New(n)
	b.SGDStep(p, g, buf, nn.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true}, true)
	b.SGDStep(p, g, buf, nn.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true}, false)
	keep("SGD", p)
	m, v := b.New(n), b.New(n)
	b.Fill(m, 0)
	b.Fill(v, 0)
	for s := 1; s <= 2; s++ {
		b.AdamStep(p, g, m, v, nil, nn.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2, Decoupled: true, Step: s})
	}
	keep("Adam", p)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	return out
}

// opsDiffer lists the outputs of emuOps whose bits differ between want
// and got, with a count and the first difference; the loss and its
// gradient (expf, logf) may differ by 1e-6 relative.
func opsDiffer(want, got map[string][]float32) map[string]string {
	diff := map[string]string{}
	for name, w := range want {
		h := got[name]
		tol := 0.0
		if name == "loss" || name == "loss dlogits" {
			tol = 1e-6
		}
		bad, first := 0, -1
		for i := range w {
			if math.Float32bits(w[i]) == math.Float32bits(h[i]) {
				continue
			}
			if tol > 0 && math.Abs(float64(h[i]-w[i])) <= tol*math.Max(1e-30, math.Abs(float64(w[i]))) {
				continue
			}
			if first < 0 {
				first = i
			}
			bad++
		}
		if bad > 0 {
			diff[name] = fmt.Sprintf("%d of %d elements differ; first %d: %v against %v", bad, len(w), first, h[first], w[first])
		}
	}
	return diff
}

// TestEmulatorMatchesGPU (a GPU machine with a C++ compiler): every
// output of emuOps has the same bits on the GPU and on the emulator given
// the GPU's multiprocessor count (the reductions' partitions depend on
// it): the emulator is then a faithful model of our kernels, block
// reductions included, and what it shows without a GPU holds on one. The
// loss and its gradient use expf and logf, whose CUDA and C library
// versions may differ in the last bit: within 1e-6 relative.
func TestEmulatorMatchesGPU(t *testing.T) {
	g, err := Open(withEnvSearch(Options{Precision: PrecisionBF16}))
	if err != nil {
		t.Skipf("needs a CUDA GPU: %v", err)
	}
	defer g.Close()
	e := emuSMsOrSkip(t, PrecisionBF16, g.info.SMs)
	want, got := emuOps(t, e, 5), emuOps(t, g, 5)
	for name, d := range opsDiffer(want, got) {
		t.Errorf("%s: GPU against the emulator: %s", name, d)
	}
	t.Logf("%d outputs compared", len(want))
}

// TestEmuOpsSeeThePartition: the comparison above has teeth. emuOps on
// emulators of 4 and 132 multiprocessors (other chunkings of the
// reductions) gives other bits in the statistics, and the same bits in
// every elementwise output.
func TestEmuOpsSeeThePartition(t *testing.T) {
	a, b := emuOps(t, emuSMsOrSkip(t, PrecisionBF16, 4), 5), emuOps(t, emuSMsOrSkip(t, PrecisionBF16, 132), 5)
	diff := opsDiffer(a, b)
	for _, name := range []string{"bf16 BatchNormStats sum", "bf16 BatchNormBackwardStats sumDy", "fp32 BatchNormBackwardStats sumDy"} {
		if _, ok := diff[name]; !ok {
			t.Errorf("%s: the same bits with 4 and 132 multiprocessors: the inputs do not expose the summation order", name)
		}
	}
	for _, name := range []string{"bf16 ReLU", "bf16 Add", "fp32 ReLU", "bf16 MaxPool2d", "SGD", "Adam"} {
		if d, ok := diff[name]; ok {
			t.Errorf("%s differs between 4 and 132 multiprocessors: %s", name, d)
		}
	}
	t.Logf("%d of %d outputs differ (the statistics and what depends on them)", len(diff), len(a))
}

// TestEmuOpsDeterministic: emuOps's sequence is a function of its seed
// (what TestEmulatorMatchesGPU relies on), here on whatever device the
// tests use.
func TestEmuOpsDeterministic(t *testing.T) {
	b := openGPU(t, PrecisionBF16)
	a, c := emuOps(t, b, 5), emuOps(t, b, 5)
	if len(a) < 30 {
		t.Fatalf("%d outputs", len(a))
	}
	for name, v := range a {
		for i := range v {
			if math.Float32bits(v[i]) != math.Float32bits(c[name][i]) {
				t.Fatalf("%s: element %d: %v then %v", name, i, v[i], c[name][i])
			}
		}
	}
}

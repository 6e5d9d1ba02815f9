package gpu

// Tests that need a CUDA GPU. They skip with the reason when none is
// usable; with RINGTRAIN_REQUIRE_GPU=1 (the device check script) a missing
// GPU is a failure instead. Every op is compared with pkg/nn's CPU backend
// on fresh random inputs; assign outputs are poisoned with NaN first so an
// unwritten element fails.

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

var (
	gpuMu   sync.Mutex
	gpuOpen = map[string]*Backend{}
	gpuErr  = map[string]error{}
)

// openGPU returns a shared backend of the given precision or skips.
func openGPU(t testing.TB, prec string) *Backend {
	t.Helper()
	gpuMu.Lock()
	defer gpuMu.Unlock()
	b, err := gpuOpen[prec], gpuErr[prec]
	if b == nil && err == nil {
		b, err = Open(withEnvSearch(Options{Precision: prec, Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}))
		gpuOpen[prec], gpuErr[prec] = b, err
		if err == nil {
			i := b.Info()
			fmt.Fprintf(os.Stderr, "gpu: %s %s, %d SMs, %.1f GiB, driver %d, NVRTC %s, cuBLAS %d, cuDNN %d, kernels %s, libs %v\n",
				i.Name, i.Arch, i.SMs, float64(i.TotalMemory)/(1<<30), i.DriverVersion, i.NVRTCVersion, i.CUBLASVersion, i.CUDNNVersion, i.KernelImage, i.Libraries)
		}
	}
	if err != nil && os.Getenv("RINGTRAIN_REQUIRE_GPU") == "" && (errors.Is(err, ErrLibraryNotFound) || errors.Is(err, ErrNoDevice)) {
		// No GPU here: run the same tests on the kernel emulator (the
		// kernels built for the host), unless it is switched off.
		if os.Getenv("RINGTRAIN_GPU_EMU") == "off" {
			t.Skipf("no usable CUDA GPU (set RINGTRAIN_REQUIRE_GPU=1 to fail instead): %v", err)
		}
		key := "emu/" + prec
		b, err = gpuOpen[key], gpuErr[key]
		if b == nil && err == nil {
			b, err = openEmu(prec)
			gpuOpen[key], gpuErr[key] = b, err
		}
		if errors.Is(err, errNoCompiler) {
			t.Skipf("no usable CUDA GPU and no kernel emulator (%v)", err)
		}
		if err != nil {
			t.Fatalf("no usable CUDA GPU; the kernel emulator failed: %v", err)
		}
	}
	if err != nil {
		t.Fatalf("opening the CUDA backend: %v", err)
	}
	if err := b.Err(); err != nil {
		t.Fatalf("backend already failed: %v", err)
	}
	return b
}

// tp is one tensor on both backends: [0] GPU, [1] CPU.
type tp [2]*nn.Tensor

type env struct {
	t   *testing.T
	g   *Backend
	c   nn.Backend
	rng *rand.Rand
}

func newEnv(t *testing.T, prec string) *env {
	g := openGPU(t, prec)
	return &env{t: t, g: g, c: plainCPU(), rng: rand.New(rand.NewSource(int64(len(t.Name())) * 7919))}
}

// rand returns the same normal random values on both backends.
func (e *env) rand(shape ...int) tp {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rng.NormFloat64())
	}
	return e.from(v, shape...)
}

func (e *env) from(v []float32, shape ...int) tp {
	g, c := e.g.New(shape...), e.c.New(shape...)
	e.g.FromHost(g, v)
	e.c.FromHost(c, v)
	return tp{g, c}
}

// out is an assign output: NaN on the GPU (and the CPU) before the op.
func (e *env) out(shape ...int) tp {
	g, c := e.g.New(shape...), e.c.New(shape...)
	e.g.Fill(g, float32(math.NaN()))
	e.c.Fill(c, float32(math.NaN()))
	return tp{g, c}
}

func (e *env) host(x tp) (g, c []float32) {
	g = make([]float32, x[0].Numel())
	e.g.ToHost(g, x[0])
	if err := e.g.Sync(); err != nil {
		e.t.Fatalf("gpu: %v", err)
	}
	c = make([]float32, x[1].Numel())
	e.c.ToHost(c, x[1])
	return g, c
}

// check compares elementwise: |g-c| <= rtol*(|c| + 1e-3*max|c|); a NaN
// (an unwritten output) anywhere fails. It logs the worst error.
func (e *env) check(name string, x tp, rtol float64) {
	e.t.Helper()
	g, c := e.host(x)
	maxAbs := 0.0
	for _, v := range c {
		maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
	}
	worst, wi := 0.0, -1
	for i := range g {
		if math.IsNaN(float64(g[i])) != math.IsNaN(float64(c[i])) || math.IsInf(float64(g[i]), 0) {
			e.t.Errorf("%s: element %d: gpu %v, cpu %v (unwritten or non-finite)", name, i, g[i], c[i])
			return
		}
		r := math.Abs(float64(g[i])-float64(c[i])) / (math.Abs(float64(c[i])) + 1e-3*maxAbs + 1e-30)
		if r > worst {
			worst, wi = r, i
		}
	}
	if worst > rtol {
		e.t.Errorf("%s: worst relative error %.3g > %.1g at %d: gpu %v, cpu %v", name, worst, rtol, wi, g[wi], c[wi])
	} else {
		e.t.Logf("%s: worst relative error %.3g (n=%d)", name, worst, len(g))
	}
}

// normErr is ||g-c|| / ||c||.
func (e *env) normErr(x tp) float64 {
	g, c := e.host(x)
	var d, n float64
	for i := range g {
		if math.IsNaN(float64(g[i])) {
			return math.Inf(1)
		}
		d += (float64(g[i]) - float64(c[i])) * (float64(g[i]) - float64(c[i]))
		n += float64(c[i]) * float64(c[i])
	}
	return math.Sqrt(d / math.Max(n, 1e-30))
}

// Tolerances, by how an op computes (relative to |cpu| + 1e-3·max|cpu|):
const (
	// exact: the same float32 operations in the same order on both
	// (elementwise ops, BN normalisation, gathers): bit-identical.
	exact = 0
	// oneRounding: computed in float64 on both (in different orders, or
	// with different libm exp/log), rounded once to float32: at most one
	// ulp apart, plus slack for the float64 differences.
	oneRounding = 2.0 / (1 << 23)
	// fp32Tol is the end-to-end bound for fp32 results (logits,
	// loss of a whole network).
	fp32Tol = 1e-4
)

var convCases = []nn.ConvParams{
	{N: 3, C: 5, H: 9, W: 7, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
	{N: 2, C: 3, H: 20, W: 18, K: 6, R: 7, S: 7, StrideH: 2, StrideW: 2, PadH: 3, PadW: 3},
	{N: 4, C: 8, H: 8, W: 8, K: 16, R: 1, S: 1, StrideH: 2, StrideW: 2},
	{N: 5, C: 16, H: 6, W: 6, K: 8, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
	{N: 1, C: 2, H: 5, W: 5, K: 3, R: 3, S: 3, StrideH: 1, StrideW: 1},
	// ResNet-18's cifar stem and a layer1 convolution at 32x32 (odd N so
	// that a two-image chunking leaves a partial last chunk).
	{N: 3, C: 3, H: 32, W: 32, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
	{N: 3, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
	// Small planes (the bf16 GEMM path of gemmconv.go): a last-stage 3x3
	// on 4x4, and its strided entry.
	{N: 3, C: 16, H: 4, W: 4, K: 24, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
	{N: 2, C: 8, H: 8, W: 8, K: 16, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
}

// convPerImage is the scratch one image of p needs (Backend.convChunk).
func convPerImage(p nn.ConvParams) int64 {
	return int64(max(p.C*p.R*p.S, p.K)) * int64(p.P()*p.Q()) * 4
}

// unitRoundoff is float32's u = 2^-24 (bf16's, with 8 significant bits, is 2^-8).
const unitRoundoff = 1.0 / (1 << 24)

// sumBound is the tolerance, in units of Σ|terms|, for a sum of k
// products computed in float32 by two implementations in different orders:
// each is within (k-1)u·Σ|terms| of the exact sum whatever its order (the
// classical bound for recursive or blocked summation), so they are within
// 2k·u of each other; bf16 operands add 2^-7 (each of the two operands of
// a product rounded to 8 significant bits: relative error at most
// (1+2^-8)^2-1 < 2^-7 + 2^-16), and 2^-8 more for a bf16 result (cuDNN's
// bf16 path writes y, dx and dw in bf16).
func sumBound(k int, bf16 bool) float64 {
	b := 2 * float64(k) * unitRoundoff
	if bf16 {
		b += 1.0/128 + 1.0/256 + 1.0/65536
	}
	return b
}

// absTensor returns |v| of x's CPU copy as a new CPU tensor.
func (e *env) absCPU(x tp) *nn.Tensor {
	h := make([]float32, x[1].Numel())
	e.c.ToHost(h, x[1])
	for i := range h {
		h[i] = float32(math.Abs(float64(h[i])))
	}
	t := e.c.New(x[1].Shape...)
	e.c.FromHost(t, h)
	return t
}

// checkBound compares elementwise against the rounding bound of a sum:
// |gpu-cpu| <= tol·scale[i], where scale[i] is Σ|terms| of element i (the
// same op run on the CPU with absolute values). A result whose terms are
// all zero must match exactly. It logs the worst ratio to the bound and
// the plain relative error for information.
func (e *env) checkBound(name string, x tp, scale *nn.Tensor, tol float64) {
	e.t.Helper()
	g, c := e.host(x)
	sc := make([]float32, scale.Numel())
	e.c.ToHost(sc, scale)
	worst, wi, rel := 0.0, 0, 0.0
	for i := range g {
		d := math.Abs(float64(g[i]) - float64(c[i]))
		if math.IsNaN(d) || math.IsInf(float64(g[i]), 0) {
			e.t.Errorf("%s: element %d: gpu %v, cpu %v (unwritten or non-finite)", name, i, g[i], c[i])
			return
		}
		r := d / (tol*float64(sc[i]) + 1e-300)
		if d == 0 {
			r = 0
		}
		if r > worst {
			worst, wi = r, i
		}
		rel = math.Max(rel, d/(math.Abs(float64(c[i]))+1e-30))
	}
	if worst > 1 {
		e.t.Errorf("%s: error %.3g x the bound (%.2g x Σ|terms|) at %d: gpu %v, cpu %v, Σ|terms| %v",
			name, worst, tol, wi, g[wi], c[wi], sc[wi])
	} else {
		e.t.Logf("%s: worst error %.3f of the bound %.2g x Σ|terms| (max relative %.3g, n=%d)", name, worst, tol, rel, len(g))
	}
}

func testConv(t *testing.T, prec string) {
	e := newEnv(t, prec)
	bf16 := prec == PrecisionBF16
	saved, planes := e.g.opts.ScratchBytes, e.g.opts.GemmPlanes
	defer func() {
		e.g.opts.ScratchBytes, e.g.forceIm2col, e.g.opts.GemmPlanes, e.g.gemmBwdData = saved, false, planes, false
	}()
	type run struct {
		name    string
		scratch int64
		im2col  bool
		gemm    bool // every plane size takes gemmconv.go's path (bf16)
	}
	for ci, p := range convCases {
		// im2col: all images in one chunk; one image per chunk; two per chunk
		runs := []run{{"im2col/G=all", saved, true, false}, {"im2col/G=1", 1, true, false}, {"im2col/G=2", 2 * convPerImage(p), true, false}}
		if acc, ok := e.g.dev.(convAccel); ok && acc.hasConvLib() {
			runs = append(runs, run{"cudnn", saved, false, false})
		}
		if bf16 {
			runs = append(runs, run{"gemm", saved, false, true})
		}
		for _, r := range runs {
			e.g.opts.ScratchBytes, e.g.forceIm2col, e.g.opts.GemmPlanes = r.scratch, r.im2col, planes
			e.g.gemmBwdData = r.gemm
			if r.gemm {
				e.g.opts.GemmPlanes = 1 << 30
			}
			name := fmt.Sprintf("case%d/%s", ci, r.name)
			x, w := e.rand(p.N, p.C, p.H, p.W), e.rand(p.K, p.C, p.R, p.S)
			y := e.out(p.N, p.K, p.P(), p.Q())
			e.g.Conv2d(y[0], x[0], w[0], p)
			e.c.Conv2d(y[1], x[1], w[1], p)
			if emu, ok := e.g.dev.(*emuDevice); ok && r.gemm && p.K%8 == 0 && (p.C%8 == 0 || p.C*p.R*p.S <= narrowCRS) {
				if n := len(emu.gemms); n == 0 || !emu.gemms[n-1].bf16Out {
					t.Fatalf("%s: Conv2d did not run as a GEMM with a bf16 output", name)
				}
			}
			dy := e.rand(p.N, p.K, p.P(), p.Q())
			dx := e.out(p.N, p.C, p.H, p.W)
			e.g.Conv2dBackwardData(dx[0], dy[0], w[0], p)
			e.c.Conv2dBackwardData(dx[1], dy[1], w[1], p)
			dw := e.rand(p.K, p.C, p.R, p.S) // accumulate onto random values
			dwAbs := e.absCPU(dw)
			e.g.Conv2dBackwardFilter(dw[0], x[0], dy[0], p)
			e.c.Conv2dBackwardFilter(dw[1], x[1], dy[1], p)

			if !r.im2col { // the plan is cached by now: no cuDNN call here
				for d, what := range []string{"fwd", "bwd-data", "bwd-filter"} {
					if pl := e.g.plans[p]; pl != nil && pl.ok[d] {
						name += fmt.Sprintf(" %s:algo%d", what, pl.algo[d])
					} else {
						name += " " + what + ":im2col"
					}
				}
			}
			ax, aw, ady := e.absCPU(x), e.absCPU(w), e.absCPU(dy)
			ay, adx := e.c.New(y[1].Shape...), e.c.New(dx[1].Shape...)
			e.c.Conv2d(ay, ax, aw, p)
			e.c.Conv2dBackwardData(adx, ady, aw, p)
			e.c.Conv2dBackwardFilter(dwAbs, ax, ady, p)
			e.checkBound(name+" Conv2d", y, ay, sumBound(p.C*p.R*p.S, bf16))
			e.checkBound(name+" Conv2dBackwardData", dx, adx, sumBound(p.K*p.R*p.S, bf16))
			e.checkBound(name+" Conv2dBackwardFilter", dw, dwAbs, sumBound(p.N*p.P()*p.Q()+1, bf16))
		}
	}
}

// Convolutions: within the rounding bound of their sums (sumBound).
func TestGPUConvFP32(t *testing.T) { testConv(t, PrecisionFP32) }

// bf16 operands (8 significant bits) with fp32 accumulation: the bound
// adds 2^-7 x Σ|terms| for the operand rounding.
func TestGPUConvBF16(t *testing.T) { testConv(t, PrecisionBF16) }

func TestGPULinearAndBias(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	for _, withBias := range []bool{true, false} {
		x, w, b := e.rand(7, 33), e.rand(10, 33), e.rand(10)
		var bg, bc, ab *nn.Tensor
		if withBias {
			bg, bc, ab = b[0], b[1], e.absCPU(b)
		}
		y := e.out(7, 10)
		e.g.Linear(y[0], x[0], w[0], bg)
		e.c.Linear(y[1], x[1], w[1], bc)
		ay := e.c.New(7, 10)
		e.c.Linear(ay, e.absCPU(x), e.absCPU(w), ab)
		e.checkBound(fmt.Sprintf("Linear bias=%v", withBias), y, ay, sumBound(33+1, false))
	}
	x, w, dy := e.rand(7, 33), e.rand(10, 33), e.rand(7, 10)
	dx, dw, db := e.out(7, 33), e.rand(10, 33), e.rand(10)
	adw := e.absCPU(dw)
	e.g.LinearBackward(dx[0], dw[0], db[0], dy[0], x[0], w[0])
	e.c.LinearBackward(dx[1], dw[1], db[1], dy[1], x[1], w[1])
	adx := e.c.New(7, 33)
	e.c.LinearBackward(adx, adw, nil, e.absCPU(dy), e.absCPU(x), e.absCPU(w))
	e.checkBound("LinearBackward dx", dx, adx, sumBound(10, false))
	e.checkBound("LinearBackward dw", dw, adw, sumBound(7+1, false))
	e.check("LinearBackward db", db, 2*oneRounding)

	y, bias := e.rand(3, 6, 5, 4), e.rand(6)
	e.g.AddChannelBias(y[0], bias[0])
	e.c.AddChannelBias(y[1], bias[1])
	e.check("AddChannelBias", y, exact)
	db2 := e.rand(6)
	e.g.ChannelBiasBackward(db2[0], y[0])
	e.c.ChannelBiasBackward(db2[1], y[1])
	e.check("ChannelBiasBackward", db2, 2*oneRounding) // float64 sum rounded, then += (a second rounding)
}

func TestGPUBatchNorm(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	for _, s := range [][]int{{4, 3, 5, 5}, {64, 8, 32, 32}, {16, 512, 4, 4}} {
		n, c := s[0], s[1]
		m := 1
		for _, d := range s {
			m *= d
		}
		m /= c
		x := e.rand(s...)
		// shift and scale so the statistics are not trivial
		e.g.Scale(x[0], 3)
		e.c.Scale(x[1], 3)
		sum, sq := e.out(c), e.out(c)
		e.g.BatchNormStats(sum[0], sq[0], x[0])
		e.c.BatchNormStats(sum[1], sq[1], x[1])
		e.check(fmt.Sprint("BatchNormStats sum ", s), sum, oneRounding)
		e.check(fmt.Sprint("BatchNormStats sumSq ", s), sq, oneRounding)
		mean, inv := e.out(c), e.out(c)
		rm, rv := e.rand(c), e.rand(c)
		e.g.Fill(rv[0], 1.5)
		e.c.Fill(rv[1], 1.5)
		e.g.BatchNormStatsFinish(mean[0], inv[0], rm[0], rv[0], sum[0], sq[0], m, 0.1, 1e-5)
		e.c.BatchNormStatsFinish(mean[1], inv[1], rm[1], rv[1], sum[1], sq[1], m, 0.1, 1e-5)
		for _, o := range []struct {
			n string
			x tp
		}{{"mean", mean}, {"invStd", inv}, {"runMean", rm}, {"runVar", rv}} {
			e.check(fmt.Sprint("BatchNormStatsFinish ", o.n, s), o.x, oneRounding)
		}
		gam, bet := e.rand(c), e.rand(c)
		// The CPU's statistics on both sides, so the check isolates the op.
		hm, hi := make([]float32, c), make([]float32, c)
		e.c.ToHost(hm, mean[1])
		e.c.ToHost(hi, inv[1])
		e.g.FromHost(mean[0], hm)
		e.g.FromHost(inv[0], hi)
		y := e.out(s...)
		e.g.BatchNormForward(y[0], x[0], mean[0], inv[0], gam[0], bet[0])
		e.c.BatchNormForward(y[1], x[1], mean[1], inv[1], gam[1], bet[1])
		e.check(fmt.Sprint("BatchNormForward ", s), y, exact)
		dy := e.rand(s...)
		sdy, sdx := e.out(c), e.out(c)
		e.g.BatchNormBackwardStats(sdy[0], sdx[0], dy[0], x[0], mean[0], inv[0])
		e.c.BatchNormBackwardStats(sdy[1], sdx[1], dy[1], x[1], mean[1], inv[1])
		e.check(fmt.Sprint("BatchNormBackwardStats sumDy ", s), sdy, oneRounding)
		e.check(fmt.Sprint("BatchNormBackwardStats sumDyXhat ", s), sdx, oneRounding)
		dx := e.out(s...)
		// Use the CPU's sums on both sides so the check isolates this op.
		hs, hx := make([]float32, c), make([]float32, c)
		e.c.ToHost(hs, sdy[1])
		e.c.ToHost(hx, sdx[1])
		e.g.FromHost(sdy[0], hs)
		e.g.FromHost(sdx[0], hx)
		e.g.BatchNormBackward(dx[0], dy[0], x[0], mean[0], inv[0], gam[0], sdy[0], sdx[0], m)
		e.c.BatchNormBackward(dx[1], dy[1], x[1], mean[1], inv[1], gam[1], sdy[1], sdx[1], m)
		e.check(fmt.Sprint("BatchNormBackward ", s), dx, exact)
		v := e.rand(c)
		e.g.Mul(v[0], v[0], v[0])
		e.c.Mul(v[1], v[1], v[1])
		is := e.out(c)
		e.g.BatchNormInvStd(is[0], v[0], 1e-5)
		e.c.BatchNormInvStd(is[1], v[1], 1e-5)
		e.check(fmt.Sprint("BatchNormInvStd ", s), is, oneRounding)
		_ = n
	}
}

func TestGPUElementwise(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	s := []int{3, 7, 11, 13}
	x, y2 := e.rand(s...), e.rand(s...)
	y := e.out(s...)
	e.g.ReLU(y[0], x[0])
	e.c.ReLU(y[1], x[1])
	e.check("ReLU", y, 0)
	dy := e.rand(s...)
	dx := e.out(s...)
	e.g.ReLUBackward(dx[0], dy[0], y[0])
	e.c.ReLUBackward(dx[1], dy[1], y[1])
	e.check("ReLUBackward", dx, 0)
	e.g.ReLUBackward(dy[0], dy[0], y[0]) // aliasing allowed
	e.c.ReLUBackward(dy[1], dy[1], y[1])
	e.check("ReLUBackward aliased", dy, 0)
	e.g.ReLU(x[0], x[0])
	e.c.ReLU(x[1], x[1])
	e.check("ReLU aliased", x, 0)
	z := e.out(s...)
	e.g.Add(z[0], x[0], y2[0])
	e.c.Add(z[1], x[1], y2[1])
	e.check("Add", z, 0)
	e.g.Axpy(z[0], -0.3, y2[0])
	e.c.Axpy(z[1], -0.3, y2[1])
	e.check("Axpy", z, 0) // y + alpha*x rounded twice on both (--fmad=false)
	e.g.Scale(z[0], 1.7)
	e.c.Scale(z[1], 1.7)
	e.check("Scale", z, 0)
	e.g.Mul(z[0], z[0], y2[0])
	e.c.Mul(z[1], z[1], y2[1])
	e.check("Mul", z, 0)
	c := e.out(5, 5)
	e.g.Copy(c[0], z[0].View(17, 25))
	e.c.Copy(c[1], z[1].View(17, 25))
	e.check("Copy of a view", c, 0)
	e.g.Fill(c[0], 2.5)
	e.c.Fill(c[1], 2.5)
	e.check("Fill", c, 0)
}

func TestGPUPooling(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	for _, q := range []bool{false, true} { // q: values rounded to force ties
		p := nn.PoolParams{N: 3, C: 4, H: 13, W: 11, Kernel: 3, Stride: 2, Pad: 1}
		x := e.rand(p.N, p.C, p.H, p.W)
		if q {
			h := make([]float32, x[1].Numel())
			e.c.ToHost(h, x[1])
			for i := range h {
				h[i] = float32(math.Round(float64(h[i])))
			}
			x = e.from(h, p.N, p.C, p.H, p.W)
		}
		y, am := e.out(p.N, p.C, p.P(), p.Q()), e.out(p.N, p.C, p.P(), p.Q())
		e.g.MaxPool2d(y[0], am[0], x[0], p)
		e.c.MaxPool2d(y[1], am[1], x[1], p)
		e.check(fmt.Sprintf("MaxPool2d ties=%v", q), y, 0)
		e.check(fmt.Sprintf("MaxPool2d argmax ties=%v", q), am, 0)
		dy := e.rand(p.N, p.C, p.P(), p.Q())
		dx := e.out(p.N, p.C, p.H, p.W)
		e.g.MaxPool2dBackward(dx[0], dy[0], am[0], p)
		e.c.MaxPool2dBackward(dx[1], dy[1], am[1], p)
		e.check(fmt.Sprintf("MaxPool2dBackward ties=%v", q), dx, exact)
	}
	x := e.rand(5, 6, 7, 7)
	g := e.out(5, 6)
	e.g.GlobalAvgPool(g[0], x[0])
	e.c.GlobalAvgPool(g[1], x[1])
	e.check("GlobalAvgPool", g, oneRounding)
	dg := e.rand(5, 6)
	dx := e.out(5, 6, 7, 7)
	e.g.GlobalAvgPoolBackward(dx[0], dg[0])
	e.c.GlobalAvgPoolBackward(dx[1], dg[1])
	e.check("GlobalAvgPoolBackward", dx, exact)
}

func TestGPUSoftmaxCrossEntropy(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	for _, c := range []struct {
		n, k      int
		smooth, s float32
	}{{7, 10, 0.1, 1}, {3, 1000, 0, 1}, {300, 10, 0.2, 1024}} {
		lg := e.rand(c.n, c.k)
		labels := make([]int32, c.n)
		for i := range labels {
			labels[i] = int32(e.rng.Intn(c.k))
		}
		loss, dl, pr := e.out(1), e.out(c.n, c.k), e.out(c.n, c.k)
		e.g.SoftmaxCrossEntropy(loss[0], dl[0], pr[0], lg[0], labels, c.smooth, c.s)
		e.c.SoftmaxCrossEntropy(loss[1], dl[1], pr[1], lg[1], labels, c.smooth, c.s)
		name := fmt.Sprintf("SoftmaxCrossEntropy n=%d k=%d eps=%v", c.n, c.k, c.smooth)
		e.check(name+" loss", loss, oneRounding)
		e.check(name+" dlogits", dl, oneRounding)
		e.check(name+" probs", pr, oneRounding)
	}
}

func TestGPUOptimizers(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	const n = 1000
	// The optimizer kernels do the CPU's operations in the CPU's order with
	// the same roundings (fused where the CPU fuses; sqrt and division are
	// correctly rounded on both), so they must agree to the last bit.
	const tol = 0
	fresh := func() (p, g tp) { return e.rand(n), e.rand(n) }
	for _, o := range []nn.SGDParams{{LR: 0.1}, {LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}, {LR: 0.05, Momentum: 0.9, Nesterov: true}, {LR: 0.1, Momentum: 0.5, Dampening: 0.3}} {
		p, g := fresh()
		buf := e.rand(n)
		for step := 0; step < 3; step++ {
			e.g.SGDStep(p[0], g[0], buf[0], o, step == 0)
			e.c.SGDStep(p[1], g[1], buf[1], o, step == 0)
		}
		e.check(fmt.Sprintf("SGD %+v p", o), p, tol)
		e.check(fmt.Sprintf("SGD %+v buf", o), buf, tol)
	}
	for _, o := range []nn.AdamParams{
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2, Decoupled: true},
		{LR: 1e-2, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6, WeightDecay: 1e-3, AMSGrad: true},
	} {
		p, g := fresh()
		m, v, vm := e.out(n), e.out(n), e.out(n)
		for _, x := range []tp{m, v, vm} {
			e.g.Fill(x[0], 0)
			e.c.Fill(x[1], 0)
		}
		for step := 1; step <= 3; step++ {
			o.Step = step
			e.g.AdamStep(p[0], g[0], m[0], v[0], vm[0], o)
			e.c.AdamStep(p[1], g[1], m[1], v[1], vm[1], o)
		}
		e.check(fmt.Sprintf("Adam %+v p", o), p, tol)
		e.check(fmt.Sprintf("Adam %+v v", o), v, tol)
	}
	{
		p, g := fresh()
		s := e.rand(n)
		e.g.Mul(s[0], s[0], s[0])
		e.c.Mul(s[1], s[1], s[1])
		for step := 1; step <= 3; step++ {
			o := nn.AdagradParams{LR: 0.01, LRDecay: 0.01, WeightDecay: 1e-4, Eps: 1e-10, Step: step}
			e.g.AdagradStep(p[0], g[0], s[0], o)
			e.c.AdagradStep(p[1], g[1], s[1], o)
		}
		e.check("Adagrad p", p, tol)
	}
	for _, o := range []nn.RMSpropParams{{LR: 0.01, Alpha: 0.99, Eps: 1e-8}, {LR: 0.01, Alpha: 0.9, Eps: 1e-8, WeightDecay: 1e-3, Momentum: 0.9, Centered: true}} {
		p, g := fresh()
		sq, buf, ga := e.out(n), e.out(n), e.out(n)
		for _, x := range []tp{sq, buf, ga} {
			e.g.Fill(x[0], 0)
			e.c.Fill(x[1], 0)
		}
		for step := 0; step < 3; step++ {
			e.g.RMSpropStep(p[0], g[0], sq[0], buf[0], ga[0], o)
			e.c.RMSpropStep(p[1], g[1], sq[1], buf[1], ga[1], o)
		}
		e.check(fmt.Sprintf("RMSprop %+v p", o), p, tol)
	}
}

func TestGPUCountNonFiniteAndDeterminism(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	v := make([]float32, 100003)
	for i := range v {
		v[i] = float32(e.rng.NormFloat64())
	}
	v[5], v[77777], v[100002] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))
	x := e.g.New(len(v))
	e.g.FromHost(x, v)
	if n := e.g.CountNonFinite(x); n != 3 {
		t.Fatalf("CountNonFinite = %d, want 3 (err %v)", n, e.g.Sync())
	}
	// Determinism: the same reduction twice is bit-identical.
	big := e.rand(128, 64, 16, 16)
	var first []float32
	for rep := 0; rep < 3; rep++ {
		s, q := e.g.New(64), e.g.New(64)
		e.g.BatchNormStats(s, q, big[0])
		h := make([]float32, 64)
		e.g.ToHost(h, q)
		if rep == 0 {
			first = h
		} else {
			for i := range h {
				if math.Float32bits(h[i]) != math.Float32bits(first[i]) {
					t.Fatalf("BatchNormStats not deterministic: rep %d channel %d: %v vs %v", rep, i, h[i], first[i])
				}
			}
		}
	}
	if err := e.g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// plainCPU is the CPU reference of the GPU tests: every convolution a
// plain float32 sum of products (no Winograd), the error model their
// tolerances are derived from.
func plainCPU() *nn.CPU {
	c := nn.NewCPU(0)
	c.SetWinograd(false)
	return c
}

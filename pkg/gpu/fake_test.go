package gpu

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// fakeDevice is a deviceAPI without a GPU: it checks every launch against
// the kernel's C signature (argument count and kinds), every pointer and
// every GEMM operand extent against the allocations, and records what ran.
type fakeDevice struct {
	t        *testing.T
	mem      *fakeAlloc
	sigs     map[string]string
	launches map[string]int
	gemms    int
	errs     []error
	hostCopies
}

func newFakeDevice(t *testing.T) *fakeDevice {
	return &fakeDevice{t: t, mem: newFakeAlloc(1 << 40), sigs: kernelSignatures(kernelSource()), launches: map[string]int{}}
}

func (f *fakeDevice) alloc(n uint64) (uint64, error) { return f.mem.alloc(n) }
func (f *fakeDevice) free(p uint64) error            { return f.mem.free(p) }
func (f *fakeDevice) enter() error                   { return nil }
func (f *fakeDevice) sync() error                    { return nil }
func (f *fakeDevice) close() error                   { return nil }

func (f *fakeDevice) bad(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	f.errs = append(f.errs, err)
	return err
}

// inside reports whether [p, p+bytes) lies in one live allocation.
func (f *fakeDevice) inside(p, bytes uint64) bool {
	for base, n := range f.mem.sizes {
		if p >= base && p+bytes <= base+n {
			return true
		}
	}
	return false
}

func (f *fakeDevice) launch(name string, grid, block dim3, args []karg) error {
	sig, ok := f.sigs[name]
	if !ok {
		return f.bad("launch of unknown kernel %s", name)
	}
	kinds := make([]byte, len(args))
	for i, a := range args {
		kinds[i] = a.kind
		if a.kind == 'p' && a.v != 0 && !f.inside(a.v, 4) {
			return f.bad("%s: argument %d is pointer %#x outside every allocation", name, i, a.v)
		}
	}
	if string(kinds) != sig {
		return f.bad("%s: argument kinds %q, C signature %q", name, kinds, sig)
	}
	if grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || block[0]*block[1]*block[2] > 1024 || block[0] == 0 {
		return f.bad("%s: bad launch shape grid %v block %v", name, grid, block)
	}
	f.launches[name]++
	return nil
}

func (f *fakeDevice) gemm(g gemmCall) error {
	es := uint64(4)
	if g.bf16Operands {
		es = 2
	}
	ext := func(what string, p uint64, rows, cols, ld int, esize uint64) error {
		if cols > ld {
			return f.bad("gemm %s: %d columns > leading dimension %d", what, cols, ld)
		}
		bytes := uint64((rows-1)*ld+cols) * esize
		if !f.inside(p, bytes) {
			return f.bad("gemm %s: %d x %d (ld %d) at %#x overruns its allocation", what, rows, cols, ld, p)
		}
		return nil
	}
	ar, ac := g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	cs := uint64(4)
	if g.bf16Out {
		if !g.bf16Operands || g.beta != 0 {
			return f.bad("gemm: bf16 output needs bf16 operands and beta 0")
		}
		cs = 2
	}
	if err := errors.Join(ext("A", g.a, ar, ac, g.lda, es), ext("B", g.b, br, bc, g.ldb, es), ext("C", g.c, g.m, g.n, g.ldc, cs)); err != nil {
		return err
	}
	f.gemms++
	return nil
}

func (f *fakeDevice) memsetD32(p uint64, v uint32, n uint64) error {
	if !f.inside(p, 4*n) {
		return f.bad("memset of %d words at %#x overruns", n, p)
	}
	return nil
}

func (f *fakeDevice) copyDtoD(dst, src, n uint64) error {
	if !f.inside(dst, n) || !f.inside(src, n) {
		return f.bad("copy of %d bytes overruns", n)
	}
	return nil
}

func (f *fakeDevice) upload(dst uint64, src unsafe.Pointer, n uint64) error {
	if !f.inside(dst, n) {
		return f.bad("upload of %d bytes overruns", n)
	}
	return nil
}

func (f *fakeDevice) downloadAsync(dst unsafe.Pointer, src uint64, n uint64) (int, error) {
	return f.queue(func() error { return f.download(dst, src, n) })
}

func (f *fakeDevice) download(dst unsafe.Pointer, src uint64, n uint64) error {
	if !f.inside(src, n) {
		return f.bad("download of %d bytes overruns", n)
	}
	clear(unsafe.Slice((*byte)(dst), n))
	return nil
}

// runAllOps calls every Backend op once with ResNet-like shapes.
func runAllOps(b *Backend) {
	cp := nn.ConvParams{N: 6, C: 3, H: 16, W: 16, K: 8, R: 7, S: 7, StrideH: 2, StrideW: 2, PadH: 3, PadW: 3}
	x := b.New(cp.N, cp.C, cp.H, cp.W)
	w := b.New(cp.K, cp.C, cp.R, cp.S)
	y := b.New(cp.N, cp.K, cp.P(), cp.Q())
	b.FromHost(x, make([]float32, x.Numel()))
	b.Conv2d(y, x, w, cp)
	b.Conv2dBackwardData(x, y, w, cp)
	b.Conv2dBackwardFilter(w, x, y, cp)
	// A 4x4-plane convolution: one GEMM over a channels-last column matrix
	// in the bf16 precision (gemmconv.go).
	sp := nn.ConvParams{N: 2, C: 8, H: 4, W: 4, K: 16, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	sx, sw, sy := b.New(sp.N, sp.C, sp.H, sp.W), b.New(sp.K, sp.C, sp.R, sp.S), b.New(sp.N, sp.K, sp.P(), sp.Q())
	b.Conv2d(sy, sx, sw, sp)
	b.Conv2dBackwardData(sx, sy, sw, sp)
	b.Conv2dBackwardFilter(sw, sx, sy, sp)
	for _, t := range []*nn.Tensor{sx, sw, sy} {
		b.Free(t)
	}
	bias := b.New(cp.K)
	b.AddChannelBias(y, bias)
	b.ChannelBiasBackward(bias, y)

	c := cp.K
	sum, sq, mean, inv, gam, bet, rm, rv := b.New(c), b.New(c), b.New(c), b.New(c), b.New(c), b.New(c), b.New(c), b.New(c)
	y2 := b.New(y.Shape...)
	pp := nn.PoolParams{N: 6, C: 8, H: 8, W: 8, Kernel: 3, Stride: 2, Pad: 1}
	py, arg := b.New(6, 8, pp.P(), pp.Q()), b.New(6, 8, pp.P(), pp.Q())
	g := b.New(6, 8)
	// Round 0 on float32 y; round 1 on y as the convolution leaves it
	// (resident bf16 in the bf16 precision, see resident.go).
	for round := 0; round < 2; round++ {
		if round == 1 {
			b.Conv2d(y, x, w, cp)
		}
		b.BatchNormStats(sum, sq, y)
		b.BatchNormStatsFinish(mean, inv, rm, rv, sum, sq, 6*8*8, 0.1, 1e-5)
		b.BatchNormStatsFinish(mean, inv, nil, nil, sum, sq, 6*8*8, 0.1, 1e-5)
		b.BatchNormInvStd(inv, rv, 1e-5)
		b.BatchNormForward(y2, y, mean, inv, gam, bet)
		b.BatchNormReLUForward(y2, y, mean, inv, gam, bet)
		b.BatchNormBackwardStats(sum, sq, y2, y, mean, inv)
		b.ReLUBatchNormBackwardStats(sum, sq, y2, y, y, mean, inv)
		b.BatchNormBackward(y2, y2, y, mean, inv, gam, sum, sq, 6*8*8)
		b.ReLU(y2, y2)
		b.ReLUBackward(y2, y2, y)
		b.Add(y2, y2, y)
		b.AddReLU(y2, y2, y)
		b.Copy(y2, y)
		b.MaxPool2d(py, arg, y, pp)
		b.MaxPool2dBackward(y2, py, arg, pp)
		b.GlobalAvgPool(g, y)
		b.GlobalAvgPoolBackward(y2, g)
		b.Axpy(y2, 0.5, y)
		b.Scale(y2, 2)
		b.Mul(y2, y2, y)
		b.Fill(y2, 1)
	}

	fw, fb, lo := b.New(10, 8), b.New(10), b.New(6, 10)
	b.Linear(lo, g, fw, fb)
	b.Linear(lo, g, fw, nil)
	loss, dlo, probs := b.New(1), b.New(6, 10), b.New(6, 10)
	b.SoftmaxCrossEntropy(loss, dlo, probs, lo, []int32{0, 1, 2, 3, 4, 9}, 0.1, 1)
	b.SoftmaxCrossEntropy(loss, nil, nil, lo, []int32{0, 1, 2, 3, 4, 9}, 0, 1)
	b.LinearBackward(g, fw, fb, dlo, g, fw)
	b.LinearBackward(nil, fw, nil, dlo, g, fw)

	s1, s2, s3 := b.New(fw.Shape...), b.New(fw.Shape...), b.New(fw.Shape...)
	b.SGDStep(fw, fw, s1, nn.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}, true)
	b.SGDStep(fw, fw, nil, nn.SGDParams{LR: 0.1}, false)
	b.AdamStep(fw, fw, s1, s2, s3, nn.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, AMSGrad: true, Step: 1})
	b.AdagradStep(fw, fw, s1, nn.AdagradParams{LR: 0.01, Eps: 1e-10, Step: 3})
	b.RMSpropStep(fw, fw, s1, s2, s3, nn.RMSpropParams{LR: 0.01, Alpha: 0.99, Eps: 1e-8, Momentum: 0.9, Centered: true})
	_ = b.CountNonFinite(fw)
	// The device step's counts (nn.DeviceCounter).
	acc, ys := b.New(3), b.New(6)
	b.UploadLabels(ys, []int32{0, 1, 2, 3, 4, 9})
	b.SoftmaxCrossEntropyLabels(loss, dlo, nil, lo, ys, 0.1, 0.5)
	b.Top1Add(acc, 1, lo, ys)
	b.CountNonFiniteAdd(acc, 2, fw)
	b.Free(acc)
	b.Free(ys)
	// The fused ops, and the scalar paths the float4 kernels leave to an
	// odd H*W (BN) or a view off a 16-byte boundary (flat ops).
	b.BatchNormReLUForward(y2, y, mean, inv, gam, bet)
	b.AddReLU(y2, y2, y)
	b.ReLUBatchNormBackwardStats(sum, sq, y2, y, y, mean, inv)
	odd, odd2 := b.New(2, 8, 5, 5), b.New(2, 8, 5, 5)
	b.BatchNormForward(odd2, odd, mean, inv, gam, bet)
	b.BatchNormReLUForward(odd2, odd, mean, inv, gam, bet)
	b.BatchNormBackward(odd2, odd2, odd, mean, inv, gam, sum, sq, 2*5*5)
	u1, u2 := odd.View(1, 7, 3), odd2.View(1, 7, 3)
	b.Add(u2, u2, u1)
	b.AddReLU(u2, u2, u1)
	b.ReLUBackward(u2, u2, u1)
	b.Free(odd)
	b.Free(odd2)
	// The device ring's kernels (ipc.go).
	b.RingAdd(ptr(y2), ptr(y), y.Numel(), 0)
	b.RingAdd(ptr(y2), ptr(y), y.Numel(), 3)
	b.RingDiv(ptr(y2), ptr(y), y.Numel(), 3)
	b.RingSum64(ptr(y2), ptr(y), y.Numel()/2, 2, true)
	b.RingCopy(ptr(y2), ptr(y), y.Numel())
	out := make([]float32, y.Numel())
	b.ToHost(out, y)

	for _, t := range []*nn.Tensor{x, w, y, bias, sum, sq, mean, inv, gam, bet, rm, rv, y2, py, arg, g, fw, fb, lo, loss, dlo, probs, s1, s2, s3} {
		b.Free(t)
	}
}

func TestFakeDeviceAllOps(t *testing.T) {
	for _, prec := range []string{PrecisionFP32, PrecisionBF16} {
		t.Run(prec, func(t *testing.T) {
			f := newFakeDevice(t)
			o := Options{Precision: prec}
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			b := newBackend(o, f, 4)
			runAllOps(b)
			if err := errors.Join(append(f.errs, b.Sync())...); err != nil {
				t.Fatal(err)
			}
			allocs := b.PoolStats().DriverAllocs
			b.opts.ScratchBytes = 1 << 10 // force one image per conv chunk
			runAllOps(b)
			b.opts.ScratchBytes = 1 << 30
			runAllOps(b)
			if err := errors.Join(append(f.errs, b.Sync())...); err != nil {
				t.Fatal(err)
			}
			runAllOps(b)
			if st := b.PoolStats(); st.DriverAllocs != allocs {
				// The second and later rounds must be served from the pool.
				t.Logf("driver allocations after warm-up: %d -> %d", allocs, st.DriverAllocs)
				if st.DriverAllocs > allocs+2 { // the 1-image chunk round may grow "tmp"/"col" once
					t.Fatalf("pool not reused: %+v", st)
				}
			}
			var never []string
			for name := range f.sigs {
				if f.launches[name] == 0 {
					never = append(never, name)
				}
			}
			sort.Strings(never)
			// cuDNN's layout kernels run only with cuDNN, which fakes lack.
			// Resident activations exist in the bf16 precision only.
			want := "k_bf16_add k_bf16_relu k_bf16_relu_bwd k_bn_coef k_cast_bf16 k_chan_finish_wide k_im2col_bf16 k_krsc_to_kcrs_acc " +
				"k_nchw_to_nhwc_bf16 k_nhwc_bf16_to_nchw k_nhwc_bn_apply k_nhwc_bn_backward k_nhwc_col2im k_nhwc_gap " +
				"k_nhwc_im2col k_nhwc_maxpool k_nhwc_maxpool_bwd " +
				"k_nhwc_partial k_permute_bf16"
			if prec == PrecisionBF16 {
				want = "k_im2col_f32"
			}
			if fmt.Sprint(never) != "["+want+"]" {
				t.Fatalf("kernels never launched: %v, want [%s]", never, want)
			}
			if f.gemms == 0 {
				t.Fatal("no GEMMs")
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if len(f.mem.sizes) != 0 {
				t.Fatalf("%d device blocks leaked after Close", len(f.mem.sizes))
			}
		})
	}
}

func TestStickyErrors(t *testing.T) {
	f := newFakeDevice(t)
	o := Options{}
	_ = o.validate()
	b := newBackend(o, f, 4)
	x := b.New(4, 4)
	v := x.View(4, 4)
	b.Free(v) // a view: not a pool block
	if err := b.Sync(); !errors.Is(err, ErrBadInput) {
		t.Fatalf("Sync after freeing a view = %v, want ErrBadInput", err)
	}
	before := len(f.launches)
	b.ReLU(x, x) // skipped after the sticky error
	if len(f.launches) != before || f.launches["k_relu"] != 0 {
		t.Fatal("op ran after a sticky error")
	}

	b2 := newBackend(o, newFakeDevice(t), 4)
	lo, loss := b2.New(2, 3), b2.New(1)
	b2.SoftmaxCrossEntropy(loss, nil, nil, lo, []int32{0, 3}, 0, 1)
	if err := b2.Sync(); !errors.Is(err, ErrBadInput) {
		t.Fatalf("label out of range: %v", err)
	}
	b3 := newBackend(o, newFakeDevice(t), 4)
	h := nn.NewTensor(2, 2)
	b3.ReLU(h, h)
	if err := b3.Sync(); !errors.Is(err, ErrBadInput) {
		t.Fatalf("host tensor: %v", err)
	}
	if err := b3.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b3.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := b3.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Precision: "fp16"}, {Device: -1}, {ScratchBytes: 1000}, {Conv: "winograd"}} {
		if err := o.validate(); !errors.Is(err, ErrOptions) {
			t.Errorf("%+v: err = %v, want ErrOptions", o, err)
		}
	}
	o := Options{}
	if err := o.validate(); err != nil || o.Precision != PrecisionFP32 || o.ScratchBytes != 1<<30 || o.Conv != ConvAuto {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

func TestChanSplits(t *testing.T) {
	for _, tc := range []struct{ c, m, sms, want int }{
		{64, 512 * 1024, 132, 9}, // 528 blocks over 64 channels
		{512, 512 * 16, 132, 2},
		{10, 3, 132, 1},
		{1, 1 << 30, 132, 528},
	} {
		if got := chanSplits(tc.c, tc.m, tc.sms); got != tc.want {
			t.Errorf("chanSplits(%d,%d,%d) = %d, want %d", tc.c, tc.m, tc.sms, got, tc.want)
		}
	}
}

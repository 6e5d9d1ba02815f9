package gpu

import (
	"errors"
	"fmt"
	"path/filepath"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// cuDNN's legacy convolution API (cudnn.h, cudnn_cnn.h of cuDNN 8 and 9),
// opened at run time like the other libraries. It is optional: without
// it (or when no deterministic algorithm fits a shape) convolutions use
// im2col + cuBLAS.

// ErrCUDNN is wrapped by cuDNN errors.
var ErrCUDNN = errors.New("gpu: cuDNN error")

const (
	cudnnNCHW              = 0
	cudnnNHWC              = 1
	cudnnFloat             = 0
	cudnnBFloat16          = 9
	cudnnCrossCorrelation  = 1
	cudnnDefaultMath       = 0
	cudnnTensorOpMath      = 1
	cudnnFMAMath           = 3
	cudnnDeterministic     = 1
	cudnnMaxAlgos          = 16
	cudnnStatusSuccess     = 0
	convFwd, convBwdData   = 0, 1
	convBwdFilter          = 2
	convDirs               = 3
	cudnnAlgoFFT           = 4 // forward: FFT 4, FFT_TILING 5, WINOGRAD 6, WINOGRAD_NONFUSED 7
	cudnnBwdDataAlgoFFT    = 2 // backward data: FFT 2, FFT_TILING 3, WINOGRAD 4, WINOGRAD_NONFUSED 5
	cudnnBwdFilterAlgoFFT  = 2 // backward filter: FFT 2, ALGO_3 3, WINOGRAD 4, WINOGRAD_NONFUSED 5, FFT_TILING 6
	cudnnBwdFilterAlgo3    = 3
	cudnnBwdFilterAlgoLast = 6
)

// cudnnAlgoPerf is cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t
// (the three share one layout): algo, status, time, memory, determinism,
// mathType, reserved[3].
type cudnnAlgoPerf struct {
	Algo        int32
	Status      int32
	Time        float32
	_           int32
	Memory      uint64
	Determinism int32
	MathType    int32
	Reserved    [3]int32
	_           int32
}

var _ [48]byte = [unsafe.Sizeof(cudnnAlgoPerf{})]byte{}

type cudnnLib struct {
	lib *library

	cudnnGetVersion                 func() uint64
	cudnnGetErrorString             func(code int32) string
	cudnnCreate                     func(h *uintptr) int32
	cudnnDestroy                    func(h uintptr) int32
	cudnnSetStream                  func(h, s uintptr) int32
	cudnnCreateTensorDescriptor     func(d *uintptr) int32
	cudnnSetTensor4dDescriptor      func(d uintptr, format, dtype, n, c, h, w int32) int32
	cudnnDestroyTensorDescriptor    func(d uintptr) int32
	cudnnCreateFilterDescriptor     func(d *uintptr) int32
	cudnnSetFilter4dDescriptor      func(d uintptr, dtype, format, k, c, h, w int32) int32
	cudnnDestroyFilterDescriptor    func(d uintptr) int32
	cudnnCreateConvolutionDesc      func(d *uintptr) int32
	cudnnSetConvolution2dDescriptor func(d uintptr, padH, padW, u, v, dilH, dilW, mode, computeType int32) int32
	cudnnSetConvolutionMathType     func(d uintptr, mathType int32) int32
	cudnnDestroyConvolutionDesc     func(d uintptr) int32
	getFwdAlgo                      func(h, x, w, conv, y uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	getBwdDataAlgo                  func(h, w, dy, conv, dx uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	getBwdFilterAlgo                func(h, x, dy, conv, dw uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	findFwdAlgo                     func(h, x, w, conv, y uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	findBwdDataAlgo                 func(h, w, dy, conv, dx uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	findBwdFilterAlgo               func(h, x, dy, conv, dw uintptr, req int32, ret *int32, perf *cudnnAlgoPerf) int32
	convForward                     func(h uintptr, alpha *float32, xD uintptr, x uint64, wD uintptr, w uint64, convD uintptr, algo int32, ws, wsBytes uint64, beta *float32, yD uintptr, y uint64) int32
	convBackwardData                func(h uintptr, alpha *float32, wD uintptr, w uint64, dyD uintptr, dy uint64, convD uintptr, algo int32, ws, wsBytes uint64, beta *float32, dxD uintptr, dx uint64) int32
	convBackwardFilter              func(h uintptr, alpha *float32, xD uintptr, x uint64, dyD uintptr, dy uint64, convD uintptr, algo int32, ws, wsBytes uint64, beta *float32, dwD uintptr, dw uint64) int32
}

var cudnnNames = []string{"libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"}

// loadCUDNN opens cuDNN and resolves the legacy convolution API.
// cuDNN 9 is a dispatcher that dlopens its sub-libraries by soname;
// before each candidate they are preloaded from its directory (in
// dependency order, best effort) so that wheels without an RPATH work.
func loadCUDNN(dirs []string) (*cudnnLib, error) {
	pre := func(dir string) {
		for _, n := range []string{"libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_heuristic.so.9",
			"libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9", "libcudnn_adv.so.9"} {
			if p := filepath.Join(dir, n); fileExists(p) {
				_, _ = purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL) // the dispatcher reports real failures
			}
		}
	}
	lib, err := openLibrary("cuDNN", cudnnNames, dirs, pre)
	if err != nil {
		return nil, err
	}
	c := &cudnnLib{lib: lib}
	for _, s := range []struct {
		f    any
		name string
	}{
		{&c.cudnnGetVersion, "cudnnGetVersion"},
		{&c.cudnnGetErrorString, "cudnnGetErrorString"},
		{&c.cudnnCreate, "cudnnCreate"},
		{&c.cudnnDestroy, "cudnnDestroy"},
		{&c.cudnnSetStream, "cudnnSetStream"},
		{&c.cudnnCreateTensorDescriptor, "cudnnCreateTensorDescriptor"},
		{&c.cudnnSetTensor4dDescriptor, "cudnnSetTensor4dDescriptor"},
		{&c.cudnnDestroyTensorDescriptor, "cudnnDestroyTensorDescriptor"},
		{&c.cudnnCreateFilterDescriptor, "cudnnCreateFilterDescriptor"},
		{&c.cudnnSetFilter4dDescriptor, "cudnnSetFilter4dDescriptor"},
		{&c.cudnnDestroyFilterDescriptor, "cudnnDestroyFilterDescriptor"},
		{&c.cudnnCreateConvolutionDesc, "cudnnCreateConvolutionDescriptor"},
		{&c.cudnnSetConvolution2dDescriptor, "cudnnSetConvolution2dDescriptor"},
		{&c.cudnnSetConvolutionMathType, "cudnnSetConvolutionMathType"},
		{&c.cudnnDestroyConvolutionDesc, "cudnnDestroyConvolutionDescriptor"},
		{&c.getFwdAlgo, "cudnnGetConvolutionForwardAlgorithm_v7"},
		{&c.getBwdDataAlgo, "cudnnGetConvolutionBackwardDataAlgorithm_v7"},
		{&c.getBwdFilterAlgo, "cudnnGetConvolutionBackwardFilterAlgorithm_v7"},
		{&c.findFwdAlgo, "cudnnFindConvolutionForwardAlgorithm"},
		{&c.findBwdDataAlgo, "cudnnFindConvolutionBackwardDataAlgorithm"},
		{&c.findBwdFilterAlgo, "cudnnFindConvolutionBackwardFilterAlgorithm"},
		{&c.convForward, "cudnnConvolutionForward"},
		{&c.convBackwardData, "cudnnConvolutionBackwardData"},
		{&c.convBackwardFilter, "cudnnConvolutionBackwardFilter"},
	} {
		if err := lib.sym(s.f, s.name); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *cudnnLib) check(call string, code int32) error {
	if code == cudnnStatusSuccess {
		return nil
	}
	return &wrapped{msg: fmt.Sprintf("%s: %s failed with cudnnStatus %d (%s)", ErrCUDNN, call, code, c.cudnnGetErrorString(code)), base: ErrCUDNN}
}

// convPlan is one convolution shape's cuDNN setup: descriptors (in the
// layout and type of the backend's precision) and, per direction, the
// chosen algorithm and its workspace. ok[dir] false: im2col for that
// direction (no admissible algorithm).
type convPlan struct {
	x, y, conv uintptr // tensor and convolution descriptors
	w          uintptr // filter descriptor
	bf16       bool    // descriptors are bf16 NHWC (else fp32 NCHW)
	ok         [convDirs]bool
	algo       [convDirs]int32
	ws         [convDirs]uint64
	why        [convDirs]string // why a direction fell back
}

// admissible reports whether a cuDNN algorithm may serve direction dir:
// deterministic always (the backend's promise); in strict fp32 also no
// FFT/Winograd (their rounding is not that of a plain sum) and plain FMA
// math (no TF32).
func admissible(dir int, p cudnnAlgoPerf, strictFP32 bool, wsLimit uint64) bool {
	if p.Status != cudnnStatusSuccess || p.Determinism != cudnnDeterministic || p.Memory > wsLimit {
		return false
	}
	if !strictFP32 {
		return true
	}
	// The descriptor is set to FMA math, which restricts the kernels;
	// an algorithm reporting tensor-op math is refused all the same.
	if p.MathType != cudnnFMAMath && p.MathType != cudnnDefaultMath {
		return false
	}
	switch dir {
	case convFwd:
		return p.Algo < cudnnAlgoFFT
	case convBwdData:
		return p.Algo < cudnnBwdDataAlgoFFT
	default:
		return p.Algo < cudnnBwdFilterAlgoFFT || p.Algo == cudnnBwdFilterAlgo3
	}
}

// newConvPlan creates the descriptors of p and picks each direction's
// algorithm: from cuDNN's heuristics (which depend on the shape and the
// device only, so the choice is reproducible), or, when measure is set,
// the fastest admissible one cuDNN times on this device (cudnnFind*:
// faster kernels, but the choice, and so the rounding, may differ
// between runs).
func (d *cudaDevice) newConvPlan(p nn.ConvParams, bf16, strictFP32 bool, wsLimit uint64, measure bool) (*convPlan, error) {
	c := d.dnn
	pl := &convPlan{bf16: bf16}
	dtype, format := int32(cudnnFloat), int32(cudnnNCHW)
	if bf16 {
		dtype, format = cudnnBFloat16, cudnnNHWC
	}
	for _, t := range []*uintptr{&pl.x, &pl.y} {
		if err := c.check("cudnnCreateTensorDescriptor", c.cudnnCreateTensorDescriptor(t)); err != nil {
			d.freeConvPlan(pl)
			return nil, err
		}
	}
	if err := errors.Join(
		c.check("cudnnCreateFilterDescriptor", c.cudnnCreateFilterDescriptor(&pl.w)),
		c.check("cudnnCreateConvolutionDescriptor", c.cudnnCreateConvolutionDesc(&pl.conv)),
	); err != nil {
		d.freeConvPlan(pl)
		return nil, err
	}
	math := int32(cudnnDefaultMath) // fp32 data: TF32 allowed ("tf32")
	switch {
	case strictFP32:
		math = cudnnFMAMath
	case bf16:
		math = cudnnTensorOpMath
	}
	if err := errors.Join(
		c.check("cudnnSetTensor4dDescriptor(x)", c.cudnnSetTensor4dDescriptor(pl.x, format, dtype, int32(p.N), int32(p.C), int32(p.H), int32(p.W))),
		c.check("cudnnSetTensor4dDescriptor(y)", c.cudnnSetTensor4dDescriptor(pl.y, format, dtype, int32(p.N), int32(p.K), int32(p.P()), int32(p.Q()))),
		c.check("cudnnSetFilter4dDescriptor", c.cudnnSetFilter4dDescriptor(pl.w, dtype, format, int32(p.K), int32(p.C), int32(p.R), int32(p.S))),
		c.check("cudnnSetConvolution2dDescriptor", c.cudnnSetConvolution2dDescriptor(pl.conv, int32(p.PadH), int32(p.PadW),
			int32(p.StrideH), int32(p.StrideW), 1, 1, cudnnCrossCorrelation, cudnnFloat)),
		c.check("cudnnSetConvolutionMathType", c.cudnnSetConvolutionMathType(pl.conv, math)),
	); err != nil {
		d.freeConvPlan(pl)
		return nil, err
	}
	for dir := 0; dir < convDirs; dir++ {
		var perf [cudnnMaxAlgos]cudnnAlgoPerf
		var n int32
		var code int32
		fwd, bwdData, bwdFilter := c.getFwdAlgo, c.getBwdDataAlgo, c.getBwdFilterAlgo
		if measure {
			fwd, bwdData, bwdFilter = c.findFwdAlgo, c.findBwdDataAlgo, c.findBwdFilterAlgo
		}
		switch dir {
		case convFwd:
			code = fwd(d.dnnHandle, pl.x, pl.w, pl.conv, pl.y, cudnnMaxAlgos, &n, &perf[0])
		case convBwdData:
			code = bwdData(d.dnnHandle, pl.w, pl.y, pl.conv, pl.x, cudnnMaxAlgos, &n, &perf[0])
		default:
			code = bwdFilter(d.dnnHandle, pl.x, pl.y, pl.conv, pl.w, cudnnMaxAlgos, &n, &perf[0])
		}
		if err := c.check("cudnnGetConvolution*Algorithm_v7", code); err != nil {
			pl.why[dir] = err.Error()
			continue
		}
		pl.why[dir] = "no deterministic algorithm within the workspace limit"
		for _, a := range perf[:min(int(n), cudnnMaxAlgos)] {
			if admissible(dir, a, strictFP32, wsLimit) {
				pl.ok[dir], pl.algo[dir], pl.ws[dir], pl.why[dir] = true, a.Algo, a.Memory, ""
				break
			}
		}
	}
	return pl, nil
}

func (d *cudaDevice) freeConvPlan(pl *convPlan) {
	c := d.dnn
	if pl.x != 0 {
		c.cudnnDestroyTensorDescriptor(pl.x)
	}
	if pl.y != 0 {
		c.cudnnDestroyTensorDescriptor(pl.y)
	}
	if pl.w != 0 {
		c.cudnnDestroyFilterDescriptor(pl.w)
	}
	if pl.conv != 0 {
		c.cudnnDestroyConvolutionDesc(pl.conv)
	}
}

// runConv enqueues direction dir of plan pl: fwd y = alpha*conv(x,w) +
// beta*y; bwd-data x(=dx) from y(=dy) and w; bwd-filter w(=dw) from x and
// y(=dy). ws is a workspace of at least pl.ws[dir] bytes.
func (d *cudaDevice) runConv(pl *convPlan, dir int, x, w, y, ws uint64, alpha, beta float32) error {
	c := d.dnn
	switch dir {
	case convFwd:
		return c.check("cudnnConvolutionForward", c.convForward(d.dnnHandle, &alpha, pl.x, x, pl.w, w, pl.conv, pl.algo[dir], ws, pl.ws[dir], &beta, pl.y, y))
	case convBwdData:
		return c.check("cudnnConvolutionBackwardData", c.convBackwardData(d.dnnHandle, &alpha, pl.w, w, pl.y, y, pl.conv, pl.algo[dir], ws, pl.ws[dir], &beta, pl.x, x))
	default:
		return c.check("cudnnConvolutionBackwardFilter", c.convBackwardFilter(d.dnnHandle, &alpha, pl.x, x, pl.y, y, pl.conv, pl.algo[dir], ws, pl.ws[dir], &beta, pl.w, w))
	}
}

// openCUDNN loads cuDNN and creates its handle on the device's stream.
func (d *cudaDevice) openCUDNN(dirs []string) error {
	c, err := loadCUDNN(dirs)
	if err != nil {
		return err
	}
	var h uintptr
	if err := c.check("cudnnCreate", c.cudnnCreate(&h)); err != nil {
		return err
	}
	if err := c.check("cudnnSetStream", c.cudnnSetStream(h, d.stream)); err != nil {
		c.cudnnDestroy(h)
		return err
	}
	d.dnn, d.dnnHandle = c, h
	d.info.CUDNNVersion = int(c.cudnnGetVersion())
	d.info.Libraries = append(d.info.Libraries, c.lib.path)
	return nil
}

// ---- the backend side ----

// convAccel is what a device offers when a convolution library is
// loaded (cudaDevice with cuDNN); the fakes do not implement it.
type convAccel interface {
	hasConvLib() bool
	newConvPlan(p nn.ConvParams, bf16, strictFP32 bool, wsLimit uint64, measure bool) (*convPlan, error)
	freeConvPlan(pl *convPlan)
	runConv(pl *convPlan, dir int, x, w, y, ws uint64, alpha, beta float32) error
}

func (d *cudaDevice) hasConvLib() bool { return d.dnn != nil }

// hasCUDNN reports whether cuDNN convolutions are available.
func (b *Backend) hasCUDNN() bool {
	acc, ok := b.dev.(convAccel)
	return ok && acc.hasConvLib() && b.opts.Conv != ConvIm2col
}

// plan returns the cuDNN plan of p for direction dir, or nil when that
// convolution uses im2col (no library, forced, or no admissible algorithm).
func (b *Backend) plan(p nn.ConvParams, dir int) *convPlan {
	if b.forceIm2col || !b.hasCUDNN() {
		return nil
	}
	acc := b.dev.(convAccel)
	pl, seen := b.plans[p]
	if !seen {
		var err error
		pl, err = acc.newConvPlan(p, b.bf16, b.opts.Precision == PrecisionFP32, uint64(b.opts.ScratchBytes), b.opts.ConvSearch == ConvSearchMeasure)
		if err != nil {
			if b.opts.Log != nil {
				b.opts.Log("gpu: cuDNN cannot plan convolution %+v, using im2col: %v", p, err)
			}
			pl = nil
		} else if b.opts.Log != nil {
			b.opts.Log("gpu: cuDNN plan %+v (%s): algorithms fwd %d, bwd-data %d, bwd-filter %d; workspace %d, %d, %d bytes",
				p, b.opts.ConvSearch, pl.algo[0], pl.algo[1], pl.algo[2], pl.ws[0], pl.ws[1], pl.ws[2])
			for d := 0; d < convDirs; d++ {
				if !pl.ok[d] {
					b.opts.Log("gpu: cuDNN direction %d of convolution %+v uses im2col: %s", d, p, pl.why[d])
				}
			}
		}
		b.plans[p] = pl
	}
	if pl == nil || !pl.ok[dir] {
		return nil
	}
	return pl
}

// toNHWC returns t (N,C,H,W fp32) as bf16 NHWC in the named scratch.
func (b *Backend) toNHWC(name string, t *nn.Tensor, n, c, hw int) uint64 {
	buf := b.getScratch(name, uint64(n*c*hw)*2)
	if b.err == nil {
		b.elem("k_nchw_to_nhwc_bf16", n*c*hw, a(buf, t, n, c, hw))
	}
	return buf
}

// fromNHWC writes bf16 NHWC src into dst (N,C,H,W fp32): assign, or add
// when accumulate.
func (b *Backend) fromNHWC(dst, src uint64, n, c, hw int, accumulate bool) {
	b.elem("k_nhwc_bf16_to_nchw", n*c*hw, a(dst, src, n, c, hw, accumulate))
}

// bf16Output runs an op that writes a bf16 (N, H*W, C) result of dims d
// at the address it is given: t itself when t may become resident (and
// is then recorded so), else scratch that is widened into t afterwards.
func (b *Backend) bf16Output(t *nn.Tensor, d actDims, scratch string, run func(out uint64) error) {
	if b.residentOK(d.c, t) {
		if b.err == nil && b.ok(run(ptr(t))) {
			b.setResident(t, d)
		}
		return
	}
	out := b.getScratch(scratch, uint64(d.numel())*2)
	if b.err == nil && b.ok(run(out)) {
		b.setPlain(t)
		b.fromNHWC(ptr(t), out, d.n, d.c, d.hw, false)
	}
}

// dnnConv runs direction dir with cuDNN when a plan exists; it reports
// whether it did. out/in follow the op: fwd (y; x, w), bwd-data (dx; dy,
// w), bwd-filter (dw; x, dy).
func (b *Backend) dnnConv(dir int, p nn.ConvParams, x, w, y *nn.Tensor) bool {
	pl := b.plan(p, dir)
	if pl == nil {
		return false
	}
	acc := b.dev.(convAccel)
	ws := uint64(0)
	if pl.ws[dir] > 0 {
		ws = b.getScratch("dnnws", pl.ws[dir])
	}
	if b.err != nil {
		return true
	}
	PQ, HW, RS := p.P()*p.Q(), p.H*p.W, p.R*p.S
	if !pl.bf16 {
		switch dir { // the output; inputs are never resident in fp32/tf32
		case convFwd:
			b.setPlain(y)
		case convBwdData:
			b.setPlain(x)
		}
		beta := float32(0)
		if dir == convBwdFilter {
			beta = 1
		}
		b.ok(acc.runConv(pl, dir, ptr(x), ptr(w), ptr(y), ws, 1, beta))
		return true
	}
	xd, yd := actDims{p.N, p.C, HW}, actDims{p.N, p.K, PQ}
	switch dir {
	case convFwd:
		xb := b.residentPtr("dnn_x", x, xd)
		wb := b.toNHWC("dnn_w", w, p.K, p.C, RS)
		b.bf16Output(y, yd, "dnn_y", func(out uint64) error { return acc.runConv(pl, dir, xb, wb, out, ws, 1, 0) })
	case convBwdData:
		yb := b.residentPtr("dnn_y", y, yd)
		wb := b.toNHWC("dnn_w", w, p.K, p.C, RS)
		b.bf16Output(x, xd, "dnn_x", func(out uint64) error { return acc.runConv(pl, dir, out, wb, yb, ws, 1, 0) })
	default:
		xb := b.residentPtr("dnn_x", x, xd)
		yb := b.residentPtr("dnn_y", y, yd)
		wb := b.getScratch("dnn_w", uint64(p.K*p.C*RS)*2)
		if b.err == nil && b.ok(acc.runConv(pl, dir, xb, wb, yb, ws, 1, 0)) {
			b.fromNHWC(ptr(w), wb, p.K, p.C, RS, true)
		}
	}
	return true
}

package gpu

import (
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Precisions accepted by Options.Precision.
const (
	PrecisionFP32 = "fp32"
	PrecisionTF32 = "tf32"
	PrecisionBF16 = "bf16"
)

// Convolution implementations accepted by Options.Conv.
const (
	ConvAuto   = "auto"   // cuDNN when it loads, else im2col
	ConvCUDNN  = "cudnn"  // cuDNN, or Open fails
	ConvIm2col = "im2col" // im2col + cuBLAS only
)

// Convolution algorithm searches accepted by Options.ConvSearch.
const (
	ConvSearchHeuristic = "heuristic" // cuDNN's heuristics: reproducible
	ConvSearchMeasure   = "measure"   // timed on the device (cudnnFind*)
)

// Options configure Open. The zero value is valid: device 0, fp32,
// libraries from the standard search, kernels cached in the user's cache.
type Options struct {
	Device    int    // CUDA device ordinal
	Precision string // "fp32" (default), "tf32" or "bf16"; see the package doc
	LibDir    string // searched first for libcuda, libnvrtc, libcublas, libcudnn
	// LibPath lists directories searched next, in order, before the
	// standard ones (the binaries pass $RINGTRAIN_CUDA_LIB_DIR and the
	// entries of $LD_LIBRARY_PATH; see cmd/internal/env).
	LibPath []string
	// PythonRoots are Python environments (a virtualenv, a user base such
	// as ~/.local) whose lib/python3*/site-packages/nvidia/*/lib are
	// searched after the standard wheel locations (the binaries pass
	// $VIRTUAL_ENV and $HOME/.local).
	PythonRoots []string
	// CacheDir holds compiled kernels; "" means
	// os.UserCacheDir()/ringtrain/kernels, "off" disables the cache.
	CacheDir string
	// ScratchBytes caps the im2col scratch of one convolution chunk;
	// 0 means 1 GiB. Larger chunks mean fewer, larger GEMMs.
	ScratchBytes int64
	// Conv picks the convolution implementation: "auto" (default), "cudnn"
	// or "im2col"; see the package doc.
	Conv string
	// ConvSearch picks how cuDNN algorithms are chosen: "heuristic"
	// (default; the choice depends on shape and device only, so runs are
	// bit-reproducible) or "measure" (each candidate timed once per shape,
	// as torch.backends.cudnn.benchmark; the worker's and gpubench's
	// --gpu-conv-search / -conv-search set it). Either way only
	// deterministic algorithms are admitted.
	ConvSearch string
	// GemmPlanes: in the bf16 precision, convolutions of resident
	// activations whose output planes have at most this many pixels run as
	// one cuBLAS GEMM instead of cuDNN (gemmconv.go). 0 means 16 (the last
	// ResNet stage at 32x32 inputs); -1 turns the path off. A tuning
	// knob (gpubench -gemm-planes).
	GemmPlanes int
	// FP32Activations keeps activations float32 (N, C, H, W) between
	// layers in the bf16 precision, converting them around every
	// convolution (the slower path before resident activations, kept for
	// comparison; gpubench -activations fp32 sets it). See resident.go.
	FP32Activations bool
	// SyncEveryOp synchronises after every op so that an asynchronous
	// kernel fault is reported by the op that caused it (debugging).
	SyncEveryOp bool
	// Graphs allows CUDA graph capture (BeginCapture, graph.go) and gives
	// cuBLAS a workspace of its own at Open, as capture needs. Off by
	// default.
	Graphs bool
	// Log, if set, receives informational messages.
	Log func(format string, args ...any)

	// glob defaults to filepath.Glob (tests fake it).
	glob func(string) ([]string, error)
}

func (o *Options) validate() error {
	switch o.Precision {
	case "":
		o.Precision = PrecisionFP32
	case PrecisionFP32, PrecisionTF32, PrecisionBF16:
	default:
		return fmt.Errorf("%w: precision %q (want fp32, tf32 or bf16)", ErrOptions, o.Precision)
	}
	switch o.Conv {
	case "":
		o.Conv = ConvAuto
	case ConvAuto, ConvCUDNN, ConvIm2col:
	default:
		return fmt.Errorf("%w: conv %q (want auto, cudnn or im2col)", ErrOptions, o.Conv)
	}
	if o.Device < 0 {
		return fmt.Errorf("%w: device %d", ErrOptions, o.Device)
	}
	if o.ScratchBytes < 0 {
		return fmt.Errorf("%w: scratch bytes %d", ErrOptions, o.ScratchBytes)
	}
	if o.ScratchBytes == 0 {
		o.ScratchBytes = 1 << 30
	}
	if o.ScratchBytes < 1<<20 {
		return fmt.Errorf("%w: scratch bytes %d below 1 MiB", ErrOptions, o.ScratchBytes)
	}
	if o.glob == nil {
		o.glob = filepath.Glob
	}
	switch o.ConvSearch {
	case "":
		o.ConvSearch = ConvSearchHeuristic
	case ConvSearchHeuristic, ConvSearchMeasure:
	default:
		return fmt.Errorf("%w: conv search %q (want heuristic or measure)", ErrOptions, o.ConvSearch)
	}
	switch {
	case o.GemmPlanes == 0:
		o.GemmPlanes = defaultGemmPlanes
	case o.GemmPlanes < -1:
		return fmt.Errorf("%w: gemm planes %d (want -1, 0 or a pixel count)", ErrOptions, o.GemmPlanes)
	}
	return nil
}

func (o Options) cacheDir() string {
	switch o.CacheDir {
	case "off":
		return ""
	case "":
		return defaultCacheDir()
	}
	return o.CacheDir
}

// Backend is the CUDA implementation of nn.Backend. Create it with Open;
// Close it when done. See the package doc for its promises.
type Backend struct {
	opts Options
	dev  deviceAPI
	info DeviceInfo
	pool *pool
	sms  int
	bf16 bool

	err    error // sticky: the first error; every op is a no-op after it
	closed bool

	cap captureState // the graph capture in progress (graph.go)
	// spareFences are fences given back by ReleaseFence, handed out again
	// by NewFence before it makes a new event (copystream.go).
	spareFences []nn.Fence
	blasWS      uint64 // cuBLAS's workspace block with Options.Graphs
	// graphsOff is why Options.Graphs was turned off at Open.
	graphsOff error

	scratch map[string]*scratchBuf // named scratch buffers, grown on demand

	res    map[uint64]actDims // resident bf16 activations by address (resident.go)
	resIdx map[uint64]bool    // max-pool argmax tensors in resident (N, P*Q, C) order

	plans       map[nn.ConvParams]*convPlan // cuDNN plans by shape (nil: im2col)
	forceIm2col bool                        // tests: bypass cuDNN
	gemmBwdData bool                        // tests: small-plane data gradients as GEMMs even with cuDNN
}

var _ nn.Backend = (*Backend)(nil)

type scratchBuf struct {
	ptr, bytes uint64
}

// Open opens a CUDA device as an nn.Backend. It fails with an error
// wrapping ErrLibraryNotFound (naming every path searched), ErrNoDevice,
// ErrOptions, ErrCUDA, ErrNVRTC or ErrCUBLAS.
func Open(o Options) (*Backend, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	d, err := openCUDA(o)
	if err != nil {
		return nil, err
	}
	b := newBackend(o, d, d.info.SMs)
	b.info = d.info
	b.setupGraphs()
	return b, nil
}

func newBackend(o Options, d deviceAPI, sms int) *Backend {
	if sms <= 0 {
		sms = 1
	}
	return &Backend{opts: o, dev: d, pool: newPool(d), sms: sms, bf16: o.Precision == PrecisionBF16,
		scratch: map[string]*scratchBuf{}, plans: map[nn.ConvParams]*convPlan{},
		res: map[uint64]actDims{}, resIdx: map[uint64]bool{}}
}

// Info describes the device and libraries.
func (b *Backend) Info() DeviceInfo { return b.info }

// Precision is the GEMM precision in use.
func (b *Backend) Precision() string { return b.opts.Precision }

// Activations is how activations are kept between layers: "bf16-nhwc"
// (resident, the bf16 precision's default) or "fp32".
func (b *Backend) Activations() string {
	if b.bf16 && !b.opts.FP32Activations {
		return "bf16-nhwc"
	}
	return "fp32"
}

// ConvSearch is how cuDNN algorithms are chosen ("heuristic" or "measure").
func (b *Backend) ConvSearch() string { return b.opts.ConvSearch }

// PoolStats reports the memory pool's counters.
func (b *Backend) PoolStats() PoolStats { return b.pool.stats }

var _ nn.DeviceMemoryReporter = (*Backend)(nil)

// DeviceName implements nn.DeviceMemoryReporter: the GPU's name.
func (b *Backend) DeviceName() string { return b.info.Name }

// DeviceMemory implements nn.DeviceMemoryReporter from the pool's counts
// (every device allocation the backend makes goes through the pool; the
// libraries' own, such as cuBLAS's default workspace, are not counted) and the
// device's total memory.
func (b *Backend) DeviceMemory() nn.DeviceMemory {
	s := b.pool.stats
	return nn.DeviceMemory{Live: s.LiveBytes, Cached: s.CachedBytes, Peak: s.PeakBytes, Total: b.info.TotalMemory}
}

// Err returns the sticky error without synchronising.
func (b *Backend) Err() error { return b.err }

// Close waits for queued work, frees all device memory (tensors included)
// and releases the device. It is idempotent.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.closed = true
	_ = b.dev.enter()
	serr := b.dev.sync()
	if s, ok := b.dev.(streamAPI); ok { // copies still landing in pool blocks
		serr = firstErr(serr, s.syncCopies())
	}
	if acc, ok := b.dev.(convAccel); ok {
		for _, pl := range b.plans {
			if pl != nil {
				acc.freeConvPlan(pl)
			}
		}
	}
	b.plans = nil
	perr := b.pool.releaseAll()
	cerr := b.dev.close()
	if e := firstErr(serr, perr, cerr); e != nil {
		return fmt.Errorf("gpu: close: %w", e)
	}
	return nil
}

// begin starts an op: it locks the OS thread and makes the context
// current. It reports false when the op must be skipped (sticky error or
// closed backend). Always pair with defer b.end().
func (b *Backend) begin() bool {
	runtime.LockOSThread()
	if b.closed {
		b.fail(ErrClosed)
		return false
	}
	if b.err != nil || b.cap.err != nil {
		return false
	}
	return b.ok(b.dev.enter())
}

func (b *Backend) end() {
	if b.opts.SyncEveryOp && b.err == nil && !b.closed && !b.cap.on {
		b.ok(b.dev.sync())
	}
	runtime.UnlockOSThread()
}

// fail records err as the sticky error if none is recorded yet; during
// a graph capture it fails the capture instead (graph.go).
func (b *Backend) fail(err error) {
	if b.cap.on {
		if b.cap.err == nil {
			b.cap.err = err
		}
		return
	}
	if b.err == nil {
		b.err = err
	}
}

// ok records err (if any) and reports whether everything is fine.
func (b *Backend) ok(err error) bool {
	if err != nil {
		b.fail(err)
	}
	return b.err == nil && b.cap.err == nil
}

// devs checks that every non-nil tensor is a device tensor.
func (b *Backend) devs(ts ...*nn.Tensor) bool {
	for _, t := range ts {
		if t != nil && t.Ptr == 0 {
			b.fail(fmt.Errorf("%w: host tensor of shape %v passed to the cuda backend", ErrBadInput, t.Shape))
			return false
		}
	}
	return b.err == nil && b.cap.err == nil
}

func ptr(t *nn.Tensor) uint64 {
	if t == nil {
		return 0
	}
	return uint64(t.Ptr)
}

// getScratch returns the named scratch buffer with at least bytes bytes,
// growing it (through the pool) when needed. Its contents are undefined.
func (b *Backend) getScratch(name string, bytes uint64) uint64 {
	s := b.scratch[name]
	if s == nil {
		s = &scratchBuf{}
		b.scratch[name] = s
	}
	if s.bytes >= bytes && s.ptr != 0 {
		return s.ptr
	}
	if s.ptr != 0 {
		// Stream order makes reuse of the freed block by later work safe.
		if !b.ok(b.pool.put(s.ptr)) {
			return 0
		}
		s.ptr, s.bytes = 0, 0
	}
	p, err := b.pool.get(bytes)
	if !b.ok(err) {
		return 0
	}
	s.ptr, s.bytes = p, sizeClass(bytes)
	return p
}

// ---- kernel launch helpers ----

const blockSize = 256

// a builds kernel arguments: *nn.Tensor and uint64 become pointers, int
// and uint32 32-bit integers, float32 floats, float64 doubles, bool ints.
func a(vals ...any) []karg {
	out := make([]karg, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case *nn.Tensor:
			out[i] = karg{'p', ptr(x)}
		case uint64:
			out[i] = karg{'p', x}
		case int:
			out[i] = karg{'i', uint64(uint32(int32(x)))}
		case uint32:
			out[i] = karg{'i', uint64(x)}
		case float32:
			out[i] = karg{'f', uint64(math.Float32bits(x))}
		case float64:
			out[i] = karg{'d', math.Float64bits(x)}
		case bool:
			var n uint64
			if x {
				n = 1
			}
			out[i] = karg{'i', n}
		default:
			panic(fmt.Sprintf("gpu: kernel argument %d of type %T", i, v)) // programming error
		}
	}
	return out
}

// gridFor is the 1-D grid for n elements of a grid-stride kernel.
func (b *Backend) gridFor(n int) dim3 {
	blocks := (n + blockSize - 1) / blockSize
	if max := b.sms * 32; blocks > max {
		blocks = max
	}
	if blocks < 1 {
		blocks = 1
	}
	return dim3{uint32(blocks), 1, 1}
}

// elem launches a grid-stride kernel over n elements.
func (b *Backend) elem(name string, n int, args []karg) {
	if n == 0 {
		return
	}
	b.ok(b.dev.launch(name, b.gridFor(n), dim3{blockSize, 1, 1}, args))
}

// maxElems bounds every tensor: kernels index with 32-bit integers.
const maxElems = 1<<31 - 1

// ---- memory ----

// Name implements nn.Backend.
func (b *Backend) Name() string { return "cuda" }

// New implements nn.Backend: a zero-filled device tensor from the pool.
// On failure the sticky error is set and the tensor has Ptr == 0.
func (b *Backend) New(shape ...int) *nn.Tensor {
	t := &nn.Tensor{Shape: append([]int(nil), shape...)}
	defer b.end()
	if !b.begin() {
		return t
	}
	if b.cap.on {
		// Its zeroing would be captured, not run: a failed capture would
		// leave it unzeroed. Steady-state steps allocate nothing.
		b.fail(fmt.Errorf("New(%v) inside a captured region", shape))
		return t
	}
	n := t.Numel()
	if n < 0 || n > maxElems {
		b.fail(fmt.Errorf("%w: tensor of shape %v has %d elements (max %d)", ErrBadInput, shape, n, maxElems))
		return t
	}
	p, err := b.pool.get(uint64(n) * 4)
	if !b.ok(err) {
		return t
	}
	t.Ptr = uintptr(p)
	b.setPlain(t)
	if n > 0 {
		b.ok(b.dev.memsetD32(p, 0, uint64(n)))
	}
	return t
}

// Free implements nn.Backend; freeing a view or twice sets the sticky error.
func (b *Backend) Free(t *nn.Tensor) {
	if t == nil || t.Ptr == 0 || b.closed {
		return
	}
	defer b.end()
	if !b.begin() {
		return
	}
	b.setPlain(t)
	b.ok(b.pool.put(uint64(t.Ptr)))
	t.Ptr = 0
}

// FromHost implements nn.Backend.
func (b *Backend) FromHost(dst *nn.Tensor, src []float32) {
	defer b.end()
	if !b.begin() || !b.devs(dst) {
		return
	}
	if b.hostDuringCapture("FromHost") {
		return
	}
	if len(src) != dst.Numel() {
		b.fail(fmt.Errorf("%w: FromHost of %d values into shape %v", nn.ErrShape, len(src), dst.Shape))
		return
	}
	b.setPlain(dst)
	if len(src) == 0 {
		return
	}
	b.ok(b.dev.upload(ptr(dst), unsafe.Pointer(&src[0]), uint64(len(src))*4))
	runtime.KeepAlive(src)
}

// ToHost implements nn.Backend (it synchronises first).
func (b *Backend) ToHost(dst []float32, src *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(src) {
		return
	}
	if b.hostDuringCapture("ToHost") {
		return
	}
	if len(dst) != src.Numel() {
		b.fail(fmt.Errorf("%w: ToHost of shape %v into %d values", nn.ErrShape, src.Shape, len(dst)))
		return
	}
	if len(dst) == 0 {
		b.ok(b.dev.sync())
		return
	}
	b.ok(b.dev.download(unsafe.Pointer(&dst[0]), b.plainPtr("tohost", src), uint64(len(dst))*4))
	runtime.KeepAlive(dst)
}

// PinnedHost implements nn.AsyncCopier: page-locked host memory, freed by
// Close (the slice must not be used after that).
func (b *Backend) PinnedHost(n int) ([]float32, error) {
	defer b.end()
	if !b.begin() {
		return nil, b.err
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: PinnedHost(%d)", ErrBadInput, n)
	}
	p, err := b.dev.hostAlloc(uint64(n) * 4)
	if err != nil {
		return nil, err // not sticky: the caller can use ordinary memory
	}
	return unsafe.Slice((*float32)(p), n), nil
}

// ToHostAsync implements nn.AsyncCopier: the copy is queued on the
// backend's stream behind the work issued so far.
func (b *Backend) ToHostAsync(dst []float32, src *nn.Tensor) nn.CopyTicket {
	defer b.end()
	if !b.begin() || !b.devs(src) {
		return -1
	}
	if b.hostDuringCapture("ToHostAsync") {
		return -1
	}
	if len(dst) != src.Numel() {
		b.fail(fmt.Errorf("%w: ToHostAsync of shape %v into %d values", nn.ErrShape, src.Shape, len(dst)))
		return -1
	}
	if len(dst) == 0 {
		return -1
	}
	b.widen(src)
	t, err := b.dev.downloadAsync(unsafe.Pointer(&dst[0]), ptr(src), uint64(len(dst))*4)
	if !b.ok(err) {
		return -1
	}
	return nn.CopyTicket(t)
}

// WaitCopy implements nn.AsyncCopier. Ticket -1 (an empty or failed
// copy) only reports the sticky error.
func (b *Backend) WaitCopy(t nn.CopyTicket) error {
	defer b.end()
	if !b.begin() {
		return b.err
	}
	if b.hostDuringCapture("WaitCopy") {
		return b.cap.err
	}
	if t >= 0 {
		b.ok(b.dev.waitDownload(int(t)))
	}
	return b.err
}

// Copy implements nn.Backend.
func (b *Backend) Copy(dst, src *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(dst, src) {
		return
	}
	if dst.Numel() != src.Numel() {
		b.fail(fmt.Errorf("%w: Copy of %v into %v", nn.ErrShape, src.Shape, dst.Shape))
		return
	}
	n := dst.Numel()
	if d, ok := b.resident(src); ok && aligned16(dst) {
		if ptr(dst) != ptr(src) {
			b.ok(b.dev.copyDtoD(ptr(dst), ptr(src), uint64(n)*2))
		}
		b.setResident(dst, d)
		return
	}
	b.widen(src)
	b.setPlain(dst)
	if n > 0 {
		b.ok(b.dev.copyDtoD(ptr(dst), ptr(src), uint64(n)*4))
	}
}

// Fill implements nn.Backend.
func (b *Backend) Fill(t *nn.Tensor, v float32) {
	defer b.end()
	if !b.begin() || !b.devs(t) {
		return
	}
	b.setPlain(t)
	if n := t.Numel(); n > 0 {
		b.ok(b.dev.memsetD32(ptr(t), math.Float32bits(v), uint64(n)))
	}
}

// Sync implements nn.Backend: it waits for queued work and returns the
// sticky error.
func (b *Backend) Sync() error {
	if b.closed {
		return ErrClosed
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if b.hostDuringCapture("Sync") {
		return b.cap.err
	}
	if b.err == nil && b.ok(b.dev.enter()) {
		b.ok(b.dev.sync())
	}
	return b.err
}

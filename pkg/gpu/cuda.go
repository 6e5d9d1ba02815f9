package gpu

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"unsafe"
)

//go:embed kernels/*.cu
var kernelFS embed.FS

// kernelSource returns the kernels' CUDA C: kernels/*.cu concatenated in
// name order, each preceded by a #line marker naming its file.
func kernelSource() string {
	names, err := fs.Glob(kernelFS, "kernels/*.cu")
	if err != nil {
		panic(err) // the pattern is a constant: a programming error
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		src, err := kernelFS.ReadFile(n)
		if err != nil {
			panic(err) // embedded at build time
		}
		fmt.Fprintf(&b, "#line 1 %q\n%s\n", n, src)
	}
	return b.String()
}

// kernelOptions are the NVRTC options every kernel build uses.
// --fmad=false stops NVRTC from contracting a*b+c into one FMA (its
// default), so that each kernel rounds after every operation exactly as
// the CPU backend's Go code does (Go on amd64 fuses only where math.FMA
// or an explicit fused helper is written); kernels that want an FMA say
// fmaf. The kernels are memory-bound, so the cost is nil.
var kernelOptions = []string{"--fmad=false"}

var kernelDecl = regexp.MustCompile(`extern "C" __global__ void (k_\w+)\(([^)]*)\)`)

// kernelSignatures parses every kernel's parameter kinds ('p', 'i', 'f',
// 'd' as in karg) from the source.
func kernelSignatures(src string) map[string]string {
	out := map[string]string{}
	for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
		var kinds []byte
		for _, p := range strings.Split(m[2], ",") {
			p = strings.TrimSpace(p)
			switch {
			case p == "":
				continue
			case strings.Contains(p, "*"):
				kinds = append(kinds, 'p')
			case strings.HasPrefix(p, "double"):
				kinds = append(kinds, 'd')
			case strings.HasPrefix(p, "float"):
				kinds = append(kinds, 'f')
			default: // int, u32
				kinds = append(kinds, 'i')
			}
		}
		out[m[1]] = string(kinds)
	}
	return out
}

// DeviceInfo describes the opened GPU and the libraries in use.
type DeviceInfo struct {
	Name          string
	Ordinal       int
	Arch          string // e.g. "sm_90"
	SMs           int
	TotalMemory   uint64
	DriverVersion int // e.g. 13000
	NVRTCVersion  string
	CUBLASVersion int
	CUDNNVersion  int    // 0: cuDNN not in use
	KernelImage   string // "cubin (cached)", "cubin (compiled)", "ptx (compiled)" ...
	Libraries     []string
}

// cudaDevice is the real deviceAPI: one device, its primary context, one
// stream, one cuBLAS handle and the compiled kernel module.
type cudaDevice struct {
	drv  *driver
	rtc  *nvrtc
	blas *cublas
	dnn  *cudnnLib // nil: no cuDNN (convolutions use im2col)

	dnnHandle uintptr
	info      DeviceInfo

	dev    int32
	ctx    uintptr
	stream uintptr
	handle uintptr
	module uintptr
	funcs  map[string]uintptr

	// Kernel arguments: slots hold values, ptrs the slots' addresses (the
	// kernelParams array of cuLaunchKernel). Pinned for the device's life.
	args *argBlock
	pin  runtime.Pinner

	// Pinned staging for uploads: a ring of stagingSlots buffers, each
	// with an event recorded after the copy from it and waited on before
	// it is overwritten, so an upload waits only for the one issued
	// stagingSlots uploads earlier (a step's input and labels uploads
	// never wait for the step before's compute).
	staging [stagingSlots]stagingBuf
	stageAt int // the next slot

	// Page-locked host blocks handed out by hostAlloc, and the events of
	// downloadAsync: a ticket indexes events; freeEv holds reusable ones (freeEv).
	pinned []unsafe.Pointer
	events []uintptr
	freeEv []int
	busy   []bool

	// IPC handles opened in another device's context (ipc.go), by base.
	foreign map[uint64]ipcForeign

	cs copyStream // the copy stream and its events (copystream_cuda.go)
}

const maxKernelArgs = 32

// stagingSlots is the number of upload staging buffers.
const stagingSlots = 4

type stagingBuf struct {
	p    unsafe.Pointer
	size uint64
	ev   uintptr
}

type argBlock struct {
	slots [maxKernelArgs]uint64
	ptrs  [maxKernelArgs]uintptr
}

// openCUDA loads the libraries, creates the context, stream and cuBLAS
// handle, and compiles (or loads from cache) the kernels.
func openCUDA(o Options) (d *cudaDevice, err error) {
	dirs := searchDirs(o.LibDir, o.LibPath, o.PythonRoots, o.glob)
	drv, err := loadDriver(dirs)
	if err != nil {
		return nil, err
	}
	d = &cudaDevice{drv: drv, funcs: map[string]uintptr{}}
	d.info.Libraries = append(d.info.Libraries, drv.lib.path)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if err := drv.check("cuInit", drv.cuInit(0)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	var count, ver int32
	if err := drv.check("cuDeviceGetCount", drv.cuDeviceGetCount(&count)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: the driver reports 0 devices", ErrNoDevice)
	}
	if o.Device < 0 || o.Device >= int(count) {
		return nil, fmt.Errorf("%w: device %d requested, %d present", ErrNoDevice, o.Device, count)
	}
	_ = drv.cuDriverGetVersion(&ver)
	d.info.DriverVersion = int(ver)
	if err := drv.check("cuDeviceGet", drv.cuDeviceGet(&d.dev, int32(o.Device))); err != nil {
		return nil, err
	}
	d.info.Ordinal = o.Device
	var name [256]byte
	if err := drv.check("cuDeviceGetName", drv.cuDeviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return nil, err
	}
	d.info.Name = cString(&name[0])
	var major, minor, sms int32
	for _, a := range []struct {
		v    *int32
		attr int32
	}{{&major, cuDevAttrComputeCapMajor}, {&minor, cuDevAttrComputeCapMinor}, {&sms, cuDevAttrMultiprocessorCount}} {
		if err := drv.check("cuDeviceGetAttribute", drv.cuDeviceGetAttribute(a.v, a.attr, d.dev)); err != nil {
			return nil, err
		}
	}
	d.info.Arch = fmt.Sprintf("sm_%d%d", major, minor)
	d.info.SMs = int(sms)
	if err := drv.check("cuDeviceTotalMem", drv.cuDeviceTotalMem(&d.info.TotalMemory, d.dev)); err != nil {
		return nil, err
	}
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return nil, err
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	if err := drv.check("cuStreamCreate", drv.cuStreamCreate(&d.stream, 0)); err != nil {
		return nil, err
	}
	for i := range d.staging {
		if err := drv.check("cuEventCreate", drv.cuEventCreate(&d.staging[i].ev, cuEventDisableTiming)); err != nil {
			return nil, err
		}
	}
	d.args = new(argBlock)
	d.pin.Pin(d.args)
	for i := range d.args.ptrs {
		d.args.ptrs[i] = uintptr(unsafe.Pointer(&d.args.slots[i]))
	}

	if d.rtc, err = loadNVRTC(dirs); err != nil {
		return nil, err
	}
	d.info.Libraries = append(d.info.Libraries, d.rtc.lib.path)
	if d.info.NVRTCVersion, err = d.rtc.version(); err != nil {
		return nil, err
	}
	if d.blas, err = loadCUBLAS(dirs); err != nil {
		return nil, err
	}
	d.info.Libraries = append(d.info.Libraries, d.blas.lib.path)
	if err := d.blas.check("cublasCreate", d.blas.cublasCreate(&d.handle)); err != nil {
		return nil, err
	}
	var bv int32
	if err := d.blas.check("cublasGetVersion", d.blas.cublasGetVersion(d.handle, &bv)); err != nil {
		return nil, err
	}
	d.info.CUBLASVersion = int(bv)
	if err := d.blas.check("cublasSetStream", d.blas.cublasSetStream(d.handle, d.stream)); err != nil {
		return nil, err
	}
	mode := int32(cublasDefaultMath)
	if o.Precision == PrecisionTF32 {
		mode = cublasTF32TensorOp
	}
	if err := d.blas.check("cublasSetMathMode", d.blas.cublasSetMathMode(d.handle, mode)); err != nil {
		return nil, err
	}
	if err := d.loadKernels(o); err != nil {
		return nil, err
	}
	if o.Conv != ConvIm2col {
		if err := d.openCUDNN(dirs); err != nil {
			if o.Conv == ConvCUDNN {
				return nil, err
			}
			if o.Log != nil {
				o.Log("gpu: convolutions use im2col + cuBLAS: %v", err)
			}
		}
	}
	return d, nil
}

// loadKernels gets the kernel image (disk cache, else NVRTC: a CUBIN for
// the device's sm_XY, falling back to PTX for compute_XY), loads it and
// resolves every kernel.
func (d *cudaDevice) loadKernels(o Options) error {
	src := kernelSource()
	cache := kernelCache{dir: o.cacheDir()}
	sm := d.info.Arch
	compute := "compute_" + strings.TrimPrefix(sm, "sm_")
	var errs []error
	for _, t := range []struct{ arch, ext string }{{sm, "cubin"}, {compute, "ptx"}} {
		key := kernelCacheKey(src, t.arch, d.info.NVRTCVersion, kernelOptions)
		img := cache.load(key, t.ext)
		how := t.ext + " (cached)"
		if img == nil {
			var err error
			img, err = d.rtc.compile(src, "ringtrain_kernels.cu", t.arch, kernelOptions)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			how = t.ext + " (compiled)"
			if err := cache.store(key, t.ext, img); err != nil && o.Log != nil {
				o.Log("gpu: not caching kernels: %v", err)
			}
		}
		var mod uintptr
		if err := d.drv.check("cuModuleLoadData("+t.ext+")", d.drv.cuModuleLoadData(&mod, unsafe.Pointer(&img[0]))); err != nil {
			errs = append(errs, err)
			continue
		}
		d.module = mod
		d.info.KernelImage = how
		for name := range kernelSignatures(src) {
			var f uintptr
			if err := d.drv.check("cuModuleGetFunction("+name+")", d.drv.cuModuleGetFunction(&f, mod, name)); err != nil {
				return err
			}
			d.funcs[name] = f
		}
		return nil
	}
	return fmt.Errorf("gpu: no usable kernel image for %s: %w", sm, errors.Join(errs...))
}

func (d *cudaDevice) enter() error {
	return d.drv.check("cuCtxSetCurrent", d.drv.cuCtxSetCurrent(d.ctx))
}

func (d *cudaDevice) alloc(bytes uint64) (uint64, error) {
	var p uint64
	if err := d.drv.check(fmt.Sprintf("cuMemAlloc(%d)", bytes), d.drv.cuMemAlloc(&p, bytes)); err != nil {
		return 0, err
	}
	return p, nil
}

func (d *cudaDevice) free(p uint64) error { return d.drv.check("cuMemFree", d.drv.cuMemFree(p)) }

func (d *cudaDevice) launch(name string, grid, block dim3, args []karg) error {
	f, ok := d.funcs[name]
	if !ok {
		return fmt.Errorf("%w: kernel %s not in the module", ErrCUDA, name)
	}
	if len(args) > maxKernelArgs {
		return fmt.Errorf("%w: kernel %s: %d arguments", ErrBadInput, name, len(args))
	}
	for i, a := range args {
		d.args.slots[i] = a.v
	}
	code := d.drv.cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], 0, d.stream,
		uintptr(unsafe.Pointer(&d.args.ptrs[0])), 0)
	return d.drv.check("cuLaunchKernel("+name+")", code)
}

func (d *cudaDevice) gemm(g gemmCall) error {
	// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
	// swap the operands and the m/n sizes; each operand keeps its own
	// transpose flag.
	ta, tb := int32(cublasOpN), int32(cublasOpN)
	if g.transB {
		ta = cublasOpT
	}
	if g.transA {
		tb = cublasOpT
	}
	alpha, beta := g.alpha, g.beta
	if !g.bf16Operands {
		return d.blas.check("cublasSgemm", d.blas.cublasSgemm(d.handle, ta, tb, int32(g.n), int32(g.m), int32(g.k),
			&alpha, g.b, int32(g.ldb), g.a, int32(g.lda), &beta, g.c, int32(g.ldc)))
	}
	ctype := int32(cudaR32F)
	if g.bf16Out {
		ctype = cudaR16BF
	}
	return d.blas.check("cublasGemmEx(bf16)", d.blas.cublasGemmEx(d.handle, ta, tb, int32(g.n), int32(g.m), int32(g.k),
		&alpha, g.b, cudaR16BF, int32(g.ldb), g.a, cudaR16BF, int32(g.lda), &beta, g.c, ctype, int32(g.ldc),
		cublasCompute32F, cublasGemmDefault))
}

func (d *cudaDevice) memsetD32(p uint64, v uint32, n uint64) error {
	return d.drv.check("cuMemsetD32Async", d.drv.cuMemsetD32Async(p, v, n, d.stream))
}

func (d *cudaDevice) copyDtoD(dst, src, bytes uint64) error {
	return d.drv.check("cuMemcpyDtoDAsync", d.drv.cuMemcpyDtoDAsync(dst, src, bytes, d.stream))
}

func (d *cudaDevice) upload(dst uint64, src unsafe.Pointer, bytes uint64) error {
	if bytes == 0 {
		return nil
	}
	st := &d.staging[d.stageAt]
	d.stageAt = (d.stageAt + 1) % stagingSlots
	// The copy out of this slot stagingSlots uploads ago must be done.
	if err := d.drv.check("cuEventSynchronize", d.drv.cuEventSynchronize(st.ev)); err != nil {
		return err
	}
	if bytes > st.size {
		if st.p != nil {
			if err := d.drv.check("cuMemFreeHost", d.drv.cuMemFreeHost(st.p)); err != nil {
				return err
			}
			st.p, st.size = nil, 0
		}
		size := sizeClass(bytes)
		var p unsafe.Pointer
		if err := d.drv.check("cuMemHostAlloc", d.drv.cuMemHostAlloc(&p, size, cuMemHostAllocPortable)); err != nil {
			return err
		}
		st.p, st.size = p, size
	}
	copy(unsafe.Slice((*byte)(st.p), bytes), unsafe.Slice((*byte)(src), bytes))
	if err := d.drv.check("cuMemcpyHtoDAsync", d.drv.cuMemcpyHtoDAsync(dst, st.p, bytes, d.stream)); err != nil {
		return err
	}
	return d.drv.check("cuEventRecord", d.drv.cuEventRecord(st.ev, d.stream))
}

func (d *cudaDevice) download(dst unsafe.Pointer, src uint64, bytes uint64) error {
	if err := d.sync(); err != nil {
		return err
	}
	if bytes == 0 {
		return nil
	}
	return d.drv.check("cuMemcpyDtoH", d.drv.cuMemcpyDtoH(dst, src, bytes))
}

func (d *cudaDevice) hostAlloc(bytes uint64) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	if err := d.drv.check("cuMemHostAlloc", d.drv.cuMemHostAlloc(&p, max(bytes, 4), cuMemHostAllocPortable)); err != nil {
		return nil, err
	}
	d.pinned = append(d.pinned, p)
	return p, nil
}

func (d *cudaDevice) downloadAsync(dst unsafe.Pointer, src uint64, bytes uint64) (int, error) {
	var t int
	if n := len(d.freeEv); n > 0 {
		t, d.freeEv = d.freeEv[n-1], d.freeEv[:n-1]
	} else {
		var ev uintptr
		if err := d.drv.check("cuEventCreate", d.drv.cuEventCreate(&ev, cuEventDisableTiming)); err != nil {
			return -1, err
		}
		d.events, d.busy = append(d.events, ev), append(d.busy, false)
		t = len(d.events) - 1
	}
	d.busy[t] = true
	if err := d.drv.check("cuMemcpyDtoHAsync", d.drv.cuMemcpyDtoHAsync(dst, src, bytes, d.stream)); err != nil {
		return -1, err
	}
	if err := d.drv.check("cuEventRecord", d.drv.cuEventRecord(d.events[t], d.stream)); err != nil {
		return -1, err
	}
	return t, nil
}

func (d *cudaDevice) waitDownload(t int) error {
	if t < 0 || t >= len(d.events) || !d.busy[t] {
		return fmt.Errorf("%w: copy ticket %d is not pending", ErrBadInput, t)
	}
	err := d.drv.check("cuEventSynchronize", d.drv.cuEventSynchronize(d.events[t]))
	d.busy[t] = false
	d.freeEv = append(d.freeEv, t)
	return err
}

func (d *cudaDevice) sync() error {
	return d.drv.check("cuStreamSynchronize", d.drv.cuStreamSynchronize(d.stream))
}

// close releases the module, handle, stream, staging and context; it is
// safe on a partly opened device.
func (d *cudaDevice) close() error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if d.ctx != 0 {
		keep(d.enter())
	}
	if d.stream != 0 {
		keep(d.sync())
	}
	keep(d.ipcCloseForeign())
	if d.drv != nil {
		keep(d.closeCopies())
	}
	if d.dnnHandle != 0 {
		keep(d.dnn.check("cudnnDestroy", d.dnn.cudnnDestroy(d.dnnHandle)))
		d.dnnHandle = 0
	}
	if d.handle != 0 {
		keep(d.blas.check("cublasDestroy", d.blas.cublasDestroy(d.handle)))
		d.handle = 0
	}
	if d.module != 0 {
		keep(d.drv.check("cuModuleUnload", d.drv.cuModuleUnload(d.module)))
		d.module = 0
	}
	for i := range d.staging {
		st := &d.staging[i]
		if st.p != nil {
			keep(d.drv.check("cuMemFreeHost", d.drv.cuMemFreeHost(st.p)))
			st.p, st.size = nil, 0
		}
		if st.ev != 0 {
			keep(d.drv.check("cuEventDestroy", d.drv.cuEventDestroy(st.ev)))
			st.ev = 0
		}
	}
	for _, ev := range d.events {
		keep(d.drv.check("cuEventDestroy", d.drv.cuEventDestroy(ev)))
	}
	d.events, d.busy, d.freeEv = nil, nil, nil
	for _, p := range d.pinned {
		keep(d.drv.check("cuMemFreeHost", d.drv.cuMemFreeHost(p)))
	}
	d.pinned = nil
	if d.stream != 0 {
		keep(d.drv.check("cuStreamDestroy", d.drv.cuStreamDestroy(d.stream)))
		d.stream = 0
	}
	if d.ctx != 0 {
		keep(d.drv.check("cuDevicePrimaryCtxRelease", d.drv.cuDevicePrimaryCtxRelease(d.dev)))
		d.ctx = 0
	}
	d.pin.Unpin()
	return errors.Join(errs...)
}

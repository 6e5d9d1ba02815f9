package gpu

// emuDevice is a deviceAPI that runs the real kernel sources on the CPU:
// kernels/*.cu is compiled as host C++ (g++ or clang++, with a small shim
// for the CUDA built-ins and -ffp-contract=off, i.e. NVRTC's --fmad=false)
// into a shared library that purego opens; every launch runs the kernel's
// blocks serially. Device pointers are host addresses; GEMMs are a plain
// Go loop (float32 accumulation, bf16 operands widened exactly).
//
// It checks the Go side (chunking, scratch, GEMM operands, launch shapes)
// and the kernels' index arithmetic numerically against the CPU backend
// on machines without a GPU. It cannot see what only a GPU does
// (races, FMA contraction if --fmad were on, cuBLAS's own rounding).
//
// Kernels that use shared memory (block reductions) run with one thread
// per block, which their strided loops are written to allow; the others
// run every thread of the launched grid.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
)

const emuShim = `
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>
struct emu_dim3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static emu_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
// Threads of a block that uses shared memory run as fibers: __syncthreads
// switches back to the block's scheduler, which runs every fiber up to its
// next barrier (or its end) in thread order, then the next phase. Kernel
// locals live on each fiber's stack; __shared__ arrays are statics, one
// copy for the (serially run) blocks. On x86-64 a fiber switch is the few
// instructions below (glibc's swapcontext makes a system call per switch,
// which made the tests ~15x slower); elsewhere ucontext.
static unsigned emu_nfib, emu_cur, emu_fibcap;
static int emu_reverse;  // run each phase's threads last to first (emu_order)
extern "C" void emu_order(int reverse) { emu_reverse = reverse; }
static unsigned char* emu_fin;
static char* emu_stacks;
static void (*emu_body)();
static const size_t emu_stack = 64 * 1024;
#if defined(__x86_64__)
extern "C" __attribute__((visibility("hidden"))) void emu_switch(void** save, void* to);
asm(".text\n.p2align 4\n.globl emu_switch\n.hidden emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size emu_switch,.-emu_switch\n");
static void* emu_main_sp;
static void** emu_sp;
static inline void emu_yield() { emu_switch(&emu_sp[emu_cur], emu_main_sp); }
static void emu_entry() {
  emu_body();
  emu_fin[emu_cur] = 1;
  emu_yield();  // never resumed
  __builtin_unreachable();
}
static int emu_fibers_alloc(unsigned n) {
  emu_sp = (void**)calloc(n, sizeof(void*));
  return emu_sp != 0;
}
static void emu_fibers_free() { free(emu_sp); }
static void emu_fiber_init(unsigned i) {
  // The first switch pops six registers and returns into emu_entry with
  // the stack as a call would leave it (rsp = 8 mod 16).
  // Stack tops are staggered by 64 bytes per fiber: tops a power of two
  // apart would all fall in the same cache sets.
  void** sp = (void**)(emu_stacks + (size_t)(i + 1) * emu_stack - (i % 64) * 64) - 8;
  for (int k = 0; k < 6; k++) sp[k] = 0;
  sp[6] = (void*)emu_entry;
  sp[7] = 0;
  emu_sp[i] = sp;
}
static inline void emu_resume(unsigned i) { emu_switch(&emu_main_sp, emu_sp[i]); }
#else
static ucontext_t emu_main;
static ucontext_t* emu_ctx;
static inline void emu_yield() { swapcontext(&emu_ctx[emu_cur], &emu_main); }
static void emu_entry() {
  emu_body();
  emu_fin[emu_cur] = 1;  // returns to uc_link, the scheduler
}
static int emu_fibers_alloc(unsigned n) {
  emu_ctx = (ucontext_t*)calloc(n, sizeof(ucontext_t));
  return emu_ctx != 0;
}
static void emu_fibers_free() { free(emu_ctx); }
static void emu_fiber_init(unsigned i) {
  getcontext(&emu_ctx[i]);
  emu_ctx[i].uc_stack.ss_sp = emu_stacks + (size_t)i * emu_stack;
  emu_ctx[i].uc_stack.ss_size = emu_stack;
  emu_ctx[i].uc_link = &emu_main;
  makecontext(&emu_ctx[i], emu_entry, 0);
}
static inline void emu_resume(unsigned i) { swapcontext(&emu_main, &emu_ctx[i]); }
#endif
static inline void __syncthreads() {
  if (emu_nfib > 1) emu_yield();
}
// emu_block runs one block of n threads as fibers; 0 when out of memory.
static int emu_block(void (*body)(), unsigned n) {
  if (n > emu_fibcap) {
    emu_fibers_free();
    free(emu_stacks);
    free(emu_fin);
    int ok = emu_fibers_alloc(n);
    emu_stacks = (char*)aligned_alloc(64, n * emu_stack);
    emu_fin = (unsigned char*)calloc(n, 1);
    emu_fibcap = ok && emu_stacks && emu_fin ? n : 0;
    if (emu_fibcap == 0) return 0;
  }
  emu_body = body;
  emu_nfib = n;
  for (unsigned i = 0; i < n; i++) {
    emu_fiber_init(i);
    emu_fin[i] = 0;
  }
  for (unsigned live = n; live > 0;) {
    for (unsigned k = 0; k < n; k++) {
      unsigned i = emu_reverse ? n - 1 - k : k;
      if (emu_fin[i]) continue;
      emu_cur = i;
      threadIdx.x = i % blockDim.x;
      threadIdx.y = i / blockDim.x % blockDim.y;
      threadIdx.z = i / (blockDim.x * blockDim.y);
      emu_resume(i);
      if (emu_fin[i]) live--;
    }
  }
  emu_nfib = 0;
  return 1;
}
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
`

var emuParam = regexp.MustCompile(`^(.*?)\s*\b(\w+)$`)

// emuLaunchers generates one extern "C" launcher per kernel:
// L_<name>(void** args, gx, gy, gz, bx, by, bz).
func emuLaunchers(src string) (string, map[string]bool) {
	var b strings.Builder
	shared := map[string]bool{}
	locs := kernelDecl.FindAllStringSubmatchIndex(src, -1)
	for i, m := range locs {
		name := src[m[2]:m[3]]
		end := len(src)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := src[m[1]:end]
		shared[name] = strings.Contains(body, "__shared__")
		var args []string
		for j, p := range strings.Split(src[m[4]:m[5]], ",") {
			p = strings.Join(strings.Fields(p), " ")
			if p == "" {
				continue
			}
			pm := emuParam.FindStringSubmatch(p)
			args = append(args, fmt.Sprintf("*(%s*)A_%s[%d]", pm[1], name, j))
		}
		fmt.Fprintf(&b, `static void** A_%[1]s;
static void B_%[1]s() { %[1]s(%[2]s); }
extern "C" int L_%[1]s(void** a, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
  A_%[1]s = a;
  gridDim.x = gx; gridDim.y = gy; gridDim.z = gz; blockDim.x = bx; blockDim.y = by; blockDim.z = bz;
  unsigned n = bx * by * bz;
  for (unsigned z = 0; z < gz; z++) for (unsigned y = 0; y < gy; y++) for (unsigned x = 0; x < gx; x++) {
    blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
    if (%[3]d && n > 1) {
      if (!emu_block(B_%[1]s, n)) return 0;
      continue;
    }
    for (unsigned tz = 0; tz < bz; tz++) for (unsigned ty = 0; ty < by; ty++) for (unsigned tx = 0; tx < bx; tx++) {
      threadIdx.x = tx; threadIdx.y = ty; threadIdx.z = tz;
      B_%[1]s();
    }
  }
  return 1;
}
`, name, strings.Join(args, ", "), b2i(shared[name]))
	}
	return b.String(), shared
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

type emuLib struct {
	handle uintptr
	shared map[string]bool
	fns    map[string]func(a uintptr, gx, gy, gz, bx, by, bz uint32) int32
	order  func(reverse int32) // emu_order
}

// errNoCompiler: the emulator cannot be built here (the tests skip).
var errNoCompiler = errors.New("no C++ compiler (g++ or clang++) to build the kernel emulator")

var (
	emuOnce   sync.Once
	emuLoaded *emuLib
	emuErr    error
)

// loadEmu compiles and opens the host build of the kernels (once per test
// binary). It fails when no C++ compiler is installed.
func loadEmu() (*emuLib, error) {
	emuOnce.Do(func() { emuLoaded, emuErr = buildEmu() })
	return emuLoaded, emuErr
}

func buildEmu() (*emuLib, error) {
	var cxx string
	for _, c := range []string{"g++", "clang++"} {
		if p, err := exec.LookPath(c); err == nil {
			cxx = p
			break
		}
	}
	if cxx == "" {
		return nil, errNoCompiler
	}
	src := kernelSource()
	launchers, shared := emuLaunchers(src)
	dir, err := os.MkdirTemp("", "ringtrain-emu")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// #line markers would point diagnostics at files that do not exist here.
	body := regexp.MustCompile(`(?m)^#line .*$`).ReplaceAllString(src, "")
	cu := filepath.Join(dir, "k.cpp")
	if err := os.WriteFile(cu, []byte(emuShim+body+launchers), 0o644); err != nil {
		return nil, err
	}
	so := filepath.Join(dir, "k.so")
	out, err := exec.Command(cxx, "-x", "c++", "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math",
		"-shared", "-fPIC", "-w", cu, "-o", so).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("compiling the kernel emulator with %s: %v\n%s", cxx, err, out)
	}
	h, err := purego.Dlopen(so, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("opening the kernel emulator: %w", err)
	}
	l := &emuLib{handle: h, shared: shared, fns: map[string]func(a uintptr, gx, gy, gz, bx, by, bz uint32) int32{}}
	purego.RegisterLibFunc(&l.order, h, "emu_order")
	for name := range shared {
		var f func(a uintptr, gx, gy, gz, bx, by, bz uint32) int32
		purego.RegisterLibFunc(&f, h, "L_"+name)
		l.fns[name] = f
	}
	return l, nil
}

// emuDevice implements deviceAPI on host memory with the emulated kernels.
type emuDevice struct {
	lib    *emuLib
	blocks map[uint64][]uint64 // live allocations (uint64 words: 8-byte aligned)
	args   *argBlock
	pin    runtime.Pinner
	gemms  []gemmCall // every GEMM, for tests that inspect them
	hostCopies
	ipc     emuIPC     // its emulated GPU and IPC mappings (ipc_emu_test.go)
	streams emuStreams // the copy stream's twin (copystream_emu_test.go)
}

func newEmuDevice() (*emuDevice, error) {
	l, err := loadEmu()
	if err != nil {
		return nil, err
	}
	d := &emuDevice{lib: l, blocks: map[uint64][]uint64{}, args: new(argBlock)}
	d.pin.Pin(d.args)
	for i := range d.args.ptrs {
		d.args.ptrs[i] = uintptr(unsafe.Pointer(&d.args.slots[i]))
	}
	return d, nil
}

func (d *emuDevice) alloc(n uint64) (uint64, error) {
	// 16-byte aligned, as cuMemAlloc's (at least 256) is for the _v4
	// kernels: the block starts at the first aligned word.
	buf := make([]uint64, (n+7)/8+2)
	if uintptr(unsafe.Pointer(&buf[0]))%16 != 0 {
		buf = buf[1:]
	}
	p := uint64(uintptr(unsafe.Pointer(&buf[0])))
	d.blocks[p] = buf
	return p, nil
}

func (d *emuDevice) free(p uint64) error {
	if _, ok := d.blocks[p]; !ok {
		return fmt.Errorf("emu: free of %#x, not an allocation", p)
	}
	delete(d.blocks, p)
	return nil
}

func (d *emuDevice) enter() error { return nil }
func (d *emuDevice) sync() error  { return nil }
func (d *emuDevice) close() error { d.pin.Unpin(); return nil }

func (d *emuDevice) launch(name string, grid, block dim3, args []karg) error {
	f, ok := d.lib.fns[name]
	if !ok {
		return fmt.Errorf("%w: emu: kernel %s unknown", ErrCUDA, name)
	}
	for i, a := range args {
		d.args.slots[i] = a.v
	}
	if err := d.ipcReachableArgs(name, args); err != nil {
		return err
	}
	emuLaunchMu.Lock() // the library's blockIdx etc. are globals shared by every device
	defer emuLaunchMu.Unlock()
	if f(uintptr(unsafe.Pointer(&d.args.ptrs[0])), grid[0], grid[1], grid[2], block[0], block[1], block[2]) == 0 {
		return fmt.Errorf("%w: emu: no memory for the %d fibers of a %s block", ErrCUDA, block[0]*block[1]*block[2], name)
	}
	return nil
}

// at turns a device address into a Go pointer into its allocation.
func (d *emuDevice) at(p uint64) unsafe.Pointer {
	for base, buf := range d.blocks {
		if p >= base && p < base+uint64(len(buf))*8 {
			return unsafe.Add(unsafe.Pointer(&buf[0]), p-base)
		}
	}
	if q := emuIPCAt(p); q != nil { // another emulated device's exported block
		return q
	}
	panic(fmt.Sprintf("emu: address %#x outside every allocation", p)) // a test bug
}

func (d *emuDevice) f32s(p uint64, n int) []float32 {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(d.at(p)), n)
}

// operand reads a rows x cols row-major matrix (leading dimension ld) as
// float32, from float32 or bf16 storage.
func (d *emuDevice) operand(p uint64, rows, cols, ld int, bf16 bool) []float32 {
	out := make([]float32, rows*cols)
	if !bf16 {
		src := d.f32s(p, (rows-1)*ld+cols)
		for r := 0; r < rows; r++ {
			copy(out[r*cols:(r+1)*cols], src[r*ld:r*ld+cols])
		}
		return out
	}
	src := unsafe.Slice((*uint16)(d.at(p)), (rows-1)*ld+cols)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[r*cols+c] = math.Float32frombits(uint32(src[r*ld+c]) << 16)
		}
	}
	return out
}

func (d *emuDevice) gemm(g gemmCall) error {
	d.gemms = append(d.gemms, g)
	ar, ac := g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	A := d.operand(g.a, ar, ac, g.lda, g.bf16Operands)
	B := d.operand(g.b, br, bc, g.ldb, g.bf16Operands)
	// Normalise to A (m x k), B (k x n) row-major.
	if g.transA {
		A = transpose(A, ar, ac)
	}
	if g.transB {
		B = transpose(B, br, bc)
	}
	var C []float32
	var C16 []uint16
	if g.bf16Out {
		C16 = unsafe.Slice((*uint16)(d.at(g.c)), (g.m-1)*g.ldc+g.n)
	} else {
		C = d.f32s(g.c, (g.m-1)*g.ldc+g.n)
	}
	acc := make([]float32, g.n)
	for i := 0; i < g.m; i++ {
		clear(acc)
		for k := 0; k < g.k; k++ {
			a := A[i*g.k+k]
			if a == 0 {
				continue
			}
			row := B[k*g.n : (k+1)*g.n]
			for j, b := range row {
				acc[j] += a * b
			}
		}
		if g.bf16Out { // beta is 0 (checked by the fake device's rules)
			for j := range acc {
				C16[i*g.ldc+j] = uint16(math.Float32bits(roundBF16(g.alpha*acc[j])) >> 16)
			}
			continue
		}
		crow := C[i*g.ldc : i*g.ldc+g.n]
		for j := range crow {
			v := g.alpha * acc[j]
			if g.beta != 0 {
				v += g.beta * crow[j]
			}
			crow[j] = v
		}
	}
	return nil
}

func transpose(a []float32, rows, cols int) []float32 {
	out := make([]float32, len(a))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = a[r*cols+c]
		}
	}
	return out
}

func (d *emuDevice) memsetD32(p uint64, v uint32, n uint64) error {
	w := unsafe.Slice((*uint32)(d.at(p)), n)
	for i := range w {
		w[i] = v
	}
	return nil
}

func (d *emuDevice) bytesAt(p uint64, n uint64) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(d.at(p)), n)
}

func (d *emuDevice) copyDtoD(dst, src, n uint64) error {
	if err := d.ipcReachable("cuMemcpyDtoDAsync", dst, src); err != nil {
		return err
	}
	copy(d.bytesAt(dst, n), d.bytesAt(src, n))
	return nil
}

func (d *emuDevice) upload(dst uint64, src unsafe.Pointer, n uint64) error {
	copy(d.bytesAt(dst, n), unsafe.Slice((*byte)(src), n))
	return nil
}

func (d *emuDevice) download(dst unsafe.Pointer, src uint64, n uint64) error {
	copy(unsafe.Slice((*byte)(dst), n), d.bytesAt(src, n))
	return nil
}

// The emulator runs every op at once, so an asynchronous copy is done
// when it is queued.
func (d *emuDevice) downloadAsync(dst unsafe.Pointer, src uint64, n uint64) (int, error) {
	return d.queue(func() error { return d.download(dst, src, n) })
}

// openEmu returns a Backend over the emulator with the given precision.
func openEmu(prec string) (*Backend, error) { return openEmuSMs(prec, 4) }

// openEmuSMs opens the emulator as a device of sms multiprocessors (the
// reductions' chunk counts depend on it).
func openEmuSMs(prec string, sms int) (*Backend, error) {
	d, err := newEmuDevice()
	if err != nil {
		return nil, err
	}
	o := Options{Precision: prec}
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := newBackend(o, d, sms)
	b.info = DeviceInfo{Name: "emulator (host C++ build of the kernels)", Arch: "host", SMs: sms, KernelImage: "host"}
	return b, nil
}

// TestLayoutKernels checks the bf16 NCHW <-> NHWC kernels of the cuDNN
// path on the emulator: element placement, round-to-nearest-even, and the
// accumulate flag.
func TestLayoutKernels(t *testing.T) {
	b, err := openEmu(PrecisionBF16)
	if errors.Is(err, errNoCompiler) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n, c, hw = 2, 3, 5
	v := make([]float32, n*c*hw)
	for i := range v {
		v[i] = float32(i) - 7 // small integers: exact in bf16
	}
	// Ties go to even (bf16 keeps 7 fraction bits: ulp 2^-7 at 1).
	round := map[float32]float32{
		1 + 1.0/256: 1,           // tie between 1 and 1+2^-7: even is 1
		1 + 3.0/256: 1 + 1.0/64,  // tie between 1+2^-7 and 1+2^-6: even is 1+2^-6
		1 + 3.0/512: 1 + 1.0/128, // above the midpoint: up
	}
	v[4], v[5], v[6] = 1+1.0/256, 1+3.0/256, 1+3.0/512
	bf := func(f float32) float32 {
		if r, ok := round[f]; ok {
			return r
		}
		return f // exact in bf16
	}
	x := b.New(n, c, hw)
	b.FromHost(x, v)
	buf := b.toNHWC("test", x, n, c, hw)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	d := b.dev.(*emuDevice)
	got := unsafe.Slice((*uint16)(d.at(buf)), n*c*hw)
	for bi := 0; bi < n; bi++ {
		for ci := 0; ci < c; ci++ {
			for p := 0; p < hw; p++ {
				src := v[(bi*c+ci)*hw+p]
				want := math.Float32bits(bf(src)) >> 16
				if g := got[(bi*hw+p)*c+ci]; uint32(g) != want {
					t.Fatalf("nhwc[%d,%d,%d] = %#x, want %#x (from %v)", bi, p, ci, g, want, src)
				}
			}
		}
	}
	y := b.New(n, c, hw)
	b.Fill(y, 100)
	b.fromNHWC(ptr(y), buf, n, c, hw, false)
	h := make([]float32, len(v))
	b.ToHost(h, y)
	for i := range h {
		want := bf(v[i])
		if h[i] != want {
			t.Fatalf("assign: element %d = %v, want %v", i, h[i], want)
		}
	}
	b.fromNHWC(ptr(y), buf, n, c, hw, true)
	b.ToHost(h, y)
	for i := range h {
		if w := 2 * bf(v[i]); h[i] != w {
			t.Fatalf("accumulate: element %d = %v, want %v", i, h[i], w)
		}
	}
}

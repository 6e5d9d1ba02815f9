package gpu

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ebitengine/purego"
)

// ringValues returns n float32s spread over many exponents (so sums
// round), with a few exact cancellations and signed zeros.
func ringValues(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-20)))
	}
	if n > 3 {
		v[1], v[2] = float32(math.Copysign(0, -1)), 1e-38
	}
	return v
}

// TestRingKernels checks the device ring's kernels on the emulator against
// the host ring's float operations, bit for bit: add (with and without the
// owner's division), division, and the small path's float64 sum in rank
// order.
func TestRingKernels(t *testing.T) {
	b := emuOrSkip(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 1000 + 7
	x, y := ringValues(rng, n), ringValues(rng, n)
	dx, dy := b.New(n), b.New(n)
	b.FromHost(dx, x)
	b.FromHost(dy, y)
	got := make([]float32, n)
	bits := func(what string, want func(i int) float32) {
		t.Helper()
		if err := b.RingSync(); err != nil {
			t.Fatal(err)
		}
		b.ToHost(got, dx)
		for i := range got {
			if w := want(i); math.Float32bits(got[i]) != math.Float32bits(w) {
				t.Fatalf("%s: element %d = %v (%#x), want %v (%#x)", what, i, got[i], math.Float32bits(got[i]), w, math.Float32bits(w))
			}
		}
		b.FromHost(dx, x)
	}
	b.RingAdd(ptr(dx), ptr(dy), n, 0)
	bits("add", func(i int) float32 { return x[i] + y[i] })
	b.RingAdd(ptr(dx), ptr(dy), n, 3)
	bits("add/3", func(i int) float32 { s := x[i] + y[i]; return s / 3 })
	b.RingDiv(ptr(dx), ptr(dy), n, 3)
	bits("div", func(i int) float32 { return y[i] / 3 })
	b.RingCopy(ptr(dx), ptr(dy), n-1)
	bits("copy", func(i int) float32 {
		if i < n-1 {
			return y[i]
		}
		return x[i]
	})

	const w, l = 3, 333 // all holds w vectors of l
	all := ringValues(rng, w*l)
	dall := b.New(w * l)
	b.FromHost(dall, all)
	for _, mean := range []bool{false, true} {
		b.RingSum64(ptr(dx), ptr(dall), l, w, mean)
		bits("sum64", func(i int) float32 {
			if i >= l {
				return x[i]
			}
			s := 0.0
			for k := 0; k < w; k++ {
				s += float64(all[k*l+i])
			}
			if mean {
				s /= w
			}
			return float32(s)
		})
	}
}

// TestIPCOpenPeerMemory exports a tensor of one emulated device and opens
// it in another: the second device's ring kernel reads the first's memory
// at the exported offset, and closing works once opened.
func TestIPCOpenPeerMemory(t *testing.T) {
	a, b := emuOrSkip(t), emuOrSkip(t)
	if a.IPCKind() != "emu-ipc" || a.IPCKind() != b.IPCKind() {
		t.Fatalf("kinds %q, %q", a.IPCKind(), b.IPCKind())
	}
	big := a.New(64)
	vals := make([]float32, 64)
	for i := range vals {
		vals[i] = float32(i) + 0.5
	}
	a.FromHost(big, vals)
	view := big.View(16, 8) // elements 16..23
	h, off, err := a.IPCExport(ptr(view))
	if err != nil {
		t.Fatal(err)
	}
	if off != 16*4 {
		t.Fatalf("offset %d, want %d", off, 16*4)
	}
	base, copyOnly, err := b.IPCOpen(h, a.IPCIdentity())
	if err != nil || copyOnly {
		t.Fatalf("open: copy-only %v, %v (one emulated GPU: want direct access)", copyOnly, err)
	}
	dst := b.New(8)
	b.Fill(dst, 1)
	b.RingAdd(ptr(dst), base+off, 8, 0)
	got := make([]float32, 8)
	b.ToHost(got, dst)
	if err := b.RingSync(); err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if w := vals[16+i] + 1; g != w {
			t.Fatalf("element %d = %v, want %v", i, g, w)
		}
	}
	if err := b.IPCClose(base); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.IPCOpen(h[:8], a.IPCIdentity()); err == nil {
		t.Fatal("a truncated handle opened")
	}
}

// TestIPCWithoutAbility: a device without IPC (the recording fake) says so
// with ErrNoIPC, and an empty kind.
func TestIPCWithoutAbility(t *testing.T) {
	b := newBackend(Options{Precision: PrecisionFP32}, newFakeDevice(t), 4)
	if k := b.IPCKind(); k != "" {
		t.Fatalf("kind %q", k)
	}
	if _, _, err := b.IPCExport(1 << 20); !errors.Is(err, ErrNoIPC) {
		t.Fatalf("export: %v, want ErrNoIPC", err)
	}
	if _, _, err := b.IPCOpen(make([]byte, 64), "GPU-0"); !errors.Is(err, ErrNoIPC) {
		t.Fatalf("open: %v, want ErrNoIPC", err)
	}
}

// TestIPCHandleByValueABI checks, with a C function built by the host
// compiler, that the way cuIpcOpenMemHandle is declared in Go (a 64-byte
// struct by value between a pointer and an unsigned) passes every byte of
// the handle and the flags where C expects them.
func TestIPCHandleByValueABI(t *testing.T) {
	cxx := ""
	for _, c := range []string{"g++", "clang++"} {
		if p, err := exec.LookPath(c); err == nil {
			cxx = p
			break
		}
	}
	if cxx == "" {
		t.Skip(errNoCompiler)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "abi.cpp")
	if err := os.WriteFile(src, []byte(`
typedef struct { char reserved[64]; } CUipcMemHandle;
extern "C" int cuIpcOpenMemHandle_v2(unsigned long long* p, CUipcMemHandle h, unsigned flags) {
  unsigned long long s = 0;
  for (int i = 0; i < 64; i++) s = s * 31 + (unsigned char)h.reserved[i];
  *p = s;
  return (int)flags;
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	so := filepath.Join(dir, "abi.so")
	if out, err := exec.Command(cxx, "-shared", "-fPIC", "-O1", src, "-o", so).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h, err := purego.Dlopen(so, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	var s ipcDriver
	purego.RegisterLibFunc(&s.cuIpcOpenMemHandle, h, "cuIpcOpenMemHandle_v2")
	var hd cuIpcMemHandle
	var want uint64
	for i := range hd.reserved {
		hd.reserved[i] = byte(7*i + 3)
		want = want*31 + uint64(hd.reserved[i])
	}
	var got uint64
	if rc := s.cuIpcOpenMemHandle(&got, hd, 0x5a); rc != 0x5a || got != want {
		t.Fatalf("C saw flags %#x (want 0x5a) and handle hash %#x (want %#x)", rc, got, want)
	}
}

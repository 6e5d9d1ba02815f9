package gpu

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
)

// withEnvSearch returns o searching where the binaries search
// (cmd/internal/env.CUDASearch): $RINGTRAIN_CUDA_LIB_DIR and
// $LD_LIBRARY_PATH, then $VIRTUAL_ENV's and $HOME/.local's Python wheels.
// The GPU tests open devices with it, so that the device scripts' library
// locations keep working.
func withEnvSearch(o Options) Options {
	if d := os.Getenv("RINGTRAIN_CUDA_LIB_DIR"); d != "" {
		o.LibPath = append(o.LibPath, d)
	}
	for _, d := range strings.Split(os.Getenv("LD_LIBRARY_PATH"), ":") {
		if d != "" {
			o.LibPath = append(o.LibPath, d)
		}
	}
	if v := os.Getenv("VIRTUAL_ENV"); v != "" {
		o.PythonRoots = append(o.PythonRoots, v)
	}
	if h := os.Getenv("HOME"); h != "" {
		o.PythonRoots = append(o.PythonRoots, filepath.Join(h, ".local"))
	}
	return o
}

func TestSearchDirsOrder(t *testing.T) {
	globbed := map[string][]string{
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib":   {"/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas/lib", "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib"},
		"/home/u/.local/lib/python3*/site-packages/nvidia/*/lib": {"/home/u/.local/lib/python3.11/site-packages/nvidia/cudnn/lib"},
	}
	dirs := searchDirs("/explicit", []string{"/env/dir", "/ld/a", "", "/ld/b", "/env/dir"}, []string{"", "/home/u/.local"},
		func(p string) ([]string, error) { return globbed[p], nil })
	want := []string{"/explicit", "/env/dir", "/ld/a", "/ld/b"}
	for i, w := range want {
		if dirs[i] != w {
			t.Fatalf("dirs[%d] = %q, want %q (all: %v)", i, dirs[i], w, dirs)
		}
	}
	idx := func(d string) int {
		for i, x := range dirs {
			if x == d {
				return i
			}
		}
		return -1
	}
	std, cu13, cublas := idx("/usr/local/cuda/lib64"), idx("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib"), idx("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas/lib")
	user := idx("/home/u/.local/lib/python3.11/site-packages/nvidia/cudnn/lib")
	if std < 4 || cu13 < std || cublas < cu13 || user < cublas {
		t.Fatalf("want standard dirs before sorted python wheel dirs, then the python roots', got %v", dirs)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if seen[d] || d == "" {
			t.Fatalf("duplicate or empty dir %q in %v", d, dirs)
		}
		seen[d] = true
	}
}

func TestCandidatesOnlyExistingThenBareNames(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(d2, "libx.so.2"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := candidates([]string{d1, d2}, []string{"libx.so.3", "libx.so.2"}, fileExists)
	want := []string{filepath.Join(d2, "libx.so.2"), "libx.so.3", "libx.so.2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("candidates = %v, want %v", got, want)
	}
}

func TestOpenLibraryMissingListsSearch(t *testing.T) {
	d := t.TempDir()
	// A file that exists but is no shared object: its dlopen error must be listed.
	bad := filepath.Join(d, "libringtrain_nope.so.1")
	if err := os.WriteFile(bad, []byte("not an ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := openLibrary("nope", []string{"libringtrain_nope.so.1"}, []string{d, "/no/such/dir"}, nil)
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("err = %v, want ErrLibraryNotFound", err)
	}
	for _, s := range []string{d, "/no/such/dir", bad, "--cuda-lib-dir", "RINGTRAIN_CUDA_LIB_DIR"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not mention %q: %v", s, err)
		}
	}
}

// purego must load and call C code in a CGO_ENABLED=0 build: open libm by
// the same path as the CUDA libraries and call cos.
func TestPuregoCallsLibm(t *testing.T) {
	lib, err := openLibrary("libm", []string{"libm.so.6"}, searchDirs("", nil, nil, func(string) ([]string, error) { return nil, nil }), nil)
	if err != nil {
		t.Skipf("no libm on this machine: %v", err)
	}
	var cos func(float64) float64
	if err := lib.sym(&cos, "cos"); err != nil {
		t.Fatal(err)
	}
	for _, x := range []float64{0, 0.5, 2, -3} {
		if got := cos(x); math.Abs(got-math.Cos(x)) > 1e-15 {
			t.Fatalf("cos(%v) = %v via purego, want %v", x, got, math.Cos(x))
		}
	}
	var missing func()
	if err := lib.sym(&missing, "ringtrain_no_such_symbol"); !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("missing symbol: err = %v", err)
	}
	// cString reads C memory: strerror-like data from a Go buffer suffices.
	b := []byte("hello\x00world")
	if s := cString(&b[0]); s != "hello" {
		t.Fatalf("cString = %q", s)
	}
	_ = purego.RTLD_NOW
}

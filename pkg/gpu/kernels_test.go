package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every kernel the Go side launches exists in the source, and the source
// declares no kernel the Go side never names.
func TestKernelNamesMatchGo(t *testing.T) {
	sigs := kernelSignatures(kernelSource())
	if len(sigs) < 25 {
		t.Fatalf("only %d kernels parsed", len(sigs))
	}
	used := map[string]bool{}
	files, _ := filepath.Glob("*.go")
	lit := regexp.MustCompile(`"(k_\w+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	for k := range used {
		if _, ok := sigs[k]; !ok {
			t.Errorf("Go launches %s, which the kernels do not define", k)
		}
	}
	for k := range sigs {
		if !used[k] {
			t.Errorf("kernel %s is never launched", k)
		}
	}
}

// clangPath finds a clang that can parse CUDA (any version >= 14).
func clangPath() string {
	if p, err := exec.LookPath("clang"); err == nil {
		return p
	}
	m, _ := filepath.Glob("/usr/lib/llvm-*/bin/clang")
	if len(m) > 0 {
		return m[len(m)-1]
	}
	return ""
}

// TestKernelsCompileWithClang compiles the embedded CUDA C to PTX with
// clang, against declarations of the intrinsics (testdata/cuda_shim.h), so
// that syntax and type errors show up on machines without CUDA. NVRTC on
// the GPU remains the real compiler.
func TestKernelsCompileWithClang(t *testing.T) {
	clang := clangPath()
	if clang == "" {
		t.Skip("no clang on this machine (apt-get install clang) to check the CUDA sources")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "k.cu")
	if err := os.WriteFile(src, []byte(kernelSource()), 0o644); err != nil {
		t.Fatal(err)
	}
	shim, _ := filepath.Abs("testdata/cuda_shim.h")
	out, err := exec.Command(clang, "-x", "cuda", "--cuda-device-only", "-nocudainc", "-nocudalib",
		"--cuda-gpu-arch=sm_80", "-std=c++17", "-O2", "-Wall", "-Werror",
		// An installed CUDA newer than this clang knows is irrelevant: no
		// CUDA header or library is used (-nocudainc, -nocudalib).
		"-Wno-unknown-cuda-version", "-S", "-include", shim,
		src, "-o", filepath.Join(dir, "k.ptx")).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "cannot find") || strings.Contains(string(out), "unsupported") ||
			strings.Contains(string(out), "unknown-cuda-version") || strings.Contains(string(out), "unknown argument") {
			t.Skipf("this clang cannot compile CUDA: %s", out)
		}
		t.Fatalf("clang: %v\n%s", err, out)
	}
	ptx, err := os.ReadFile(filepath.Join(dir, "k.ptx"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range kernelSignatures(kernelSource()) {
		if !strings.Contains(string(ptx), ".entry "+name+"(") {
			t.Errorf("kernel %s missing from the PTX", name)
		}
	}
}

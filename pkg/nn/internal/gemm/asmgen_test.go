package gemm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestAssemblyUpToDate: kernel_amd64.s is exactly what asmgen writes, so
// the committed assembly and its generator never drift apart.
func TestAssemblyUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds asmgen")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), "kernel_amd64.s")
	cmd := exec.Command(goBin, "run", "./asmgen", "-o", out)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./asmgen: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("kernel_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("kernel_amd64.s differs from asmgen's output: run `make gemm-generate`")
	}
}

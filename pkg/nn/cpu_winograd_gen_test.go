package nn

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestWinogradAssemblyUpToDate: cpu_winograd_amd64.s is exactly what
// internal/winogen writes, so the committed assembly and its generator
// never drift apart (edit the generator, then `make winograd-generate`).
func TestWinogradAssemblyUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds winogen")
	}
	// go test puts its own GOROOT/bin first on the PATH of the tests.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	out := filepath.Join(t.TempDir(), "cpu_winograd_amd64.s")
	cmd := exec.Command(goBin, "run", "./internal/winogen", "-o", out)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/winogen: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("cpu_winograd_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("cpu_winograd_amd64.s differs from winogen's output: run `make winograd-generate`")
	}
}

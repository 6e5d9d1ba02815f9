package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTwoProcessDeviceRing builds ipcbench and runs it with real worker
// processes (2 and 3) on the CPU twin of CUDA IPC (-device file: the
// "device memory" is shared files each process maps): the handshake over
// gRPC with shared memory, the device ring reading the neighbour's
// mapping, and the check that host and device paths give the same bits on
// every rank (Sum and Mean, the small and the bandwidth path). The test
// fails when the summary does not say bit-identical yes, or the device
// ring was not attached.
func TestTwoProcessDeviceRing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs worker processes")
	}
	bin := filepath.Join(t.TempDir(), "ipcbench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	summary := regexp.MustCompile(`(?m)^gpu-ipc: device ring busbw [0-9.]+ GB/s, host path [0-9.]+ GB/s, ratio [0-9.]+ x \(n=(\d), 0\.3 MB, file device.*\); bit-identical yes$`)
	for _, world := range []string{"2", "3"} {
		out, err := exec.Command(bin, "-device", "file", "-world", world, "-sizes", "7,70001", "-rounds", "1", "-iters", "2").CombinedOutput()
		if err != nil {
			t.Fatalf("world %s: %v\n%s", world, err, out)
		}
		m := summary.FindSubmatch(out)
		if m == nil || string(m[1]) != world {
			t.Fatalf("world %s: no matching summary line in\n%s", world, out)
		}
		if strings.Count(string(out), "device ring attached") != 2 || strings.Contains(string(out), "IDENT 280004 0 false") {
			t.Fatalf("world %s: device ring not attached for both sizes, or results differ:\n%s", world, out)
		}
	}
}

package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestTwoProcessDeviceRing builds ipcbench and runs it with real worker
// processes (2 and 3) on the CPU twin of CUDA IPC (-device file: the
// "device memory" is shared files each process maps): the handshake over
// gRPC with shared memory, the device ring reading the neighbour's
// mapping, and the check that host and device paths give the same bits on
// every rank (Sum and Mean, the small and the bandwidth path). It runs
// again with -no-peer, each rank standing for a GPU without peer access
// to the others' (the neighbour's memory opened copy-only: the ring pulls
// every segment into local memory first). The test fails when the summary
// does not say bit-identical yes, or the device ring was not attached
// (in the way asked for).
func TestTwoProcessDeviceRing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs worker processes")
	}
	bin := filepath.Join(t.TempDir(), "ipcbench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	summary := regexp.MustCompile(`(?m)^gpu-ipc: device ring busbw [0-9.]+ GB/s, host path [0-9.]+ GB/s, ratio [0-9.]+ x \(n=(\d), 0\.3 MB, file device.*\); bit-identical yes$`)
	for _, tc := range []struct {
		world  string
		noPeer bool
		link   string // how rank 0 reaches its left neighbour
	}{
		{"2", false, "(file, peer access (same device shared files (CPU dry run)))"},
		{"3", false, "(file, peer access (same device shared files (CPU dry run)))"},
		{"2", true, "(file, copies through the device: no peer access between shared files of rank 0 (CPU dry run) and shared files of rank 1 (CPU dry run))"},
		{"3", true, "(file, copies through the device: no peer access between shared files of rank 0 (CPU dry run) and shared files of rank 2 (CPU dry run))"},
	} {
		world := tc.world
		out, err := exec.Command(bin, "-device", "file", "-world", world, "-sizes", "7,70001", "-rounds", "1", "-iters", "2",
			"-no-peer="+strconv.FormatBool(tc.noPeer)).CombinedOutput()
		if err != nil {
			t.Fatalf("world %s no-peer %v: %v\n%s", world, tc.noPeer, err, out)
		}
		m := summary.FindSubmatch(out)
		if m == nil || string(m[1]) != world {
			t.Fatalf("world %s no-peer %v: no matching summary line in\n%s", world, tc.noPeer, out)
		}
		if strings.Count(string(out), "device ring attached "+tc.link) != 2 || strings.Contains(string(out), "IDENT 280004 0 false") {
			t.Fatalf("world %s no-peer %v: device ring not attached with %s for both sizes, or results differ:\n%s", world, tc.noPeer, tc.link, out)
		}
	}
}

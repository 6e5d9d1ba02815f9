package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMachineUnwritableFinalModelStops: when rank 0 cannot write the final
// model (a full disk, a read-only or broken output directory), it stops
// with an error that a restart would meet again (IsInputError: the
// coordinator stops the job with it, a supervisor does not restart the
// worker), naming the file and what to do. Before 2026-12-06 it exited
// with status 1: restarted, every worker trained again from the newest
// checkpoint and failed the same way, until --restart-limit (17 s and 11
// worker exits for a tiny job; forever under a cluster's scheduler).
func TestMachineUnwritableFinalModelStops(t *testing.T) {
	h := newHarness(t, testJob(t, 1))
	path := filepath.Join(h.spec.OutputDir, ModelFile)
	// Something the model cannot replace, for root too.
	if err := os.MkdirAll(filepath.Join(path, "in-the-way"), 0o755); err != nil {
		t.Fatal(err)
	}
	w0, _ := h.start("w0"), h.start("w1")
	h.publish("w0", "w1")
	err := w0.wait(t)
	if err == nil {
		t.Fatal("rank 0 ended without error though the final model could not be written")
	}
	if !IsInputError(err) {
		t.Errorf("error not one that stops the job (a restart would fail the same way): %v", err)
	}
	for _, want := range []string{path, "start the coordinator again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if w0.step != h.totalSteps() {
		t.Errorf("rank 0 stopped at step %d, want the end (%d)", w0.step, h.totalSteps())
	}
}

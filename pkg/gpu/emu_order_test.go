package gpu

import (
	"testing"
)

// emuReverse makes the emulator run the threads of every shared-memory
// block last to first in each phase between barriers, until the test
// ends.
func emuReverse(t *testing.T) {
	l, err := loadEmu()
	if err != nil {
		t.Skip(err)
	}
	emuLaunchMu.Lock()
	l.order(1)
	emuLaunchMu.Unlock()
	t.Cleanup(func() {
		emuLaunchMu.Lock()
		l.order(0)
		emuLaunchMu.Unlock()
	})
}

// TestEmuBarriersOrderFree: a missing or misplaced __syncthreads lets a
// thread read shared memory before (or after) another thread writes it,
// which the emulator's fixed thread order would hide; running each phase's
// threads last to first instead must change nothing. Training steps with
// an evaluation go through every kernel that uses shared memory (BN
// statistics fp32 and resident bf16, their finish, the loss, the
// non-finite counts).
func TestEmuBarriersOrderFree(t *testing.T) {
	for _, prec := range []string{PrecisionFP32, PrecisionBF16} {
		t.Run(prec, func(t *testing.T) {
			spec := tinySpec()
			spec.Precision = prec
			first := freshDevice(t, prec)
			if first.info.Arch != "host" {
				t.Skip("the thread order is the emulator's")
			}
			fwd := trainSteps(t, first, spec, 3, nil)
			emuReverse(t)
			rev := trainSteps(t, freshDevice(t, prec), spec, 3, nil)
			sameSteps(t, "threads last to first", fwd, rev)
		})
	}
}

package worker

import (
	"slices"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
)

// TestMachineCheckpointAccuracyIsItsOwn: a checkpoint carries a test
// accuracy (and loss) only when its own weights were evaluated, at an
// epoch end. A checkpoint in the middle of an epoch holds weights trained
// past that evaluation: labelled with it, it looked as good as the
// epoch-end state, retention kept it as "the best" (the newest of equal
// accuracies) and deleted the epoch-end checkpoint that had been
// evaluated (before 2026-12-06).
func TestMachineCheckpointAccuracyIsItsOwn(t *testing.T) {
	// Runs are deterministic: the first keeps every checkpoint and finds
	// the best evaluated one; the second, keeping 1, must keep that one.
	best, bestAcc := int64(-1), -1.0
	for _, keep := range []int{100, 1} {
		spec := testJob(t, 3) // 4 steps an epoch, a checkpoint every 2
		spec.Checkpoint.Keep = keep
		h := newHarness(t, spec)
		disk, err := checkpoint.NewStore(t.TempDir(), keep)
		if err != nil {
			t.Fatal(err)
		}
		h.disk = disk
		w0, w1 := h.start("w0"), h.start("w1")
		h.publish("w0", "w1")
		h.finishes(w0, w1)
		steps, err := disk.Steps()
		if err != nil {
			t.Fatal(err)
		}
		if keep > len(steps) && len(steps) != int(h.totalSteps()/2)+1 {
			t.Fatalf("keep %d: checkpoints of steps %v, want every second step", keep, steps)
		}
		for _, st := range steps {
			l, err := disk.Load(st)
			if err != nil {
				t.Fatal(err)
			}
			m := l.Meta
			if keep == 100 && m.Cursor == 0 && m.Accuracy != nil && *m.Accuracy > bestAcc {
				best, bestAcc = st, *m.Accuracy
			}
			epochEnd := m.Cursor == 0 && st > 0
			switch {
			case epochEnd && (m.Accuracy == nil || m.Loss == nil):
				t.Errorf("keep %d: epoch-end checkpoint of step %d has no accuracy or loss", keep, st)
			case !epochEnd && (m.Accuracy != nil || m.Loss != nil):
				t.Errorf("keep %d: checkpoint of step %d (epoch %d, cursor %d) was not evaluated but says accuracy %v",
					keep, st, m.Epoch, m.Cursor, deref(m.Accuracy))
			}
		}
		if keep == 1 {
			// The newest, the best evaluated one, and the one before the
			// newest: the committed step while the newest was written,
			// which retention protects.
			last := h.totalSteps()
			if !slices.Contains(steps, best) || !slices.Contains(steps, last) {
				t.Errorf("keep 1: checkpoints kept %v, want the newest (%d) and the best evaluated one (step %d, accuracy %v)", steps, last, best, bestAcc)
			}
			for _, st := range steps {
				if st != last && st != best && st != last-2 {
					t.Errorf("keep 1: checkpoint of step %d kept (all: %v; best evaluated: step %d)", st, steps, best)
				}
			}
		}
		t.Logf("keep %d: checkpoints kept %v", keep, steps)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

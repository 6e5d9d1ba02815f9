package coordinator

import (
	"errors"
	"testing"
)

// The job's latest checkpoint is a state of the current plan, or the
// committed state itself; the record of an abandoned plan's state is
// refused as stale and changes nothing.
func TestRecordCheckpointRefusesAbandonedPlans(t *testing.T) {
	s := JobState{Status: StatusRunning, Generation: 4, Committed: Committed{Step: 5, Generation: 3}}
	record := func(s JobState, gen uint64, step int64) (JobState, error) {
		return apply(s, Command{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{WorkerID: "w0", Generation: gen,
			Ref: CheckpointRef{Step: step, Key: "k"}}})
	}
	for _, tc := range []struct {
		gen  uint64
		step int64
		ok   bool
	}{
		{3, 10, false}, // generation 3 was replaced and step 10 was never committed
		{2, 5, false},  // the committed step, but another generation's state
		{3, 5, true},   // the committed state, recorded after the plan moved on
		{4, 10, true},  // the current plan
		{0, 15, true},  // generation unknown (an older worker)
	} {
		n, err := record(s, tc.gen, tc.step)
		if tc.ok != (err == nil) {
			t.Fatalf("generation %d step %d: err %v, want accepted %v", tc.gen, tc.step, err, tc.ok)
		}
		if err != nil {
			if !errors.Is(err, ErrStaleGeneration) {
				t.Fatalf("generation %d step %d: %v, want ErrStaleGeneration", tc.gen, tc.step, err)
			}
			if n.Checkpoint != s.Checkpoint {
				t.Fatalf("refused record changed the latest checkpoint to %+v", n.Checkpoint)
			}
			continue
		}
		if n.Checkpoint == nil || n.Checkpoint.Step != max(tc.step, stepOf(s.Checkpoint)) {
			t.Fatalf("generation %d step %d: latest %+v", tc.gen, tc.step, n.Checkpoint)
		}
		s = n
	}
}

func stepOf(r *CheckpointRef) int64 {
	if r == nil {
		return -1
	}
	return r.Step
}

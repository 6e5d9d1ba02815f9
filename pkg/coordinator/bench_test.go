package coordinator

import (
	"errors"
	"testing"
)

// TestBenchRoundSetsThePlanAsideAndGivesItBack: a round takes the planned
// workers first (then standbys), publishes its own plan as a generation,
// leaves the job's plan, status and commit alone, and its end (or a
// failure in it) gives the job's plan back in a newer generation with
// nobody excluded.
func TestBenchRoundSetsThePlanAsideAndGivesItBack(t *testing.T) {
	clear(joinRev)
	s := initialState()
	s = mustApply(t, s, spec(1, 2))
	s = mustApply(t, s, members("a", "b", "c")) // a, b planned; c a standby
	if s.Status != StatusRunning || planIDs(s) != "a,b" {
		t.Fatalf("status %s plan %s", s.Status, planIDs(s))
	}
	s = mustApply(t, s, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "a", Generation: s.Generation, Step: 7}})
	job := s.Clone()

	if _, err := apply(s, Command{Op: opBench, Bench: &BenchCommand{Workers: 4, Spec: []byte("{}"), Steps: 3}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("4 of 3 live workers: %v", err)
	}
	s = mustApply(t, s, Command{Op: opBench, Bench: &BenchCommand{Workers: 3, Spec: []byte(`{"b":1}`), Steps: 3}})
	if s.Bench == nil || s.Generation != job.Generation+1 || s.Bench.ID != s.Generation {
		t.Fatalf("bench %+v, generation %d (job's %d)", s.Bench, s.Generation, job.Generation)
	}
	if ids := idsOf(s.Bench.Members); ids != "a,b,c" {
		t.Fatalf("round members %s, want the planned a,b then the standby c", ids)
	}
	if planIDs(s) != "a,b" || s.Status != StatusRunning || s.Committed.Step != 7 {
		t.Fatalf("the job's state changed: plan %s status %s committed %d", planIDs(s), s.Status, s.Committed.Step)
	}
	p := PlanProto(s, "c")
	if p.GetBench().GetId() != s.Bench.ID || p.GetYourRank() != 2 || len(p.GetMembers()) != 3 || p.GetMaxWorkers() != 3 || string(p.GetBench().GetSpec()) != `{"b":1}` {
		t.Fatalf("c's plan %v", p)
	}
	if _, err := apply(s, Command{Op: opBench, Bench: &BenchCommand{Workers: 1, Spec: []byte("{}"), Steps: 3}}); !errors.Is(err, ErrBenchBusy) {
		t.Fatalf("a second round: %v", err)
	}
	// A commit of the job's generation is stale during the round.
	if _, err := apply(s, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "a", Generation: job.Generation, Step: 8}}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("commit during a round: %v", err)
	}
	// Ending another round changes nothing; ending this one gives the plan back.
	if n := mustApply(t, s, Command{Op: opBench, Bench: &BenchCommand{End: true, ID: s.Bench.ID + 5}}); n.Bench == nil || n.Generation != s.Generation {
		t.Fatalf("ending another round: %+v", n.Bench)
	}
	e := mustApply(t, s, Command{Op: opBench, Bench: &BenchCommand{End: true, ID: s.Bench.ID}})
	if e.Bench != nil || e.Generation <= s.Generation || planIDs(e) != "a,b" || PlanProto(e, "c").GetYourRank() != -1 || PlanProto(e, "a").GetBench() != nil {
		t.Fatalf("after the round: bench %+v generation %d plan %s", e.Bench, e.Generation, planIDs(e))
	}

	// A failure in a round ends it, excluding nobody.
	s = mustApply(t, e, Command{Op: opBench, Bench: &BenchCommand{Workers: 2, Spec: []byte("{}"), Steps: 3}})
	f := mustApply(t, s, Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "a", Generation: s.Generation, Reason: "ring broke", SuspectID: "b"}})
	if f.Bench != nil || len(f.Excluded) != 0 || planIDs(f) != "a,b" || f.Generation <= s.Generation || f.LastFailure == nil {
		t.Fatalf("after a failed round: bench %+v excluded %v plan %s", f.Bench, f.Excluded, planIDs(f))
	}

	// No round on a finished job.
	d := mustApply(t, f, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "a", Generation: f.Generation, Step: 9, Done: true}})
	if _, err := apply(d, Command{Op: opBench, Bench: &BenchCommand{Workers: 1, Spec: []byte("{}"), Steps: 3}}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("a round on a done job: %v", err)
	}
}

func idsOf(ws []Worker) string {
	s := ""
	for i, w := range ws {
		if i > 0 {
			s += ","
		}
		s += w.ID
	}
	return s
}

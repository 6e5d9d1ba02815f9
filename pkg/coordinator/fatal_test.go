package coordinator

import (
	"strings"
	"testing"
)

// A fatal report (an input error that would repeat) stops the job whatever
// its generation: no new plan follows, commits are refused, membership
// changes do not re-plan, and only a new spec (a coordinator started
// again) leaves the failed status.
func TestFatalFailureStopsTheJobInsteadOfReplanning(t *testing.T) {
	clear(joinRev)
	s := initialState()
	s = mustApply(t, s, spec(1, 4))
	s = mustApply(t, s, members("a", "b"))
	gen := s.Generation
	reason := "nn: bad label: label 6 of sample 0 outside [0,5)"
	s = mustApply(t, s, Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "b", Generation: gen - 1, Reason: reason, Fatal: true}})
	if s.Status != StatusFailed || s.Generation != gen+1 {
		t.Fatalf("after a fatal report: status %s generation %d (was %d)", s.Status, s.Generation, gen)
	}
	if s.LastFailure == nil || s.LastFailure.String() != "worker b: "+reason {
		t.Fatalf("failure %+v", s.LastFailure)
	}
	p := PlanProto(s, "a")
	if p.GetState().String() != "JOB_STATE_FAILED" || !strings.Contains(p.GetFailure(), "bad label") {
		t.Fatalf("plan says %s %q", p.GetState(), p.GetFailure())
	}
	failed := s.Generation
	for _, cmd := range []Command{
		members("a", "b", "c"),
		{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "a", Generation: failed, Reason: "ring broke"}},
	} {
		s = mustApply(t, s, cmd)
		if s.Status != StatusFailed || s.Generation != failed {
			t.Fatalf("%s re-planned a failed job: status %s generation %d", cmd.Op, s.Status, s.Generation)
		}
	}
	if _, err := apply(s, Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "a", Generation: failed, Step: 1}}); err == nil {
		t.Fatal("a commit was accepted by a failed job")
	}
	s = mustApply(t, s, spec(1, 4))
	if s.Status != StatusRunning || planIDs(s) != "a,b,c" {
		t.Fatalf("a new spec did not retry the job: status %s plan %s", s.Status, planIDs(s))
	}
}

func TestLongFailureReasonsAreCut(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes
	got := truncate(long, maxReason)
	if len(got) > maxReason+40 || !strings.HasSuffix(got, "bytes more)") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("len %d, ends %q", len(got), got[len(got)-30:])
	}
	if truncate("short", maxReason) != "short" {
		t.Fatal("a short reason changed")
	}
}

// A failed job retried by a new spec is always a new generation, also when
// its plan and status come out as they were (no live workers: waiting): a
// worker lingering on the failure watches for a newer generation, and
// would otherwise never learn of the retry (seen in e2e TestLinger).
func TestRetryOfAFailedJobIsANewGeneration(t *testing.T) {
	clear(joinRev)
	s := initialState()
	s = mustApply(t, s, spec(1, 4))
	if s.Status != StatusWaiting {
		t.Fatalf("no workers: status %s", s.Status)
	}
	s = mustApply(t, s, Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "a", Generation: s.Generation, Reason: "bad input", Fatal: true}})
	failed := s.Generation
	s = mustApply(t, s, spec(1, 4))
	if s.Status != StatusWaiting || s.Generation <= failed {
		t.Fatalf("retried: status %s generation %d, want waiting after generation %d", s.Status, s.Generation, failed)
	}
}

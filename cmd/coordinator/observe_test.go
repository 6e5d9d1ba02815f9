package main

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/observe"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

func planOf(ids ...string) []coordinator.Worker {
	ws := make([]coordinator.Worker, len(ids))
	for i, id := range ids {
		ws[i] = coordinator.Worker{ID: id, HostID: "h", JoinRevision: int64(i + 1)}
	}
	return ws
}

// TestPlanReasons: each new generation is explained (join, failure with
// its suspect, leave, done), counted by reason, and a failure after steps
// past the committed one is a rollback.
func TestPlanReasons(t *testing.T) {
	o := newObserver(zap.NewNop(), nil, job.Default(), 10, nil)
	s0 := coordinator.JobState{Generation: 1, Status: coordinator.StatusRunning, Plan: planOf("w0"), Ran: true}
	s1 := s0
	s1.Generation, s1.Plan = 2, planOf("w0", "w1")
	o.onPlan(s0, s1)
	o.lastStep = 57 // rank 0 reported step 57; the last commit was step 50
	s2 := s1
	s2.Generation, s2.Plan = 3, planOf("w0")
	s2.Committed.Step = 50
	s2.LastFailure = &coordinator.Failure{WorkerID: "w0", Generation: 2, Reason: "link closed", SuspectID: "w1"}
	o.onPlan(s1, s2)
	s3 := s2
	s3.Generation, s3.Plan = 4, planOf("w0", "w1")
	o.onPlan(s2, s3)
	s4 := s3
	s4.Generation, s4.Plan = 5, planOf("w1")
	o.onPlan(s3, s4)
	s5 := s4
	s5.Generation, s5.Status = 6, coordinator.StatusDone
	o.onPlan(s4, s5)

	for reason, want := range map[string]float64{observe.ReasonJoin: 2, observe.ReasonFailure: 1, observe.ReasonLeave: 1, observe.ReasonDone: 1} {
		if got := testutil.ToFloat64(o.m.RingRebuilds.WithLabelValues(reason)); got != want {
			t.Errorf("rebuilds{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if f, r := testutil.ToFloat64(o.m.Failures), testutil.ToFloat64(o.m.Rollbacks); f != 1 || r != 1 {
		t.Errorf("failures %v rollbacks %v, want 1 and 1", f, r)
	}
	var kinds []string
	var text strings.Builder
	for _, e := range o.board.Snapshot(0).Events {
		kinds = append(kinds, e.Kind)
		text.WriteString(e.Text + "\n")
	}
	if got, want := strings.Join(kinds, ","), "plan,failure,plan,rollback,plan,plan,done"; got != want {
		t.Fatalf("events %s, want %s\n%s", got, want, text.String())
	}
	for _, want := range []string{"[w1] joined", "suspect w1", "rolled back to committed step 50 (from step 57)", "[w0] left"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("timeline lacks %q:\n%s", want, text.String())
		}
	}
}

// A job waiting for --min-workers says how many are live of how many it
// needs; one waiting for its start quorum says that instead.
func TestPlanSaysWhatTheJobWaitsFor(t *testing.T) {
	o := newObserver(zap.NewNop(), nil, job.Default(), 10, nil)
	s0 := coordinator.JobState{Generation: 0, Status: coordinator.StatusWaiting, MinWorkers: 2}
	s1 := s0
	s1.Generation, s1.Plan, s1.Live = 1, planOf("wa"), planOf("wa")
	o.onPlan(s0, s1)
	s2 := s1
	s2.Generation, s2.Plan, s2.Live, s2.StartWorkers = 2, planOf("wa", "wb"), planOf("wa", "wb"), 3
	o.onPlan(s1, s2)
	ev := o.board.Snapshot(0).Events
	if len(ev) != 2 || !strings.Contains(ev[0].Text, "1 of the 2 workers it needs are live (--min-workers)") ||
		!strings.Contains(ev[1].Text, "the job starts once 3 workers are live") {
		t.Fatalf("events %+v", ev)
	}
}

// TestStalledWorker: a planned worker silent for longer than the job's
// deadline shows as stalled, and the member counts follow.
func TestStalledWorker(t *testing.T) {
	o := newObserver(zap.NewNop(), nil, job.Default(), 10, nil) // deadline 10 s
	st := coordinator.JobState{Generation: 1, Status: coordinator.StatusRunning, Plan: planOf("w0", "w1"), Ran: true}
	now := time.Now()
	o.board.UpdateWorker("w0", func(w *observe.WorkerView) { w.Rank, w.State, w.LastSeen = 0, observe.StateTraining, now })
	o.board.UpdateWorker("w1", func(w *observe.WorkerView) {
		w.Rank, w.State, w.LastSeen = 1, observe.StateTraining, now.Add(-11*time.Second)
	})
	o.board.UpdateWorker("w2", func(w *observe.WorkerView) { w.State = observe.StateGone })
	o.refresh(st)
	states := map[string]string{}
	for _, w := range o.board.Workers() {
		states[w.ID] = w.State
	}
	if states["w0"] != observe.StateTraining || states["w1"] != observe.StateStalled || states["w2"] != observe.StateGone {
		t.Fatalf("states %v", states)
	}
	for state, want := range map[string]float64{observe.StateTraining: 1, observe.StateStalled: 1, observe.StateGone: 1, observe.StateJoining: 0} {
		if got := testutil.ToFloat64(o.m.Members.WithLabelValues(state)); got != want {
			t.Errorf("members{state=%s} = %v, want %v", state, got, want)
		}
	}
}

// A train report fills its worker's row: step, images/s, the step's
// phases in milliseconds and a GPU worker's device memory in GiB.
func TestTrainRow(t *testing.T) {
	var w observe.WorkerView
	trainRow(&w, &controlpb.MetricsReport{Step: 7, ImagesPerSec: 5000, DeviceMemoryBytes: 3 << 29, DeviceMemoryTotalBytes: 80 << 30,
		Phases: &controlpb.StepPhases{StepSeconds: 0.1, DataWaitSeconds: 0.001, ComputeSeconds: 0.08, ExposedAllreduceSeconds: 0.01,
			OptimizerSeconds: 0.009, BusbwBytesPerSecond: 2e9, HiddenFraction: 0.5}})
	want := observe.WorkerView{Step: 7, ImagesPerSec: 5000, DeviceMemGiB: 1.5, DeviceTotalGiB: 80, StepMS: 100, DataMS: 1, ComputeMS: 80,
		ExposedMS: 10, OptimizerMS: 9, BusbwGBs: 2, Hidden: 0.5}
	if w != want {
		t.Fatalf("row %+v\nwant %+v", w, want)
	}
	trainRow(&w, &controlpb.MetricsReport{Step: 8}) // a CPU worker's report, no phases
	if w.DeviceMemGiB != 0 || w.DeviceTotalGiB != 0 || w.Step != 8 {
		t.Fatalf("row after a CPU report %+v", w)
	}
}

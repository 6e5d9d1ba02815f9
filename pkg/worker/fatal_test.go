package worker

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

func TestInputErrorsAreTold(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("worker: step 3 loss: %w: label 6 outside [0,5)", nn.ErrLabel),
		fmt.Errorf("data: sample 4: %w: x.png: unexpected EOF", data.ErrCorrupt),
		fmt.Errorf("worker: initial weights w: %w", nn.ErrSafetensors),
		fmt.Errorf("state of step 10: %w", fmt.Errorf("%w usable: %w", checkpoint.ErrNotFound, checkpoint.ErrCorrupt)),
		fmt.Errorf("%w: deadline", job.ErrInvalid),
		fmt.Errorf("%w: loss", nn.ErrNonFinite),
	} {
		if !IsInputError(err) {
			t.Errorf("not an input error: %v", err)
		}
	}
	for _, err := range []error{
		nil,
		errors.New("allreduce: link closed"),
		fmt.Errorf("%w: etcd", ErrUnreachable),
		fmt.Errorf("state of step 10: %w in dir", checkpoint.ErrNotFound), // none written yet: not a damaged input
	} {
		if IsInputError(err) {
			t.Errorf("an input error: %v", err)
		}
	}
}

// TestMachineBadLabelStopsInsteadOfRecovering: a label outside the
// model's classes fails the step; the machine ends with that error (an
// input error) instead of reporting a broken ring and waiting for a plan
// that would fail the same way (issue 12, "Why" 8).
func TestMachineBadLabelStopsInsteadOfRecovering(t *testing.T) {
	spec := testJob(t, 1)
	spec.Model.Classes = 5 // the synthetic set has 10
	h := newHarness(t, spec)
	w0 := h.start("w0")
	h.publish("w0")
	err := w0.wait(t)
	if !errors.Is(err, nn.ErrLabel) || !IsInputError(err) {
		t.Fatalf("run ended with %v, want a bad label", err)
	}
	if tr := w0.transitions(); slices.Contains(tr, "training>recovering") {
		t.Fatalf("transitions %v", tr)
	}
	if s := h.ctrl.Snapshot(); len(s.Failures) != 0 {
		t.Fatalf("a ring failure was reported for a bad label: %v", s.Failures)
	}
}

// TestMachineStopsOnAFailedJob: a plan saying the job failed (another
// worker's input error) ends the machine with ErrJobFailed.
func TestMachineStopsOnAFailedJob(t *testing.T) {
	h := newHarness(t, testJob(t, 50))
	w0 := h.start("w0")
	h.publish("w0")
	h.await("a step", func(s MemControlState) bool { return len(s.Metrics) > 0 })
	h.ctrl.mu.Lock()
	h.ctrl.s.State = controlpb.JobState_JOB_STATE_FAILED
	h.ctrl.s.Generation++
	h.ctrl.changedLocked()
	h.ctrl.mu.Unlock()
	if err := w0.wait(t); !errors.Is(err, ErrJobFailed) || !IsInputError(err) {
		t.Fatalf("run ended with %v, want ErrJobFailed", err)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
	"github.com/ringtrain/ringtrain/pkg/report"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// stepLoss is the loss reported for a step in these tests: every step
// differs, so a mean over the wrong steps shows.
func stepLoss(step int64) float64 { return 3 - 0.1*float64(step) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func train(p *progress, step, epoch int64) {
	p.onMetrics(&controlpb.MetricsReport{Rank: 0, Step: step, Epoch: epoch, Phase: "train", Loss: stepLoss(step),
		Accuracy: 0.01 * float64(step), Samples: 64, ImagesPerSec: 100, Generation: 1,
		UnixNano: t0.Add(time.Duration(step) * time.Second).UnixNano()})
}

func eval(p *progress, step, epoch int64) {
	p.onMetrics(&controlpb.MetricsReport{Rank: 0, Step: step, Epoch: epoch, Phase: "eval", Loss: 1, Accuracy: 0.5, Samples: 100,
		UnixNano: t0.Add(time.Duration(step)*time.Second + 500*time.Millisecond).UnixNano()})
}

func meanLoss(from, to int64) float64 {
	s := 0.0
	for i := from; i <= to; i++ {
		s += stepLoss(i)
	}
	return s / float64(to-from+1)
}

// firstRun trains epoch 1 (steps 1-4) and half of epoch 2 (5, 6), then
// the process goes away.
func firstRun(t *testing.T, dir string) {
	p := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 4, false)
	p.openSteps()
	for s := int64(1); s <= 4; s++ {
		train(p, s, 0)
	}
	eval(p, 4, 0)
	train(p, 5, 1)
	train(p, 6, 1)
	p.finish()
}

// TestResumedEpochCoversWholeEpoch: a coordinator restarted with its state
// (committed step 5: steps after it are trained again) reports epoch 2's
// train loss over all of epoch 2's steps, not only those after the resume.
func TestResumedEpochCoversWholeEpoch(t *testing.T) {
	dir := t.TempDir()
	firstRun(t, dir)
	p := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 4, false)
	p.openSteps()
	p.resume(5) // what followLeadership does with committed step 5
	for s := int64(6); s <= 8; s++ {
		train(p, s, 1)
	}
	eval(p, 8, 1)
	p.finish()
	h, err := report.ReadHistory(filepath.Join(dir, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Epochs) != 2 {
		t.Fatalf("epochs %+v", h.Epochs)
	}
	if got, want := h.Epochs[1].TrainLoss, meanLoss(5, 8); math.Abs(got-want) > 1e-12 {
		t.Fatalf("epoch 2 train loss %v, want %v (steps 5-8; only the steps after the resume: %v)", got, want, meanLoss(6, 8))
	}
	if got, want := h.Epochs[0].TrainLoss, meanLoss(1, 4); math.Abs(got-want) > 1e-12 {
		t.Fatalf("epoch 1 train loss %v, want %v", got, want)
	}
	if s := h.Epochs[1].Seconds; math.Abs(s-3.5) > 1e-9 {
		t.Errorf("epoch 2 took %v s by the workers' clocks (end of step 5 to its evaluation), want 3.5", s)
	}
}

// TestStaleReplicaKeepsLongerHistory: a replica that led for the first
// epoch only and finishes after the leader that wrote two epochs leaves
// the two epochs in place.
func TestStaleReplicaKeepsLongerHistory(t *testing.T) {
	dir := t.TempDir()
	stale := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 4, false)
	for s := int64(1); s <= 4; s++ {
		train(stale, s, 0)
	}
	eval(stale, 4, 0)
	leader := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 4, false)
	for s := int64(1); s <= 8; s++ {
		train(leader, s, (s-1)/4)
		if s%4 == 0 {
			eval(leader, s, (s-1)/4)
		}
	}
	if err := leader.finish(); err != nil {
		t.Fatal(err)
	}
	if err := stale.finish(); err != nil {
		t.Fatal(err)
	}
	h, err := report.ReadHistory(filepath.Join(dir, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Epochs) != 2 {
		t.Fatalf("history.json has %d epochs after the stale replica finished, want the leader's 2", len(h.Epochs))
	}
}

// TestHistoryRebuiltWithoutState: the state directory and history.json are
// gone (raft starts at step 0 while the workers resume from a checkpoint):
// the first report at step 6 makes the record of epoch 1 come back from
// steps.jsonl and the epoch-end checkpoint's meta.json.
func TestHistoryRebuiltWithoutState(t *testing.T) {
	dir := t.TempDir()
	firstRun(t, dir)
	for _, f := range []string{report.JSONFile, report.CSVFile} {
		os.Remove(filepath.Join(dir, f))
	}
	acc, loss := 0.42, 1.7
	stepDir := manifest.Dir(filepath.Join(dir, "checkpoints"), 4)
	os.MkdirAll(stepDir, 0o755)
	b, _ := json.Marshal(manifest.Meta{Step: 4, Epoch: 1, Accuracy: &acc, Loss: &loss})
	os.WriteFile(filepath.Join(stepDir, manifest.MetaFile), b, 0o644)

	p := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 4, false)
	p.openSteps()
	for s := int64(6); s <= 8; s++ {
		train(p, s, 1)
	}
	eval(p, 8, 1)
	p.finish()
	h, err := report.ReadHistory(filepath.Join(dir, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Epochs) != 2 || h.Epochs[0].Epoch != 1 {
		t.Fatalf("epochs %+v: epoch 1 lost", h.Epochs)
	}
	e := h.Epochs[0]
	if !e.Rebuilt || math.Abs(e.TrainLoss-meanLoss(1, 4)) > 1e-12 || e.ValAcc != acc || e.ValLoss != loss || e.Steps != 4 {
		t.Fatalf("rebuilt epoch 1: %+v", e)
	}
	if got, want := h.Epochs[1].TrainLoss, meanLoss(5, 8); math.Abs(got-want) > 1e-12 {
		t.Fatalf("epoch 2 train loss %v, want %v", got, want)
	}
	lines := readStepLines(filepath.Join(dir, StepsFile), 100)
	if l := lines[7]; l.Time != t0.Add(7*time.Second).Format(time.RFC3339Nano) || l.Samples != 64 {
		t.Fatalf("steps.jsonl line of step 7 %+v: not the worker's step time", l)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

func TestProgressAggregatesEpochs(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	p := newProgress(&out, zap.NewNop(), dir, 2, true)
	rep := func(rank int32, step, epoch int64, phase string, loss, acc float64, n int64) {
		p.onMetrics(&controlpb.MetricsReport{Rank: rank, Step: step, Epoch: epoch, Phase: phase, Loss: loss, Accuracy: acc, Samples: n, ImagesPerSec: 100})
	}
	rep(0, 1, 0, "train", 2.0, 0.1, 64)
	rep(1, 1, 0, "train", 2.0, 0.1, 64) // other ranks: images/s only
	rep(0, 2, 0, "train", 1.0, 0.3, 32)
	rep(0, 2, 0, "eval", 1.5, 0.25, 100)
	rep(0, 3, 1, "train", 0.5, 0.5, 64)
	rep(0, 4, 1, "train", 0.5, 0.7, 64)
	rep(0, 4, 1, "eval", 0.9, 0.6, 100)
	if err := p.finish(); err != nil {
		t.Fatal(err)
	}
	h := p.history()
	if len(h.Epochs) != 2 {
		t.Fatalf("epochs: %+v", h.Epochs)
	}
	e := h.Epochs[0]
	if math.Abs(e.TrainLoss-(2.0*64+1.0*32)/96) > 1e-12 || math.Abs(e.TrainAcc-(0.1*64+0.3*32)/96) > 1e-12 || e.ValAcc != 0.25 || e.ImagesPerSec != 200 {
		t.Fatalf("epoch 1: %+v", e)
	}
	if h.Epochs[1].TrainAcc != 0.6 || h.Epochs[1].Epoch != 2 {
		t.Fatalf("epoch 2: %+v", h.Epochs[1])
	}
}

func TestStepsFileCarriesPhases(t *testing.T) {
	dir := t.TempDir()
	p := newProgress(&bytes.Buffer{}, zap.NewNop(), dir, 10, false)
	p.openSteps()
	ph := &controlpb.StepPhases{StepSeconds: 0.5, DataWaitSeconds: 0.01, ComputeSeconds: 0.3, ExposedAllreduceSeconds: 0.09,
		OptimizerSeconds: 0.1, AllreduceSeconds: 0.2, HiddenFraction: 0.55, AllreduceBytes: 44_700_000, BusbwBytesPerSecond: 3e8, Buckets: 3, World: 4}
	p.onMetrics(&controlpb.MetricsReport{Rank: 0, Step: 1, Phase: "train", Samples: 8, Phases: ph})
	p.onMetrics(&controlpb.MetricsReport{Rank: 0, Step: 2, Phase: "train", Samples: 8}) // an older worker: no phases
	if err := p.finish(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, StepsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("steps.jsonl: %q", b)
	}
	var l stepLine
	if err := json.Unmarshal(lines[0], &l); err != nil {
		t.Fatal(err)
	}
	if l.Phases == nil || *l.Phases != (phasesLine{Step: 0.5, DataWait: 0.01, Compute: 0.3, Exposed: 0.09, Optimizer: 0.1,
		AllReduce: 0.2, Hidden: 0.55, Bytes: 44_700_000, BusBW: 3e8, Buckets: 3, World: 4}) {
		t.Fatalf("phases in steps.jsonl: %s", lines[0])
	}
	if bytes.Contains(lines[1], []byte("phases")) {
		t.Fatalf("a report without phases wrote some: %s", lines[1])
	}
}

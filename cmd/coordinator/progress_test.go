package main

import (
	"bytes"
	"math"
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

package scale

import (
	"math"
	"testing"
)

// TestModelHandComputed checks the model against a case worked by hand:
// C = 1 s, alpha = 1 ms, beta = 1 MB/s, n = 4, two buckets.
//
//	bucket 0: 1 MB ready at 0.5 s: T = 6 x 1 ms + 1.5 x 1 s = 1.506 s, ends 2.006 s
//	bucket 1: 3 MB ready at 1.0 s: starts 2.006, T = 0.006 + 4.5 = 4.506, ends 6.512
//	exposed = 6.512 - 1 = 5.512; step = 0.1 + 1 + 5.512 + 0.2 = 6.812 s
//	efficiency = 1.3 / 6.812; busbw = 4 MB / 6.012 s x 1.5; hidden = 0.5 / 6.012
func TestModelHandComputed(t *testing.T) {
	m := Model{Buckets: []Bucket{{Bytes: 1e6, Ready: 0.5}, {Bytes: 3e6, Ready: 1}}, Compute: 1, Optimizer: 0.2, DataWait: 0.1,
		Bandwidth: 1e6, Latency: 1e-3, BatchPerWorker: 32}
	p := m.Predict(4)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %.9g, want %.9g", name, got, want)
		}
	}
	near("step", p.StepSeconds, 6.812)
	near("exposed", p.Exposed, 5.512)
	near("allreduce", p.AllReduce, 6.012)
	near("efficiency", p.Efficiency, 1.3/6.812)
	near("busbw", p.BusBW, 4e6/6.012*1.5)
	near("hidden", p.HiddenFraction, 0.5/6.012)
	near("images/s", p.ImagesPerSec, 4*32/6.812)
	// One worker: no communication at all.
	one := m.Predict(1)
	near("step n=1", one.StepSeconds, 1.3)
	near("efficiency n=1", one.Efficiency, 1)
	// Perfect overlap: a fast link hides everything but the last bucket.
	m.Bandwidth, m.Latency = 1e9, 0
	near("fast link step", m.Predict(4).StepSeconds, 1.3+3e6*1.5/1e9)
}

func TestPredictTableUsesLinkRate(t *testing.T) {
	m := Model{Buckets: []Bucket{{Bytes: 100e6, Ready: 1}}, Compute: 0.01, BatchPerWorker: 1}
	rows := PredictTable(m, []int{2}, []float64{8e9, 16e9}, 0.5)
	// 8 Gbit/s at half efficiency: 0.5 GB/s; n=2 moves S once: 0.2 s.
	if len(rows) != 2 || math.Abs(rows[0].AllReduce-0.2) > 1e-12 || math.Abs(rows[1].AllReduce-0.1) > 1e-12 {
		t.Fatalf("rows %+v", rows)
	}
}

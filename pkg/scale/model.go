package scale

import (
	"fmt"

	"github.com/ringtrain/ringtrain/pkg/worker"
)

// Bucket is one all-reduce bucket of a step: its bytes and the fraction of
// the compute time (forward + backward) after which it can start.
type Bucket struct {
	Bytes int64   `json:"bytes"`
	Ready float64 `json:"ready"`
}

// Model is the ring alpha-beta model with bucket overlap. For n workers
// a ring all-reduce of S bytes takes
//
//	T(S, n) = 2(n-1) alpha + 2(n-1)/n x S / beta
//
// (Patarasuk and Yuan; reduce-scatter then all-gather, each n-1 steps of
// S/n bytes per link). Buckets run one after another, each starting when
// it is ready and the previous one is done:
//
//	start_b = max(ready_b x C, end_(b-1)),  end_b = start_b + T(S_b, n)
//
// and the step is data wait + C + max(0, end_last - C) + optimizer.
type Model struct {
	Buckets        []Bucket `json:"buckets"` // launch order
	Compute        float64  `json:"compute_s"`
	Optimizer      float64  `json:"optimizer_s"`
	DataWait       float64  `json:"data_wait_s"`
	Bandwidth      float64  `json:"bandwidth_bytes_per_s"` // beta: payload bytes/s of one link direction
	Latency        float64  `json:"latency_s"`             // alpha: per ring step
	BatchPerWorker int      `json:"batch_per_worker"`
}

// Prediction is the model's answer for one worker count.
type Prediction struct {
	Workers        int     `json:"workers"`
	StepSeconds    float64 `json:"step_s"`
	Exposed        float64 `json:"exposed_allreduce_s"`
	AllReduce      float64 `json:"allreduce_s"`
	BusBW          float64 `json:"busbw_bytes_per_s"`
	ImagesPerSec   float64 `json:"images_per_sec"`
	Efficiency     float64 `json:"efficiency"`
	HiddenFraction float64 `json:"hidden_fraction"`
}

// ModelFromProfile builds the model's buckets from a measured compute
// profile (the real model's bucket plan and readiness).
func ModelFromProfile(p worker.ComputeProfile) []Bucket {
	out := make([]Bucket, len(p.Buckets))
	for b, bi := range p.Buckets {
		out[b] = Bucket{Bytes: 4 * int64(bi.Elements), Ready: p.BucketReady(b)}
	}
	return out
}

// ringTime is T(S, n).
func (m Model) ringTime(bytes int64, n int) float64 {
	if n < 2 {
		return 0
	}
	k := float64(n - 1)
	return 2*k*m.Latency + 2*k/float64(n)*float64(bytes)/m.Bandwidth
}

// Predict returns the model's step for n workers.
func (m Model) Predict(n int) Prediction {
	p := Prediction{Workers: n}
	var end, hidden float64
	var bytes int64
	for _, b := range m.Buckets {
		t := m.ringTime(b.Bytes, n)
		start := max(b.Ready*m.Compute, end)
		end = start + t
		p.AllReduce += t
		bytes += b.Bytes
		hidden += max(0, min(end, m.Compute)-start)
	}
	p.Exposed = max(0, end-m.Compute)
	one := m.DataWait + m.Compute + m.Optimizer
	p.StepSeconds = one + p.Exposed
	if n > 1 && p.AllReduce > 0 {
		p.BusBW = float64(bytes) / p.AllReduce * 2 * float64(n-1) / float64(n)
		p.HiddenFraction = hidden / p.AllReduce
	}
	if p.StepSeconds > 0 {
		p.ImagesPerSec = float64(n*m.BatchPerWorker) / p.StepSeconds
		p.Efficiency = one / p.StepSeconds
	}
	return p
}

// Compare sets each point's prediction (the model with that point's own
// measured optimizer and data-wait times, and its compute time when
// compute is not emulated) and the step-time error; it returns the
// largest absolute error.
func Compare(m Model, pts []Point) float64 {
	worst := 0.0
	for i := range pts {
		mm := m
		mm.Optimizer, mm.DataWait = pts[i].Optimizer, pts[i].DataWait
		if !pts[i].EmulatedCompute {
			mm.Compute = pts[i].Compute
		}
		pr := mm.Predict(pts[i].Workers)
		pr.Efficiency = 0 // relative to the measured one-worker point, below
		pts[i].Predicted = &pr
		pts[i].ModelErrorStep = (pr.StepSeconds - pts[i].StepSeconds) / pts[i].StepSeconds
		worst = max(worst, abs(pts[i].ModelErrorStep))
	}
	var one *Point
	for i := range pts {
		if pts[i].Workers == 1 {
			one = &pts[i]
		}
	}
	if one != nil {
		for i := range pts {
			pts[i].Predicted.Efficiency = pts[i].Predicted.ImagesPerSec / (float64(pts[i].Workers) * one.Predicted.ImagesPerSec)
		}
	}
	return worst
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// PredictRow is one row of a predicted table.
type PredictRow struct {
	LinkBits float64 `json:"link_bits_per_s"`
	Prediction
}

// PredictTable predicts every worker count at every link rate (bits/s),
// with beta = rate x efficiency (the payload share of the wire measured on
// the emulated link; 1 when not measured).
func PredictTable(m Model, workers []int, links []float64, efficiency float64) []PredictRow {
	if efficiency <= 0 {
		efficiency = 1
	}
	var rows []PredictRow
	for _, l := range links {
		mm := m
		mm.Bandwidth = l / 8 * efficiency
		for _, n := range workers {
			rows = append(rows, PredictRow{LinkBits: l, Prediction: mm.Predict(n)})
		}
	}
	return rows
}

// FormatRate writes bits/s as tc would (25gbit, 200mbit).
func FormatRate(bits float64) string {
	switch {
	case bits >= 1e9 && int64(bits)%int64(1e9) == 0:
		return fmt.Sprintf("%dgbit", int64(bits/1e9))
	case bits >= 1e6:
		return fmt.Sprintf("%gmbit", bits/1e6)
	}
	return fmt.Sprintf("%gbit", bits)
}

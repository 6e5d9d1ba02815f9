package observe

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

var benchSample = StepSample{Step: 100, Generation: 1, World: 2, Loss: 1.2, Accuracy: 0.6, Images: 64, Duration: 40 * time.Millisecond,
	Data: time.Millisecond, Compute: 35 * time.Millisecond, Exposed: 2 * time.Millisecond, Optimizer: 2 * time.Millisecond,
	AllReduceBytes: 45 << 20, Comm: 20 * time.Millisecond, Hidden: 18 * time.Millisecond, ImagesPerSec: 1600}

// BenchmarkWorkerObserveStep is what a worker adds to each step.
func BenchmarkWorkerObserveStep(b *testing.B) {
	m := NewWorkerMetrics()
	for i := 0; i < b.N; i++ {
		m.ObserveStep(benchSample)
	}
}

// BenchmarkCoordinatorReport is what the leader adds to each report it
// receives (board rows, the curve's point, the job view, the metrics);
// it runs on the report's gRPC handler, not on a worker.
func BenchmarkCoordinatorReport(b *testing.B) {
	bd, m := NewBoard(), NewCoordinatorMetrics()
	for i := 0; i < b.N; i++ {
		bd.UpdateWorker("w0", func(w *WorkerView) { w.Step, w.ImagesPerSec, w.LastSeen = int64(i), 800, time.Now() })
		bd.AddStep(StepPoint{Step: int64(i), Loss: 1, Accuracy: 0.5})
		bd.UpdateJob(func(j *JobView) { j.Step = int64(i) })
		m.ObserveStep(benchSample, 0)
	}
}

// BenchmarkEventUpdate is one server-sent update of a long job's board
// (sent at most 4 times a second per browser).
func BenchmarkEventUpdate(b *testing.B) {
	bd := NewBoard()
	for i := 0; i < 10000; i++ {
		bd.AddStep(StepPoint{Step: int64(i), Loss: 1, Accuracy: 0.5})
	}
	for i := 0; i < maxEvents; i++ {
		bd.AddEvent("checkpoint", fmt.Sprintf("checkpoint step %d: 44.9 MB, written in 812ms, files present", i))
	}
	for _, id := range []string{"w0", "w1", "w2", "w3"} {
		bd.UpdateWorker(id, func(w *WorkerView) { w.Rank = 0 })
	}
	end := bd.Snapshot(0).StepsEnd
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bd.AddStep(StepPoint{Step: int64(10000 + i)})
		if _, err := json.Marshal(bd.snapshot(end+i, liveEvents)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWorkerScrape is one scrape of a worker's /metrics (Prometheus
// asks every scrape interval, typically 15-30 s).
func BenchmarkWorkerScrape(b *testing.B) {
	m := NewWorkerMetrics()
	m.ObserveStep(benchSample)
	s, err := Start(Options{Addr: "127.0.0.1:0", Registry: m.Registry})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := s.srv.Handler
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

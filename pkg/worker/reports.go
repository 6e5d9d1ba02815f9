package worker

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// report queues metrics for the reporter goroutine, which sends them in
// order without blocking training (when the queue is full, the report is
// dropped: metrics must never slow a step down).
func (m *machine) report(r *controlpb.MetricsReport) {
	m.pending.Add(1)
	select {
	case m.reports <- r:
	default:
		m.pending.Done()
	}
}

// flushReports waits (at most d) until every queued report was sent: the
// final step's figures must reach the coordinator before the job is
// declared done and the coordinator exits.
func (m *machine) flushReports(d time.Duration) {
	done := make(chan struct{})
	go func() { m.pending.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (m *machine) reporter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.reports:
			rctx, cancel := context.WithTimeout(ctx, m.Timing.ReportTimeout)
			if err := m.Control.ReportMetrics(rctx, r); err != nil {
				m.Log.Debug("metrics not reported", zap.Error(err))
			}
			cancel()
			m.pending.Done()
		}
	}
}

// drainReports sends what is still queued (the last epoch's figures).
func (m *machine) drainReports() {
	for {
		select {
		case r := <-m.reports:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = m.Control.ReportMetrics(ctx, r)
			cancel()
			m.pending.Done()
		default:
			return
		}
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// report queues metrics for the reporter goroutine, which sends them in
// order without blocking training (see reportQueue: nothing is dropped);
// the time is the worker's, now (the step's end).
func (m *machine) report(r *controlpb.MetricsReport) {
	if r.UnixNano == 0 {
		r.UnixNano = time.Now().UnixNano()
	}
	m.reports.push(r)
}

// flushReports waits (at most d) until every queued report was sent: the
// final step's figures must reach the coordinator before the job is
// declared done and the coordinator exits.
func (m *machine) flushReports(d time.Duration) { m.reports.wait(d) }

// reporter sends the queued reports until ctx ends, each until it goes
// through (a coordinator failover delays them, it does not lose them).
func (m *machine) reporter(ctx context.Context) {
	m.reports.deliver(ctx, m.sendReport, func(err error) { m.Log.Debug("metrics not reported yet", zap.Error(err)) })
}

// drainReports sends what is still queued (the last epoch's figures),
// for at most FlushTimeout.
// It returns as soon as the queue is empty: delivery stops when wait
// sees nothing left (deliver alone would wait for more reports until the
// timeout, 5 s at every worker's exit).
func (m *machine) drainReports() {
	ctx, cancel := context.WithTimeout(context.Background(), m.Timing.FlushTimeout)
	defer cancel()
	emptied := make(chan struct{})
	go func() {
		defer close(emptied)
		m.reports.wait(m.Timing.FlushTimeout)
		cancel()
	}()
	m.reports.deliver(ctx, m.sendReport, nil)
	cancel()
	<-emptied
}

func (m *machine) sendReport(ctx context.Context, r *controlpb.MetricsReport) error {
	rctx, cancel := context.WithTimeout(ctx, m.Timing.ReportTimeout)
	defer cancel()
	err := m.Control.ReportMetrics(rctx, r)
	if errors.Is(err, control.ErrInvalid) {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	return err
}

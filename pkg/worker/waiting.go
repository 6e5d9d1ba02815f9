package worker

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// waiting waits for a plan newer than the last one taken in which this
// worker has a rank and the job runs (then: syncing), or for the job to be
// done (done). A cancelled ctx is a clean stop.
func (m *machine) waiting(ctx context.Context) (state, error) {
	p, err := m.nextPlan(ctx, m.seen)
	if err != nil {
		return stateDone, nil // cancelled: a clean stop
	}
	m.seen = p.GetGeneration()
	m.Metrics.SetPlan(p.GetGeneration(), int(p.GetYourRank()), len(p.GetMembers()))
	if p.GetState() == controlpb.JobState_JOB_STATE_DONE {
		m.Log.Info("job done")
		return stateDone, nil
	}
	if p.GetState() == controlpb.JobState_JOB_STATE_FAILED {
		return stateDone, jobFailed(p) // a worker's input error stopped the job
	}
	m.plan = p
	if p.GetBench() != nil {
		return stateBenching, nil // a benchmark round (benching.go)
	}
	return stateSyncing, nil
}

// nextPlan waits for a plan newer than generation after in which this
// worker has a rank and the job runs (or the job is done). A worker left
// out of a running plan that has room for it (it was reported as a
// suspect, e.g. after a stall) registers again, which lifts the exclusion.
func (m *machine) nextPlan(ctx context.Context, after uint64) (*controlpb.Plan, error) {
	var outSince time.Time
	for {
		p, changed := m.plans.get()
		if p != nil && p.GetGeneration() > after {
			after = p.GetGeneration()
			m.Log.Info("plan", zap.Uint64("generation", p.GetGeneration()), zap.String("state", p.GetState().String()),
				zap.Int32("rank", p.GetYourRank()), zap.Int("world", len(p.GetMembers())), zap.Int64("committed", p.GetCommitted().GetStep()))
			if p.GetState() == controlpb.JobState_JOB_STATE_DONE || p.GetState() == controlpb.JobState_JOB_STATE_FAILED {
				return p, nil
			}
			if p.GetState() == controlpb.JobState_JOB_STATE_RUNNING && p.GetYourRank() >= 0 {
				return p, nil
			}
			outSince = time.Time{}
			if p.GetYourRank() < 0 && (p.GetMaxWorkers() == 0 || len(p.GetMembers()) < int(p.GetMaxWorkers())) {
				outSince = time.Now()
			}
		}
		var check <-chan time.Time
		if !outSince.IsZero() {
			check = time.After(time.Until(outSince.Add(m.Timing.ExcludedGrace)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-check:
			m.Log.Warn("left out of a plan with room for this worker; registering again")
			select {
			case m.rereg <- struct{}{}:
			default:
			}
			outSince = time.Time{}
		}
	}
}

// watchPlans follows the control plane's plans into m.plans for as long as
// ctx lives: a plan stream that ends (coordinator restarted, leader
// failover, network trouble) is opened again.
func (m *machine) watchPlans(ctx context.Context) {
	pause := m.firstPause()
	for ctx.Err() == nil {
		after := m.plans.generation()
		err := m.Control.WatchPlan(ctx, m.ID, after, func(p *controlpb.Plan) error {
			m.plans.set(p)
			pause = m.firstPause()
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		m.Log.Warn("plan watch ended; reconnecting", zap.Error(err))
		sleepCtx(ctx, pause)
		pause = m.nextPause(pause)
	}
}

// firstPause and nextPause pace a control-plane call that is retried
// until the coordinator answers: Timing.WatchRetry (at least 1 ms, so
// that a call failing at once never spins), doubling up to 20 times it.
func (m *machine) firstPause() time.Duration { return max(m.Timing.WatchRetry, time.Millisecond) }

func (m *machine) nextPause(p time.Duration) time.Duration { return min(2*p, 20*m.firstPause()) }

// cancelOnNewPlan cancels (via cancel) when a plan newer than gen
// arrives; the returned function stops watching.
func (m *machine) cancelOnNewPlan(ctx context.Context, cancel context.CancelFunc, gen uint64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, changed := m.plans.get()
			if p.GetGeneration() > gen {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-changed:
			}
		}
	}()
	return func() { close(stop); <-done }
}

// planBox holds the newest plan seen; changed is closed when it changes.
type planBox struct {
	mu      sync.Mutex // guards p and changed
	p       *controlpb.Plan
	changed chan struct{}
}

func newPlanBox() *planBox { return &planBox{changed: make(chan struct{})} }

// set keeps p when it is newer than the held plan.
func (b *planBox) set(p *controlpb.Plan) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p != nil && p.GetGeneration() <= b.p.GetGeneration() {
		return
	}
	b.p = p
	close(b.changed)
	b.changed = make(chan struct{})
}

// get returns the newest plan (nil before the first) and a channel closed
// when a newer one arrives.
func (b *planBox) get() (*controlpb.Plan, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.p, b.changed
}

func (b *planBox) generation() uint64 {
	p, _ := b.get()
	return p.GetGeneration()
}

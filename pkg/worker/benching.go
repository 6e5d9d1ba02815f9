package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// benching runs a benchmark round (coordinator bench on a cluster; the
// plan's bench field): a trainer of the round's spec, built from fresh
// weights on this worker's backend, runs the round's steps on a ring of the
// round's members, reporting each step (phase "bench", with its
// StepPhases); then the worker holds the ring until the round ends (a
// newer plan) and goes back to waiting. The job's own trainer, its
// committed state and its checkpoints are not touched. A round that fails
// (a spec this worker cannot build, a broken ring) is reported to the
// coordinator, which ends it; the worker goes back to waiting either way:
// a bench never stops a worker.
func (m *machine) benching(ctx context.Context) (state, error) {
	p := m.plan
	bp := p.GetBench()
	if bp.GetId() == m.benchRan {
		return stateWaiting, nil // this round already ran here (a re-issued plan)
	}
	m.benchRan = bp.GetId()
	err := m.benchRound(ctx, p)
	switch {
	case ctx.Err() != nil:
		return stateDone, nil
	case err == nil:
	case m.plans.generation() > p.GetGeneration():
		m.Log.Info("bench round aborted by a newer plan", zap.Uint64("round", bp.GetId()))
		return stateWaiting, nil
	default:
		m.Log.Warn("bench round failed; reporting it", zap.Uint64("round", bp.GetId()), zap.Error(err))
		rctx, cancel := context.WithTimeout(ctx, m.Timing.CallTimeout)
		if _, rerr := m.Control.ReportFailure(rctx, &controlpb.FailureReport{WorkerId: m.ID, Generation: p.GetGeneration(),
			Reason: truncateReason(err.Error())}); rerr != nil {
			m.Log.Warn("bench failure not reported", zap.Error(rerr))
		}
		cancel()
		return stateWaiting, nil
	}
	// Hold the ring until the round ends: a member that closes early could
	// cut a peer's last collective short.
	for {
		np, changed := m.plans.get()
		if np.GetGeneration() > p.GetGeneration() {
			break
		}
		select {
		case <-ctx.Done():
			return stateDone, nil
		case <-changed:
		}
	}
	m.endSession()
	return stateWaiting, nil
}

// benchRound runs the round's steps under plan p; its ring stays open in
// m.sess (closed by the caller).
func (m *machine) benchRound(ctx context.Context, p *controlpb.Plan) error {
	bp := p.GetBench()
	spec, err := job.Unmarshal(bp.GetSpec())
	if err != nil {
		return fmt.Errorf("bench spec: %w", err)
	}
	spec.Device, spec.Threads = m.Spec.Device, m.Spec.Threads // this worker's device, as for the job
	train, _, err := OpenDatasets(ctx, spec)
	if err != nil {
		return fmt.Errorf("bench data: %w", err)
	}
	t, err := NewTrainer(spec, m.t.B, train, nil)
	if err != nil {
		return fmt.Errorf("bench trainer: %w", err)
	}
	// The job's input path.
	t.Prefetch = m.t.Prefetch
	owned := true // freed here until the session owns it
	defer func() {
		if owned {
			t.Close()
		}
	}()
	rank, world := int(p.GetYourRank()), len(p.GetMembers())
	peers := make([]string, world)
	for _, pm := range p.GetMembers() {
		peers[pm.GetRank()] = pm.GetAddress()
	}
	rc := allreduce.DefaultConfig(fmt.Sprintf("bench-%d", bp.GetId()), p.GetGeneration(), rank, world)
	rc.Timeout = time.Duration(spec.DeadlineSec * float64(time.Second))
	octx, cancel := context.WithTimeout(ctx, rc.Timeout+m.Timing.RingSlack)
	stopOnPlan := m.cancelOnNewPlan(octx, cancel, p.GetGeneration())
	ring, err := allreduce.Open(octx, m.Ring, rc, peers)
	stopOnPlan()
	cancel()
	if err != nil {
		return fmt.Errorf("open the bench ring of generation %d: %w", p.GetGeneration(), err)
	}
	s := &session{rank: rank, world: world, ring: ring}
	m.sess = s
	owned = false
	s.closers = append(s.closers, t.Close, func() { ring.Close() }) // the model is freed last
	rctx, rcancel := context.WithCancel(ctx)
	s.ctx = rctx
	s.closers = append(s.closers, rcancel, m.cancelOnNewPlan(rctx, rcancel, p.GetGeneration()))
	if s.red, err = t.NewReducer(ring); err != nil {
		return err
	}
	if s.ld, err = t.Feed(rctx, rank, world); err != nil {
		return err
	}
	s.closers = append(s.closers, func() { s.ld.Close() })
	m.Log.Info("bench round", zap.Uint64("round", bp.GetId()), zap.Int("rank", rank), zap.Int("world", world), zap.Int64("steps", bp.GetSteps()))
	since := time.Now()
	images := 0
	for step := int64(1); step <= bp.GetSteps(); step++ {
		fetch := time.Now()
		b, err := s.ld.Next(rctx)
		dataWait := time.Since(fetch) + s.ld.Waited()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("bench data ran out at step %d of %d", step, bp.GetSteps())
		}
		if err != nil {
			return err
		}
		res, err := t.TrainStep(rctx, b, s.red, world)
		if err != nil {
			return fmt.Errorf("bench step %d: %w", step, err)
		}
		images += res.LocalN
		m.report(&controlpb.MetricsReport{WorkerId: m.ID, Generation: p.GetGeneration(), Rank: int32(rank), Step: step,
			Loss: res.Loss, Accuracy: float64(res.Correct) / float64(max(res.N, 1)), ImagesPerSec: float64(images) / time.Since(since).Seconds(),
			Phase: "bench", Samples: int64(res.N), Phases: stepPhases(res, dataWait, world, spec.EmulateCompute != nil)})
	}
	return nil
}

// truncateReason keeps a failure reason short enough for the plan.
func truncateReason(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max]
	}
	return s
}

package worker

import (
	"context"
	"errors"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// training trains one step under the current plan and reports its
// figures; at the end of an epoch it also evaluates. Then: training again,
// committing when the step is a checkpoint step, finishing when the job's
// length is reached, waiting when a newer plan arrived, recovering when
// the ring failed.
func (m *machine) training(ctx context.Context) (state, error) {
	s, p := m.sess, m.plan
	if m.t.Done() {
		return stateFinishing, nil
	}
	if m.plans.generation() > p.GetGeneration() {
		return stateWaiting, nil // membership changed: re-plan
	}
	fetch := time.Now()
	b, err := s.ld.Next(s.ctx)
	dataWait := time.Since(fetch) + s.ld.Waited() // Waited: while the step before computed
	if errors.Is(err, io.EOF) {
		return stateFinishing, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return stateDone, nil
		}
		if s.ctx.Err() != nil {
			return stateWaiting, nil
		}
		return stateDone, err
	}
	epoch := b.Pos.Epoch
	step := m.t.Step
	m.Samples.assigned(p.GetGeneration(), step, b, s.rank, s.world)
	res, err := m.t.TrainStep(s.ctx, b, s.red, s.world)
	if err != nil {
		m.partial = true // the state may be half-way into the step
		return m.ringFailed(ctx, err)
	}
	m.Samples.done(p.GetGeneration(), step, s.rank)
	s.images += res.LocalN
	now := time.Now()
	ips := float64(s.images) / now.Sub(s.since).Seconds()
	mem := m.deviceMemory()
	m.report(&controlpb.MetricsReport{WorkerId: m.ID, Generation: p.GetGeneration(), Rank: int32(s.rank),
		Step: m.t.Step, Epoch: int64(epoch), Loss: res.Loss, Accuracy: float64(res.Correct) / float64(max(res.N, 1)),
		ImagesPerSec: ips, Phase: "train", Samples: int64(res.N), Phases: stepPhases(res, dataWait, s.world, m.t.Spec.EmulateCompute != nil),
		DeviceMemoryBytes: mem.Live + mem.Cached, DeviceMemoryTotalBytes: mem.Total})
	m.observeStep(res, p.GetGeneration(), epoch, s.world, ips, s.ld.Ready(), dataWait, mem)
	if now.Sub(s.since) > 5*time.Second {
		s.images, s.since = 0, now
	}
	epochEnd := m.t.Pos.Epoch > epoch
	if epochEnd {
		ev, err := m.t.Evaluate(s.ctx, s.ring, s.rank, s.world, allreduce.Tag{Step: uint64(m.t.Step), Bucket: 1 << 24})
		if err != nil {
			return m.ringFailed(ctx, err)
		}
		acc, loss := ev.Accuracy, ev.Loss
		m.lastAcc, m.lastLoss, m.lastEvalStep = &acc, &loss, m.t.Step
		m.Metrics.ObserveEval(ev.Loss, ev.Accuracy)
		m.report(&controlpb.MetricsReport{WorkerId: m.ID, Generation: p.GetGeneration(), Rank: int32(s.rank),
			Step: m.t.Step, Epoch: int64(epoch), Loss: ev.Loss, Accuracy: ev.Accuracy, Phase: "eval", Samples: int64(ev.N)})
		if s.rank == 0 {
			m.Log.Info("epoch done", zap.Int("epoch", epoch+1), zap.Float64("val_loss", ev.Loss), zap.Float64("val_acc", ev.Accuracy))
		}
	}
	if epochEnd || (m.Spec.Checkpoint.EverySteps > 0 && m.t.Step%int64(m.Spec.Checkpoint.EverySteps) == 0) {
		return stateCommitting, nil
	}
	return stateTraining, nil
}

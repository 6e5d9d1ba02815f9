package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// finishing ends the job once its length is reached: rank 0 makes the
// final state durable, saves the model and declares the job done; the
// other ranks wait for that. Then: done, or waiting when something failed
// first and a newer plan arrived.
func (m *machine) finishing(ctx context.Context) (state, error) {
	s, p := m.sess, m.plan
	if m.memAt(m.t.Step) == nil {
		if err := m.commitLocal(); err != nil {
			return stateDone, err
		}
	}
	if s.rank != 0 {
		// Other ranks wait for the control plane to declare the job done.
		np, err := m.nextPlan(ctx, p.GetGeneration())
		if err != nil || np.GetState() == controlpb.JobState_JOB_STATE_DONE {
			return stateDone, nil
		}
		return stateWaiting, nil // a failure before the end: follow the new plan
	}
	if m.writer != nil {
		m.writer.Close() // the final checkpoint is durable and committed
		m.writer = nil
	}
	path := filepath.Join(m.Spec.OutputDir, ModelFile)
	if err := nn.SaveWeights(path, m.t.B, m.t.Model.Params(), m.t.Model.Buffers(), map[string]string{
		"format": "pt", "arch": m.Spec.Model.Arch, "stem": m.Spec.Model.Stem}); err != nil {
		// A restart would train again from the newest checkpoint and
		// fail here the same way: stop the job with the cause (ErrOutput
		// is fatal) rather than crash into a restart loop.
		return stateDone, fmt.Errorf("%w: the final model %s: %w (free space or fix the output directory, then start the coordinator again: the job resumes from its newest checkpoint and writes the model)",
			ErrOutput, path, err)
	}
	m.Log.Info("saved model", zap.String("path", path), zap.Int64("step", m.t.Step))
	m.flushReports(m.Timing.FlushTimeout)
	pause := m.firstPause()
	for {
		cctx, cancel := context.WithTimeout(ctx, m.Timing.CallTimeout)
		_, err := m.Control.CommitStep(cctx, &controlpb.CommitStepRequest{WorkerId: m.ID, Generation: p.GetGeneration(),
			Step: m.t.Step, Epoch: int64(m.t.Pos.Epoch), Cursor: int64(m.t.Pos.Cursor), Done: true})
		cancel()
		switch {
		case err == nil, errors.Is(err, control.ErrJobDone):
			return stateDone, nil
		case ctx.Err() != nil:
			return stateDone, nil
		case errors.Is(err, control.ErrUnreachable), errors.Is(err, control.ErrNotLeader):
			// No leader for now (an election, a replica down): the job is
			// not over until the done commit lands, and no new plan will
			// come to wait for. Retry, with a growing pause so that a
			// call that fails at once does not spin.
			m.Log.Warn("final commit: no coordinator leader; retrying", zap.Duration("pause", pause), zap.Error(err))
			sleepCtx(ctx, pause)
			pause = m.nextPause(pause)
			continue
		default:
			// A newer plan (a failure at the very end): follow it.
			m.Log.Warn("final commit refused; waiting for the next plan", zap.Error(err))
			return stateWaiting, nil
		}
	}
}

package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// committing keeps the state of a checkpoint step (then: training again).
// Every rank keeps it in memory for a rollback; rank 0 also writes it to
// the checkpoint store in the background and, once it is durable, records
// it and commits the step to the control plane (onCheckpoint).
func (m *machine) committing(context.Context) (state, error) {
	if err := m.commitLocal(); err != nil {
		return stateDone, err
	}
	return stateTraining, nil
}

// commitLocal snapshots the state under the current plan and session.
func (m *machine) commitLocal() error {
	start := time.Now()
	// The test accuracy and loss belong to the weights evaluated, at an
	// epoch end: a checkpoint of a later step (in the next epoch) holds
	// weights trained past them, and labelled with them it would compete
	// as the best (retention) for an accuracy it never had.
	acc, loss := m.lastAcc, m.lastLoss
	if m.lastEvalStep != m.t.Step {
		acc, loss = nil, nil
	}
	s, err := m.t.Snapshot(m.sess.world, acc)
	if err != nil {
		return err
	}
	s.Meta.Generation = m.plan.GetGeneration()
	s.Meta.Loss = loss // the validation loss beside the accuracy, for the history
	m.remember(s)
	if m.sess.rank == 0 && m.writer != nil {
		// Backpressure: the previous checkpoint must be durable and
		// committed before this one is queued, so the committed step is
		// always one of the newest snapshots every rank keeps in memory
		// (see remember) and a survivor never reads its state from disk.
		// A disk slower than the checkpoint cadence stalls training here
		// rather than silently widening the rollback.
		if waited := time.Now(); !m.writer.WaitIdle(m.Timing.WriterLag) {
			m.Log.Warn("previous checkpoint still being written; queueing the next one anyway",
				zap.Duration("waited", time.Since(waited)))
		} else if d := time.Since(waited); d > 100*time.Millisecond {
			m.Log.Info("waited for the previous checkpoint write", zap.Duration("waited", d))
		}
		m.checkpointSubmitted(s.Meta.Step)
		m.writer.Submit(s)
		m.Log.Debug("checkpoint captured", zap.Int64("step", s.Meta.Step), zap.Duration("stall", time.Since(start)))
	}
	return nil
}

// onCheckpoint runs on the writer's goroutine after each write. The step is
// committed under the generation that computed it: a state of a plan that
// has since been replaced is refused as stale by the coordinator.
func (m *machine) onCheckpoint(meta checkpoint.Meta, man cluster.Manifest, err error) {
	if err != nil {
		m.Log.Error("checkpoint write failed; training goes on, the previous checkpoint stays the newest",
			zap.Int64("step", meta.Step), zap.Error(err))
		// The coordinator tells the user (a job whose checkpoints all
		// fail trains on, but a failure would take it back to the start).
		m.report(&controlpb.MetricsReport{WorkerId: m.ID, Generation: meta.Generation, Step: meta.Step, Epoch: meta.Epoch,
			Phase: "checkpoint", Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.Timing.CallTimeout)
	defer cancel()
	key, err := m.Members.PutManifest(ctx, man)
	if err != nil {
		m.Log.Warn("checkpoint manifest not stored in etcd", zap.Error(err))
	}
	m.pruneManifests(ctx)
	acc := 0.0
	if man.Accuracy != nil {
		acc = *man.Accuracy
	}
	if key != "" {
		// Under the plan that computed it: the coordinator refuses the
		// record of an abandoned plan's state (it is not the job's latest).
		if _, err := m.Control.RecordCheckpoint(ctx, &controlpb.RecordCheckpointRequest{WorkerId: m.ID, Generation: meta.Generation,
			Checkpoint: &controlpb.CheckpointRef{Step: man.Step, Epoch: man.Epoch, Key: key, Accuracy: acc, ConfigHash: man.ConfigHash}}); err != nil {
			m.Log.Debug("checkpoint not recorded", zap.Error(err))
		}
	}
	resp, err := m.Control.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: m.ID, Generation: meta.Generation,
		Step: man.Step, Epoch: man.Epoch, Cursor: man.Cursor})
	if err != nil {
		// The committed step stays where it was, and so does the
		// checkpoint retention protects (see syncing): a restart still
		// finds the committed state. Once per checkpoint step.
		m.Log.Warn("step not committed; the committed step's checkpoint is kept",
			zap.Int64("step", man.Step), zap.Uint64("generation", meta.Generation), zap.Error(err))
		if errors.Is(err, control.ErrStaleGeneration) {
			// A newer plan replaced the one that computed this state: the
			// checkpoint belongs to an abandoned timeline, and a job
			// resumed from the newest checkpoint on disk must not pick it.
			if gone, derr := m.Store.Discard(man.Step, meta.Generation); derr != nil {
				m.Log.Warn("stale checkpoint not removed", zap.Int64("step", man.Step), zap.Error(derr))
			} else if gone {
				m.Log.Info("stale checkpoint removed", zap.Int64("step", man.Step), zap.Uint64("generation", meta.Generation))
				m.pruneManifests(ctx)
			}
		}
	} else if c := resp.GetCommitted(); c != nil {
		m.Store.Protect(c.GetStep()) // the coordinator's committed step
	} else {
		m.Store.Protect(man.Step)
	}
	m.checkpointDone(man.Step, man.TotalSize())
	m.Log.Info("checkpoint", zap.Int64("step", man.Step), zap.String("dir", man.Dir))
}

// pruneManifests deletes the manifests of checkpoints that retention has
// removed from the store.
func (m *machine) pruneManifests(ctx context.Context) {
	steps, err := m.Store.Steps()
	if err != nil {
		return
	}
	onDisk := make(map[int64]bool, len(steps))
	for _, s := range steps {
		onDisk[s] = true
	}
	ms, err := m.Members.ListManifests(ctx)
	if err != nil {
		return
	}
	for _, man := range ms {
		if !onDisk[man.Step] {
			if err := m.Members.DeleteManifest(ctx, man.Step); err != nil {
				m.Log.Debug("manifest not pruned", zap.Int64("step", man.Step), zap.Error(err))
			}
		}
	}
}

// memKeep is how many of the newest snapshots a worker keeps in memory
// (plus step 0): rank 0 queues snapshot n only once n-1 is written, and
// another rank is at most one checkpoint ahead of rank 0, so while commits
// succeed the committed step is among its three newest. While the
// coordinator refuses commits (a leader change) it can drop out of memory;
// a rollback then reads it from disk, where retention keeps it (Protect).
const memKeep = 3

// remember keeps s as the in-memory state of its step (the memKeep newest
// are kept, plus step 0 for a restart from scratch).
func (m *machine) remember(s *checkpoint.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mem[s.Meta.Step] = s
	for len(m.mem) > memKeep+1 {
		oldest := int64(-1)
		for k := range m.mem {
			if k > 0 && (oldest < 0 || k < oldest) {
				oldest = k
			}
		}
		if oldest < 0 || oldest == s.Meta.Step {
			break
		}
		delete(m.mem, oldest)
	}
}

// forgetAfter drops in-memory states newer than step: after a rollback
// they belong to an abandoned timeline.
func (m *machine) forgetAfter(step int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.mem {
		if k > step {
			delete(m.mem, k)
		}
	}
}

func (m *machine) memAt(step int64) *checkpoint.Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mem[step]
}

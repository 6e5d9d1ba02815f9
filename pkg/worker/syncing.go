package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/observe"
)

// syncing prepares training under the plan taken by waiting: the trainer
// is brought to the plan's committed step (from memory, else from the
// checkpoint store), the plan's ring is opened, every rank checks that it
// starts from the same state, and the reducer and the loader are set up
// (then: training). A ring that cannot be opened leads to recovering; a
// newer plan while waiting for the peers back to waiting.
func (m *machine) syncing(ctx context.Context) (state, error) {
	p := m.plan
	m.Metrics.SetState(observe.StateSyncing)
	// The plan's committed step is the state every worker (re)starting
	// under it loads: retention must not delete it, even when newer
	// checkpoints are written whose commits are refused.
	m.Store.Protect(p.GetCommitted().GetStep())
	if err := m.syncState(p.GetCommitted().GetStep()); err != nil {
		return stateDone, err
	}
	rank, world := int(p.GetYourRank()), len(p.GetMembers())
	peers := make([]string, world)
	for _, pm := range p.GetMembers() {
		peers[pm.GetRank()] = pm.GetAddress()
	}
	comp, err := allreduce.ParseCompression(m.Spec.Compression)
	if err != nil {
		return stateDone, err
	}
	rc := allreduce.DefaultConfig(p.GetConfigHash()[:min(16, len(p.GetConfigHash()))], p.GetGeneration(), rank, world)
	rc.Timeout = time.Duration(m.Spec.DeadlineSec * float64(time.Second))
	rc.Compression = comp
	octx, cancel := context.WithTimeout(ctx, rc.Timeout+m.Timing.RingSlack)
	stopOnPlan := m.cancelOnNewPlan(octx, cancel, p.GetGeneration())
	ring, err := allreduce.Open(octx, m.Ring, rc, peers)
	stopOnPlan()
	cancel()
	if err != nil {
		if m.plans.generation() > p.GetGeneration() {
			return stateWaiting, nil // superseded while waiting for the peers
		}
		m.failure = &ringError{open: true, err: fmt.Errorf("open ring of generation %d: %w", p.GetGeneration(), err)}
		return stateRecovering, nil
	}
	s := &session{rank: rank, world: world, ring: ring}
	m.sess = s
	s.closers = append(s.closers, func() { ring.Close() })
	// A newer plan aborts the ring's collectives at once.
	rctx, rcancel := context.WithCancel(ctx)
	s.ctx = rctx
	s.closers = append(s.closers, rcancel, m.cancelOnNewPlan(rctx, rcancel, p.GetGeneration()))
	if err := m.agreeStep(rctx, ring, rank, world); err != nil {
		return m.ringFailed(ctx, err)
	}
	if m.Spec.BatchNorm == "sync" {
		m.t.Model.SetChannelReducer(ring)
		s.closers = append(s.closers, func() { m.t.Model.SetChannelReducer(nil) })
	}
	if s.red, err = m.t.NewReducer(ring); err != nil {
		return stateDone, err
	}
	// Same-host GPU neighbours: gradients device to device (a collective).
	gpuRing, err := m.t.AttachDeviceRing(rctx, ring, world)
	if err != nil {
		return m.ringFailed(ctx, err)
	}
	s.closers = append(s.closers, m.t.DetachDeviceRing)
	if gpuRing != "" {
		m.Log.Info(gpuRing, zap.Bool("device_ring", m.t.DeviceRingActive()))
	}
	if rank == 0 && m.writer == nil {
		if err := m.Store.CleanOrphans(); err != nil {
			m.Log.Warn("leftovers of an interrupted checkpoint write not removed", zap.Error(err))
		}
		m.writer = checkpoint.NewWriter(m.Store, m.onCheckpoint)
	}
	if m.memAt(m.t.Step) == nil {
		// The starting state must be restorable in memory (a rollback
		// to it needs no disk read); rank 0 writes it when it is new.
		if err := m.commitLocal(); err != nil {
			return stateDone, err
		}
	}
	if s.ld, err = m.t.Feed(rctx, rank, world); err != nil {
		return stateDone, err
	}
	s.closers = append(s.closers, func() { s.ld.Close() })
	right, left := ring.Links() // shm or stream: which links stay on the host
	m.Log.Info("training", zap.Int("rank", rank), zap.Int("world", world), zap.Int64("step", m.t.Step),
		zap.Int("epoch", m.t.Pos.Epoch), zap.Int("cursor", m.t.Pos.Cursor),
		zap.String("link_right", right), zap.String("link_left", left))
	s.since = time.Now()
	return stateTraining, nil
}

// syncState brings the trainer to the committed step target: from memory
// when this worker holds that state, otherwise from the checkpoint store
// (falling back to the newest verified one before it, with a log line).
func (m *machine) syncState(target int64) error {
	if target == 0 && m.t.Step == 0 {
		return m.resumeFromStore() // a fresh start, or a restarted job
	}
	defer m.forgetAfter(target)
	if m.t.Step == target && m.memAt(target) != nil && !m.partial {
		return nil
	}
	if s := m.memAt(target); s != nil {
		// Also at the same step when a step was cut short: its forward
		// pass had already moved the batch-norm running statistics.
		m.Log.Info("rolling back in memory", zap.Int64("from", m.t.Step), zap.Int64("to", target))
		m.Metrics.Rollback()
		if err := m.t.Restore(s); err != nil {
			return err
		}
		m.partial = false
		return nil
	}
	if err := m.loadAtMost(target); err != nil {
		return err
	}
	m.partial = false
	return nil
}

// loadAtMost loads the newest verified checkpoint of this job at or before
// step target.
func (m *machine) loadAtMost(target int64) error {
	l, skipped, err := m.Store.LoadAtMost(m.Spec.Hash(), target)
	for _, s := range skipped {
		m.Log.Warn("checkpoint unusable; falling back to an older one", zap.Int64("step", s.Step), zap.Error(s.Err))
	}
	if err != nil {
		if target == 0 {
			return m.freshStart()
		}
		return fmt.Errorf("worker: state of committed step %d: %w", target, err)
	}
	if l.Meta.Step != target {
		m.Log.Warn("committed step's checkpoint unusable; resuming from an older one",
			zap.Int64("committed", target), zap.Int64("step", l.Meta.Step))
	}
	m.Log.Info("loaded checkpoint", zap.Int64("step", l.Meta.Step), zap.Int64("epoch", l.Meta.Epoch), zap.Int64("cursor", l.Meta.Cursor))
	return m.t.Load(l)
}

// freshStart puts the trainer back to its initial state (step 0).
func (m *machine) freshStart() error {
	if s := m.memAt(0); s != nil {
		return m.t.Restore(s)
	}
	if m.t.Step == 0 {
		return nil
	}
	return fmt.Errorf("worker: no state of step 0 to restart from")
}

// resumeFromStore loads the newest verified checkpoint of this job when
// the job starts at step 0 and resuming is on (a restarted job).
func (m *machine) resumeFromStore() error {
	if !m.Spec.Checkpoint.Resume {
		return nil
	}
	l, skipped, err := m.Store.LoadAtMost(m.Spec.Hash(), -1)
	for _, s := range skipped {
		m.Log.Warn("checkpoint unusable; falling back to an older one", zap.Int64("step", s.Step), zap.Error(s.Err))
	}
	if err != nil {
		// None of this job. Another job's would be deleted by this one's
		// retention (and their steps overwritten): refuse.
		for _, s := range skipped {
			if errors.Is(s.Err, checkpoint.ErrMismatch) {
				return fmt.Errorf("worker: the checkpoints in %s are of a job with other settings (newest: step %d: %w); "+
					"nothing was changed there. Continue that job with its settings, start this one with another --output, "+
					"or without resuming (--resume=false, which lets retention delete them)", m.Spec.OutputDir, s.Step, s.Err)
			}
		}
		return nil // none: a fresh start
	}
	m.Log.Info("resuming from checkpoint", zap.Int64("step", l.Meta.Step), zap.Int64("epoch", l.Meta.Epoch),
		zap.Int64("cursor", l.Meta.Cursor), zap.String("dir", l.Manifest.Dir))
	return m.t.Load(l)
}

// agreeStep checks that every rank starts the plan from the same state:
// the same step and the same weights (a hash of parameters and buffers).
// A joiner whose checkpoint was corrupt may have gone back further than
// the survivors' memory, or a survivor may hold a state of an abandoned
// timeline; on any disagreement every rank loads the newest verified
// checkpoint at or before the oldest step, so all hold identical bytes.
func (m *machine) agreeStep(ctx context.Context, ring *allreduce.Ring, rank, world int) error {
	if world < 2 {
		return nil
	}
	h, err := m.t.StateHash()
	if err != nil {
		return err
	}
	// Four exact float32 lanes per rank: the step and 3x16 bits of hash.
	v := make([]float32, 4*world)
	v[4*rank] = float32(m.t.Step)
	v[4*rank+1], v[4*rank+2], v[4*rank+3] = float32(h&0xffff), float32(h>>16&0xffff), float32(h>>32&0xffff)
	if err := ring.AllReduce(ctx, allreduce.Tag{Step: 0, Bucket: 1<<24 + 1}, v, allreduce.Sum); err != nil {
		return err
	}
	lo, same := int64(v[0]), true
	for r := 1; r < world; r++ {
		lo = min(lo, int64(v[4*r]))
		for k := 0; k < 4; k++ {
			if v[4*r+k] != v[k] {
				same = false
			}
		}
	}
	if same {
		return nil
	}
	m.Log.Warn("ranks start from different states; all load the checkpoint of the oldest step",
		zap.Int64("mine", m.t.Step), zap.Int64("oldest", lo))
	if err := m.loadAtMost(lo); err != nil {
		return err
	}
	m.partial = false
	m.forgetAfter(-1)
	return nil
}

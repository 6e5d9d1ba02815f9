package worker

import (
	"context"
	"fmt"
	"sync"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// MemControlPlane is the in-memory twin of the coordinator, for tests. It
// does not plan by itself: the test publishes each plan (Publish) and
// reads what the workers sent (Snapshot, Await). It keeps the committed
// step like the coordinator does (a commit under an older generation is
// refused as stale; a final commit ends the job with a new generation) and
// can act out a leader change (LeaderChange). It is safe for concurrent
// use.
type MemControlPlane struct {
	mu      sync.Mutex // guards s, changed, down, streams, refuse
	s       MemControlState
	changed chan struct{} // closed and replaced on every change of s
	down    int           // calls still to fail with ErrUnreachable
	streams chan struct{} // closed to break every open plan watch
	refuse  error         // what CommitStep fails with (RefuseCommits); nil: none
}

// MemControlState is what a MemControlPlane holds.
type MemControlState struct {
	Generation  uint64
	State       controlpb.JobState
	Members     []*controlpb.PlanMember // ordered by rank
	MaxWorkers  int
	ConfigHash  string
	Committed   MemCommitted
	Failures    []*controlpb.FailureReport
	Metrics     []*controlpb.MetricsReport
	Checkpoints []*controlpb.CheckpointRef
	Commits     int // successful CommitStep calls
}

// MemCommitted is the committed step of a MemControlPlane.
type MemCommitted struct {
	Step, Epoch, Cursor int64
	Generation          uint64 // the generation that committed it
}

var _ ControlPlane = (*MemControlPlane)(nil)

// NewMemControlPlane returns a control plane with no plan yet.
func NewMemControlPlane(configHash string) *MemControlPlane {
	return &MemControlPlane{s: MemControlState{ConfigHash: configHash}, changed: make(chan struct{}), streams: make(chan struct{})}
}

// Publish makes a new running plan of the workers ids (rank order) at
// addrs, from the committed step, and returns its generation.
func (c *MemControlPlane) Publish(ids, addrs []string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Generation++
	c.s.State = controlpb.JobState_JOB_STATE_RUNNING
	c.s.Members = nil
	for r, id := range ids {
		c.s.Members = append(c.s.Members, &controlpb.PlanMember{Rank: int32(r), Id: id, Address: addrs[r]})
	}
	c.changedLocked()
	return c.s.Generation
}

// SetMaxWorkers sets the plans' worker limit (0: none).
func (c *MemControlPlane) SetMaxWorkers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.MaxWorkers = n
}

// LeaderChange acts out a coordinator failover: every open plan watch
// breaks, and the next calls fail with control.ErrUnreachable until
// the new leader is found.
func (c *MemControlPlane) LeaderChange(failedCalls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.streams)
	c.streams = make(chan struct{})
	c.down = failedCalls
}

// RefuseCommits makes every CommitStep fail with err (as a coordinator
// whose raft group has no leader refuses them) until it is called with
// nil; the committed step stays where it is.
func (c *MemControlPlane) RefuseCommits(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuse = err
}

// Snapshot returns a copy of the state.
func (c *MemControlPlane) Snapshot() MemControlState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.s
	s.Members = append([]*controlpb.PlanMember(nil), s.Members...)
	s.Failures = append([]*controlpb.FailureReport(nil), s.Failures...)
	s.Metrics = append([]*controlpb.MetricsReport(nil), s.Metrics...)
	s.Checkpoints = append([]*controlpb.CheckpointRef(nil), s.Checkpoints...)
	return s
}

// Await waits until cond holds for the state, or ctx ends (an error).
func (c *MemControlPlane) Await(ctx context.Context, cond func(MemControlState) bool) error {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if cond(c.Snapshot()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("control plane: condition not reached: %w", ctx.Err())
		}
	}
}

func (c *MemControlPlane) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// unreachable consumes one failed call after a leader change.
func (c *MemControlPlane) unreachableLocked() error {
	if c.down > 0 {
		c.down--
		return fmt.Errorf("%w: leader changing", control.ErrUnreachable)
	}
	return nil
}

func (c *MemControlPlane) planFor(id string) *controlpb.Plan {
	p := &controlpb.Plan{Generation: c.s.Generation, State: c.s.State, YourRank: -1, ConfigHash: c.s.ConfigHash,
		MaxWorkers: int32(c.s.MaxWorkers), Committed: &controlpb.Committed{Step: c.s.Committed.Step, Epoch: c.s.Committed.Epoch,
			Cursor: c.s.Committed.Cursor, Generation: c.s.Committed.Generation}}
	for _, m := range c.s.Members {
		p.Members = append(p.Members, &controlpb.PlanMember{Rank: m.Rank, Id: m.Id, Address: m.Address})
		if m.Id == id {
			p.YourRank = m.Rank
		}
	}
	return p
}

// WatchPlan implements ControlPlane.
func (c *MemControlPlane) WatchPlan(ctx context.Context, workerID string, after uint64, fn func(*controlpb.Plan) error) error {
	c.mu.Lock()
	if err := c.unreachableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	broken := c.streams
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var p *controlpb.Plan
		if c.s.Generation > after {
			p = c.planFor(workerID)
		}
		ch := c.changed
		c.mu.Unlock()
		if p != nil {
			if err := fn(p); err != nil {
				return err
			}
			after = p.GetGeneration()
		}
		select {
		case <-ch:
		case <-broken:
			return fmt.Errorf("%w: plan stream broken by a leader change", control.ErrUnreachable)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReportMetrics implements ControlPlane.
func (c *MemControlPlane) ReportMetrics(_ context.Context, m *controlpb.MetricsReport) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.unreachableLocked(); err != nil {
		return err
	}
	c.s.Metrics = append(c.s.Metrics, m)
	c.changedLocked()
	return nil
}

// ReportFailure implements ControlPlane: the report is recorded; the test
// decides the next plan.
func (c *MemControlPlane) ReportFailure(_ context.Context, r *controlpb.FailureReport) (*controlpb.Plan, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.unreachableLocked(); err != nil {
		return nil, err
	}
	c.s.Failures = append(c.s.Failures, r)
	c.changedLocked()
	return c.planFor(r.GetWorkerId()), nil
}

// CommitStep implements ControlPlane with the coordinator's rules.
func (c *MemControlPlane) CommitStep(_ context.Context, r *controlpb.CommitStepRequest) (*controlpb.CommitStepResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.unreachableLocked(); err != nil {
		return nil, err
	}
	switch {
	case c.refuse != nil:
		return nil, c.refuse
	case c.s.State == controlpb.JobState_JOB_STATE_DONE:
		return nil, control.ErrJobDone
	case r.GetGeneration() != c.s.Generation:
		return nil, fmt.Errorf("%w: commit for generation %d, current is %d", control.ErrStaleGeneration, r.GetGeneration(), c.s.Generation)
	case len(c.s.Members) == 0 || c.s.Members[0].Id != r.GetWorkerId():
		return nil, fmt.Errorf("%w: %q", control.ErrNotRankZero, r.GetWorkerId())
	}
	c.s.Committed = MemCommitted{Step: r.GetStep(), Epoch: r.GetEpoch(), Cursor: r.GetCursor(), Generation: r.GetGeneration()}
	c.s.Commits++
	if r.GetDone() {
		c.s.State = controlpb.JobState_JOB_STATE_DONE
		c.s.Generation++ // watchers learn that the job ended
	}
	c.changedLocked()
	return &controlpb.CommitStepResponse{Committed: &controlpb.Committed{Step: r.GetStep(), Epoch: r.GetEpoch(),
		Cursor: r.GetCursor(), Generation: r.GetGeneration()}, State: c.s.State}, nil
}

// RecordCheckpoint implements ControlPlane.
func (c *MemControlPlane) RecordCheckpoint(_ context.Context, r *controlpb.RecordCheckpointRequest) (*controlpb.RecordCheckpointResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.unreachableLocked(); err != nil {
		return nil, err
	}
	if g, step := r.GetGeneration(), r.GetCheckpoint().GetStep(); !control.CheckpointOfJob(g, step, c.s.Generation, c.s.Committed.Generation, c.s.Committed.Step) {
		return nil, fmt.Errorf("%w: checkpoint of step %d from generation %d, current is %d", control.ErrStaleGeneration, step, g, c.s.Generation)
	}
	c.s.Checkpoints = append(c.s.Checkpoints, r.GetCheckpoint())
	c.changedLocked()
	return &controlpb.RecordCheckpointResponse{Latest: r.GetCheckpoint()}, nil
}

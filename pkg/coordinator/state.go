package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/control"
)

// Status is the job's lifecycle status.
type Status string

// The job statuses.
const (
	StatusWaiting Status = "waiting" // no spec, or never had min (or start) workers
	StatusRunning Status = "running" // the plan has min..max workers
	StatusPaused  Status = "paused"  // fell below min workers after running, or waits for its start workers again
	StatusDone    Status = "done"    // rank 0 committed the final step
	// StatusFailed: a worker reported an error that would repeat under any
	// plan (bad input); LastFailure says which. Only a new spec (a
	// coordinator started again) leaves it.
	StatusFailed Status = "failed"
)

// Worker is a live member as the coordinator plans with it.
type Worker struct {
	ID           string `json:"id"`
	Address      string `json:"address"`
	HostID       string `json:"host_id"`
	Device       string `json:"device"`
	PID          int    `json:"pid"`
	JoinRevision int64  `json:"join_revision"` // etcd create revision: join order
}

// WorkerFromMember converts an etcd membership record.
func WorkerFromMember(m cluster.Member) Worker {
	return Worker{ID: m.ID, Address: m.Address, HostID: m.HostID, Device: m.Device, PID: m.PID, JoinRevision: m.JoinRevision}
}

// Committed is the last step that rank 0 committed.
type Committed struct {
	Step       int64  `json:"step"`
	Epoch      int64  `json:"epoch"`
	Cursor     int64  `json:"cursor"`
	Generation uint64 `json:"generation"`
}

// CheckpointRef points at a checkpoint manifest in etcd.
type CheckpointRef struct {
	Step       int64   `json:"step"`
	Epoch      int64   `json:"epoch"`
	Key        string  `json:"key"`
	Accuracy   float64 `json:"accuracy"`
	ConfigHash string  `json:"config_hash"`
}

// Exclusion keeps a member out of plans: a worker reported as failed stays
// out until it registers again (a new JoinRevision) or leaves.
type Exclusion struct {
	ID           string `json:"id"`
	JoinRevision int64  `json:"join_revision"`
}

// LeaderRef names the replica that last announced itself as leader.
type LeaderRef struct {
	ID          string `json:"id"`
	ControlAddr string `json:"control_addr"`
}

// Failure is the last failure report that produced a new plan.
type Failure struct {
	WorkerID   string `json:"worker_id"`
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason"`
	SuspectID  string `json:"suspect_id,omitempty"`
	Fatal      bool   `json:"fatal,omitempty"`
}

// JobState is the replicated state of one job. Plan is in rank order (ring
// order); Live is the last membership snapshot, in join order.
type JobState struct {
	Spec            []byte         `json:"spec,omitempty"`
	ConfigHash      string         `json:"config_hash,omitempty"`
	MinWorkers      int            `json:"min_workers"`
	MaxWorkers      int            `json:"max_workers"` // 0: no limit
	Generation      uint64         `json:"generation"`
	Status          Status         `json:"status"`
	Plan            []Worker       `json:"plan"`
	Live            []Worker       `json:"live"`
	MembersRevision int64          `json:"members_revision"`
	Excluded        []Exclusion    `json:"excluded,omitempty"`
	Committed       Committed      `json:"committed"`
	Checkpoint      *CheckpointRef `json:"checkpoint,omitempty"`
	Leader          LeaderRef      `json:"leader"`
	LastFailure     *Failure       `json:"last_failure,omitempty"`
	// FailedIndex is the raft index of the entry that made Status
	// StatusFailed (set by the FSM; 0 when unknown). A replica started
	// again compares it with the last index it had stored (Node.StartIndex)
	// to tell a failure of an earlier run, which its spec retries, from
	// one of this run.
	FailedIndex uint64 `json:"failed_index,omitempty"`
	Ran         bool   `json:"ran"` // was ever running
	// StartWorkers, while above 0, is the start quorum: the job does not
	// run until this many workers are live (MinWorkers applies again once
	// it runs, and StartWorkers is cleared). Set by SetSpecCommand.
	StartWorkers int `json:"start_workers,omitempty"`
	// Bench is the benchmark round that runs instead of the job's plan
	// (nil: none); see BenchCommand.
	Bench *BenchRound `json:"bench,omitempty"`
}

// BenchRound is a benchmark round (coordinator bench on a cluster):
// Members, in ring order, run Steps steps of Spec on a ring of their own
// while the job's Plan is set aside; the round's plan is generation ID.
type BenchRound struct {
	ID      uint64   `json:"id"`
	Spec    []byte   `json:"spec"`
	Steps   int64    `json:"steps"`
	Members []Worker `json:"members"`
}

// Current returns the plan workers follow: the bench round's members
// while one runs, else the job's plan.
func (s JobState) Current() []Worker {
	if s.Bench != nil {
		return s.Bench.Members
	}
	return s.Plan
}

// initialState is the state of a fresh job.
func initialState() JobState { return JobState{Status: StatusWaiting, MinWorkers: 1} }

// Clone returns a deep copy.
func (s JobState) Clone() JobState {
	c := s
	c.Spec = slices.Clone(s.Spec)
	c.Plan = slices.Clone(s.Plan)
	c.Live = slices.Clone(s.Live)
	c.Excluded = slices.Clone(s.Excluded)
	if s.Checkpoint != nil {
		cp := *s.Checkpoint
		c.Checkpoint = &cp
	}
	if s.LastFailure != nil {
		f := *s.LastFailure
		c.LastFailure = &f
	}
	if s.Bench != nil {
		b := *s.Bench
		b.Spec = slices.Clone(b.Spec)
		b.Members = slices.Clone(b.Members)
		c.Bench = &b
	}
	return c
}

// Rank returns the rank of worker id in the plan, or -1.
func (s JobState) Rank(id string) int {
	return rankIn(s.Plan, id)
}

func rankIn(plan []Worker, id string) int {
	for i, w := range plan {
		if w.ID == id {
			return i
		}
	}
	return -1
}

// ConfigHash returns the SHA-256 (hex) of a job spec: the default config
// hash when the caller does not supply one.
func ConfigHash(spec []byte) string {
	h := sha256.Sum256(spec)
	return hex.EncodeToString(h[:])
}

// The command operations.
const (
	opSetSpec          = "set_spec"
	opUpdateMembers    = "update_members"
	opReportFailure    = "report_failure"
	opCommitStep       = "commit_step"
	opRecordCheckpoint = "record_checkpoint"
	opSetLeader        = "set_leader"
	opBench            = "bench"
)

// Command is one entry of the raft log, JSON-encoded. Exactly the payload
// named by Op is set.
type Command struct {
	Op         string                `json:"op"`
	Spec       *SetSpecCommand       `json:"spec,omitempty"`
	Members    *UpdateMembersCommand `json:"members,omitempty"`
	Failure    *FailureCommand       `json:"failure,omitempty"`
	Commit     *CommitCommand        `json:"commit,omitempty"`
	Checkpoint *CheckpointCommand    `json:"checkpoint,omitempty"`
	Leader     *LeaderRef            `json:"leader,omitempty"`
	Bench      *BenchCommand         `json:"bench,omitempty"`
}

// BenchCommand starts a benchmark round on Workers of the live members
// (the planned ones first, in ring order, then standbys in join order;
// excluded ones never), or ends the round ID (End). Starting one starts
// a generation whose plan is the round; ending it starts a generation
// whose plan is the job's again. The job's own state (plan, committed
// step, status) is not changed by either.
type BenchCommand struct {
	Workers int    `json:"workers,omitempty"`
	Spec    []byte `json:"spec,omitempty"`
	Steps   int64  `json:"steps,omitempty"`
	End     bool   `json:"end,omitempty"`
	ID      uint64 `json:"id,omitempty"`
}

// SetSpecCommand sets the job spec and the worker bounds. A spec whose
// hash differs from the current one is refused (ErrSpecMismatch) once steps
// are committed, unless Replace is set.
type SetSpecCommand struct {
	Spec       []byte `json:"spec"`
	ConfigHash string `json:"config_hash"` // ConfigHash(Spec) when empty
	MinWorkers int    `json:"min_workers"` // >= 1
	MaxWorkers int    `json:"max_workers"` // 0 or >= MinWorkers
	Replace    bool   `json:"replace,omitempty"`
	// StartWorkers, when above 0 (at most MaxWorkers), makes the job wait
	// for that many live workers before it runs (again): the workers a
	// coordinator starts itself (--workers N) all train from the first
	// step, whichever of them registered first. The live members recorded
	// before are forgotten (they may be the processes of an earlier run):
	// only a membership snapshot applied afterwards counts.
	StartWorkers int `json:"start_workers,omitempty"`
}

// UpdateMembersCommand carries a membership snapshot read from etcd at
// Revision. Snapshots older than the last applied one are ignored.
type UpdateMembersCommand struct {
	Members  []Worker `json:"members"`
	Revision int64    `json:"revision"`
}

// FailureCommand reports that the ring of Generation failed.
type FailureCommand struct {
	WorkerID   string `json:"worker_id"`
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason"`
	SuspectID  string `json:"suspect_id,omitempty"`
	// Fatal: the error will repeat under any plan; the job stops
	// (StatusFailed) whatever Generation is.
	Fatal bool `json:"fatal,omitempty"`
}

// CommitCommand records rank 0's committed step.
type CommitCommand struct {
	WorkerID   string `json:"worker_id"`
	Generation uint64 `json:"generation"`
	Step       int64  `json:"step"`
	Epoch      int64  `json:"epoch"`
	Cursor     int64  `json:"cursor"`
	Done       bool   `json:"done,omitempty"`
}

// CheckpointCommand records a checkpoint manifest reference.
type CheckpointCommand struct {
	WorkerID string        `json:"worker_id"`
	Ref      CheckpointRef `json:"ref"`
	// Generation is the plan generation that computed the checkpoint's
	// state (0: unknown, from an older worker; accepted as before).
	Generation uint64 `json:"generation,omitempty"`
}

// apply returns the state after cmd. It is a pure function of (s, cmd):
// every replica computes the same result. On error s is returned
// unchanged.
func apply(s JobState, cmd Command) (JobState, error) {
	n := s.Clone()
	var err error
	switch cmd.Op {
	case opSetSpec:
		err = applySetSpec(&n, cmd.Spec)
	case opUpdateMembers:
		err = applyMembers(&n, cmd.Members)
	case opReportFailure:
		err = applyFailure(&n, cmd.Failure)
	case opCommitStep:
		err = applyCommit(&n, cmd.Commit)
	case opRecordCheckpoint:
		err = applyCheckpoint(&n, cmd.Checkpoint)
	case opBench:
		err = applyBench(&n, cmd.Bench)
	case opSetLeader:
		if cmd.Leader == nil || cmd.Leader.ID == "" {
			err = fmt.Errorf("%w: set_leader without a leader id", ErrInvalid)
		} else {
			n.Leader = *cmd.Leader
		}
	default:
		err = fmt.Errorf("%w: unknown command %q", ErrInvalid, cmd.Op)
	}
	if err != nil {
		return s, err
	}
	return n, nil
}

func applySetSpec(s *JobState, c *SetSpecCommand) error {
	if c == nil {
		return fmt.Errorf("%w: set_spec without payload", ErrInvalid)
	}
	if c.MinWorkers < 1 {
		return fmt.Errorf("%w: min workers %d < 1", ErrInvalid, c.MinWorkers)
	}
	if c.MaxWorkers != 0 && c.MaxWorkers < c.MinWorkers {
		return fmt.Errorf("%w: max workers %d < min workers %d", ErrInvalid, c.MaxWorkers, c.MinWorkers)
	}
	if c.StartWorkers < 0 || (c.MaxWorkers != 0 && c.StartWorkers > c.MaxWorkers) {
		return fmt.Errorf("%w: start workers %d outside [0, max workers %d]", ErrInvalid, c.StartWorkers, c.MaxWorkers)
	}
	if s.Status == StatusDone {
		return ErrJobDone
	}
	retry := s.Status == StatusFailed
	if retry {
		// A coordinator started again retries the job: the user may
		// have fixed the input. Always under a new generation, so that
		// every watcher (a worker lingering on the failure) sees the
		// retry, even when the plan and status come out as they were.
		s.Status = StatusWaiting
	}
	hash := c.ConfigHash
	if hash == "" {
		hash = ConfigHash(c.Spec)
	}
	if s.ConfigHash != "" && s.ConfigHash != hash && s.Committed.Step > 0 && !c.Replace {
		return fmt.Errorf("%w: job has committed step %d under config %.12s, new config is %.12s",
			ErrSpecMismatch, s.Committed.Step, s.ConfigHash, hash)
	}
	s.Spec = slices.Clone(c.Spec)
	s.ConfigHash = hash
	s.MinWorkers, s.MaxWorkers = c.MinWorkers, c.MaxWorkers
	if c.StartWorkers > 0 {
		s.StartWorkers = c.StartWorkers
		s.Live = nil
	}
	replan(s, retry)
	return nil
}

func applyMembers(s *JobState, c *UpdateMembersCommand) error {
	if c == nil {
		return fmt.Errorf("%w: update_members without payload", ErrInvalid)
	}
	seen := make(map[string]bool, len(c.Members))
	for _, w := range c.Members {
		if err := cluster.ValidateName("member id", w.ID); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if seen[w.ID] {
			return fmt.Errorf("%w: member %q listed twice", ErrInvalid, w.ID)
		}
		seen[w.ID] = true
	}
	if c.Revision < s.MembersRevision {
		return nil // an older snapshot (e.g. from a deposed leader): ignore
	}
	s.Live = slices.Clone(c.Members)
	s.MembersRevision = c.Revision
	// An exclusion ends when its member is gone or has registered anew.
	kept := s.Excluded[:0]
	for _, e := range s.Excluded {
		for _, w := range s.Live {
			if w.ID == e.ID && w.JoinRevision == e.JoinRevision {
				kept = append(kept, e)
				break
			}
		}
	}
	s.Excluded = kept
	replan(s, false)
	return nil
}

func applyBench(s *JobState, c *BenchCommand) error {
	if c == nil {
		return fmt.Errorf("%w: bench without payload", ErrInvalid)
	}
	if c.End {
		if s.Bench == nil || s.Bench.ID != c.ID {
			return nil // already ended (or another round): nothing to do
		}
		s.Bench = nil
		s.Generation++ // the job's plan again
		replan(s, false)
		return nil
	}
	switch {
	case s.Status == StatusDone || s.Status == StatusFailed:
		return fmt.Errorf("%w: the job is %s (its workers have stopped)", ErrNotRunning, s.Status)
	case s.Bench != nil:
		return fmt.Errorf("%w: round %d on %d workers", ErrBenchBusy, s.Bench.ID, len(s.Bench.Members))
	case c.Workers < 1 || c.Steps < 1 || len(c.Spec) == 0:
		return fmt.Errorf("%w: bench of %d workers, %d steps, %d-byte spec", ErrInvalid, c.Workers, c.Steps, len(c.Spec))
	}
	excluded := make(map[Exclusion]bool, len(s.Excluded))
	for _, e := range s.Excluded {
		excluded[e] = true
	}
	live := make(map[string]Worker, len(s.Live))
	for _, w := range s.Live {
		if !excluded[Exclusion{ID: w.ID, JoinRevision: w.JoinRevision}] {
			live[w.ID] = w
		}
	}
	var members []Worker
	for _, w := range s.Plan { // the planned workers first, in ring order
		if l, ok := live[w.ID]; ok && len(members) < c.Workers {
			members = append(members, l)
			delete(live, w.ID)
		}
	}
	for _, w := range s.Live { // then standbys, in join order
		if _, ok := live[w.ID]; ok && len(members) < c.Workers {
			members = placeByHost(members, w)
			delete(live, w.ID)
		}
	}
	if len(members) < c.Workers {
		return fmt.Errorf("%w: bench of %d workers, %d live", ErrInvalid, c.Workers, len(members))
	}
	s.Generation++
	s.Bench = &BenchRound{ID: s.Generation, Spec: slices.Clone(c.Spec), Steps: c.Steps, Members: members}
	return nil
}

func applyFailure(s *JobState, c *FailureCommand) error {
	if c == nil {
		return fmt.Errorf("%w: report_failure without payload", ErrInvalid)
	}
	if s.Status == StatusDone || s.Status == StatusFailed {
		return nil // finished or already stopped: nothing to do
	}
	if s.Bench != nil && !c.Fatal {
		// A bench round's ring failed: the round ends (its failure
		// recorded), nobody is excluded: the cluster stays as it was.
		if c.Generation != s.Generation {
			return nil
		}
		s.LastFailure = &Failure{WorkerID: c.WorkerID, Generation: c.Generation, Reason: "bench: " + c.Reason, SuspectID: c.SuspectID}
		s.Bench = nil
		s.Generation++
		replan(s, false)
		return nil
	}
	if c.Fatal {
		s.Bench = nil
		s.LastFailure = &Failure{WorkerID: c.WorkerID, Generation: c.Generation, Reason: c.Reason, SuspectID: c.SuspectID, Fatal: true}
		s.Status = StatusFailed
		s.Generation++ // watchers learn that the job stopped
		return nil
	}
	if c.Generation != s.Generation {
		return nil // already re-planned: nothing to do
	}
	if r := s.Rank(c.SuspectID); c.SuspectID != "" && r >= 0 {
		s.Excluded = append(s.Excluded, Exclusion{ID: c.SuspectID, JoinRevision: s.Plan[r].JoinRevision})
	}
	s.LastFailure = &Failure{WorkerID: c.WorkerID, Generation: c.Generation, Reason: c.Reason, SuspectID: c.SuspectID}
	replan(s, true)
	return nil
}

func applyCommit(s *JobState, c *CommitCommand) error {
	if c == nil {
		return fmt.Errorf("%w: commit_step without payload", ErrInvalid)
	}
	if c.Step < 0 || c.Epoch < 0 || c.Cursor < 0 {
		return fmt.Errorf("%w: negative step/epoch/cursor (%d/%d/%d)", ErrInvalid, c.Step, c.Epoch, c.Cursor)
	}
	if s.Status == StatusDone {
		return ErrJobDone
	}
	if s.Status == StatusFailed {
		return fmt.Errorf("%w (status %s)", ErrNotRunning, s.Status)
	}
	if c.Generation != s.Generation {
		return fmt.Errorf("%w: commit for generation %d, current is %d", ErrStaleGeneration, c.Generation, s.Generation)
	}
	if s.Status != StatusRunning {
		return fmt.Errorf("%w (status %s)", ErrNotRunning, s.Status)
	}
	if s.Rank(c.WorkerID) != 0 {
		return fmt.Errorf("%w: %q has rank %d", ErrNotRankZero, c.WorkerID, s.Rank(c.WorkerID))
	}
	if s.Committed.Generation == c.Generation && c.Step < s.Committed.Step {
		return fmt.Errorf("%w: step %d after step %d", ErrStepRegression, c.Step, s.Committed.Step)
	}
	s.Committed = Committed{Step: c.Step, Epoch: c.Epoch, Cursor: c.Cursor, Generation: c.Generation}
	if c.Done {
		s.Status = StatusDone
		s.Generation++ // watchers learn that the job ended
	}
	return nil
}

func applyCheckpoint(s *JobState, c *CheckpointCommand) error {
	if c == nil {
		return fmt.Errorf("%w: record_checkpoint without payload", ErrInvalid)
	}
	r := c.Ref
	if r.Step < 0 || r.Epoch < 0 || r.Key == "" {
		return fmt.Errorf("%w: checkpoint ref needs a non-negative step and a key", ErrInvalid)
	}
	if r.ConfigHash != "" && s.ConfigHash != "" && r.ConfigHash != s.ConfigHash {
		return fmt.Errorf("%w: checkpoint of config %.12s, job is %.12s", ErrSpecMismatch, r.ConfigHash, s.ConfigHash)
	}
	// The latest checkpoint is one of the current plan, or the committed
	// state itself (recorded after its commit, the plan may have moved
	// on); a state of an abandoned plan is not the job's.
	if !control.CheckpointOfJob(c.Generation, r.Step, s.Generation, s.Committed.Generation, s.Committed.Step) {
		return fmt.Errorf("%w: checkpoint of step %d from generation %d, current is %d (committed: step %d of generation %d)",
			ErrStaleGeneration, r.Step, c.Generation, s.Generation, s.Committed.Step, s.Committed.Generation)
	}
	if s.Checkpoint == nil || r.Step >= s.Checkpoint.Step {
		s.Checkpoint = &r
	}
	return nil
}

// replan computes the plan from the previous plan and the live members and
// starts a new generation when the plan or the status changed (or always,
// with force). Ranks: the survivors of the previous plan keep their
// relative order (a worker that re-registered under its id keeps its
// place); newcomers follow in join order, each placed right after the last
// planned worker of its host (see placeByHost); at most MaxWorkers are planned,
// the rest wait as standbys. The job runs with at least MinWorkers, and
// before it first runs after a SetSpecCommand with StartWorkers, with at
// least StartWorkers.
func replan(s *JobState, force bool) {
	if s.Status == StatusDone || s.Status == StatusFailed {
		return
	}
	excluded := make(map[Exclusion]bool, len(s.Excluded))
	for _, e := range s.Excluded {
		excluded[e] = true
	}
	live := make(map[string]Worker, len(s.Live))
	for _, w := range s.Live {
		if !excluded[Exclusion{ID: w.ID, JoinRevision: w.JoinRevision}] {
			live[w.ID] = w
		}
	}
	next := make([]Worker, 0, len(live))
	for _, w := range s.Plan {
		if l, ok := live[w.ID]; ok {
			next = append(next, l)
			delete(live, w.ID)
		}
	}
	for _, w := range s.Live { // join order
		if _, ok := live[w.ID]; !ok {
			continue
		}
		if s.MaxWorkers > 0 && len(next) >= s.MaxWorkers {
			next = append(next, w) // a standby: never ahead of a planned worker
			continue
		}
		next = placeByHost(next, w)
	}
	if s.MaxWorkers > 0 && len(next) > s.MaxWorkers {
		next = next[:s.MaxWorkers]
	}
	status := StatusWaiting
	switch {
	case len(s.Spec) == 0 && s.ConfigHash == "":
	case len(next) >= max(s.MinWorkers, s.StartWorkers):
		status = StatusRunning
		s.Ran = true
		s.StartWorkers = 0
	case s.Ran:
		status = StatusPaused
	}
	if force || status != s.Status || !slices.Equal(next, s.Plan) {
		s.Generation++
		s.Plan = next
		s.Status = status
	}
}

// placeByHost adds w to the ring order next: right after the last worker
// with w's HostID, so that the workers of one host (the processes of one
// pod, one per GPU) are ring neighbours and talk through shared memory,
// leaving TCP to the links between hosts; at the end when no worker of its
// host is planned (or it names no host).
func placeByHost(next []Worker, w Worker) []Worker {
	if w.HostID != "" {
		for i := len(next) - 1; i >= 0; i-- {
			if next[i].HostID == w.HostID {
				return slices.Insert(next, i+1, w)
			}
		}
	}
	return append(next, w)
}

// String is the failure as the user reads it: "worker ID: reason".
func (f Failure) String() string {
	if f.WorkerID == "" {
		return f.Reason
	}
	return "worker " + f.WorkerID + ": " + f.Reason
}

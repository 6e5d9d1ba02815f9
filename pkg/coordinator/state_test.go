package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func mustApply(t *testing.T, s JobState, cmd Command) JobState {
	t.Helper()
	n, err := apply(s, cmd)
	if err != nil {
		t.Fatalf("apply %s: %v", cmd.Op, err)
	}
	return n
}

func spec(min, max int) Command {
	return Command{Op: opSetSpec, Spec: &SetSpecCommand{Spec: []byte(`{"model":"resnet18"}`), MinWorkers: min, MaxWorkers: max}}
}

// members builds an UpdateMembers command; each id's join revision is its
// position in the argument list plus base.
var rev int64

func members(ids ...string) Command {
	rev += 10
	ws := make([]Worker, len(ids))
	for i, id := range ids {
		ws[i] = Worker{ID: id, Address: "127.0.0.1:" + id, JoinRevision: joinRev[id]}
		if ws[i].JoinRevision == 0 {
			ws[i].JoinRevision = rev + int64(i)
			joinRev[id] = ws[i].JoinRevision
		}
	}
	return Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: ws, Revision: rev}}
}

var joinRev = map[string]int64{}

func planIDs(s JobState) string {
	ids := make([]string, len(s.Plan))
	for i, w := range s.Plan {
		ids[i] = w.ID
	}
	return strings.Join(ids, ",")
}

func TestPlanningKeepsSurvivorOrderAndBounds(t *testing.T) {
	clear(joinRev)
	s := initialState()
	s = mustApply(t, s, members("a", "b"))
	if s.Status != StatusWaiting || planIDs(s) != "a,b" {
		t.Fatalf("without a spec: status %s plan %s", s.Status, planIDs(s))
	}
	s = mustApply(t, s, spec(2, 3))
	if s.Status != StatusRunning {
		t.Fatalf("status %s, want running", s.Status)
	}
	g := s.Generation
	steps := []struct {
		live       []string
		wantPlan   string
		wantStatus Status
	}{
		{[]string{"a", "b", "c"}, "a,b,c", StatusRunning},
		{[]string{"a", "c"}, "a,c", StatusRunning},             // b died: c moves up, order kept
		{[]string{"a", "c", "d", "e"}, "a,c,d", StatusRunning}, // max 3: e waits
		{[]string{"c", "d", "e"}, "c,d,e", StatusRunning},      // a died: the standby joins
		{[]string{"c"}, "c", StatusPaused},                     // below min
		{[]string{"c", "b"}, "c,b", StatusRunning},             // b is back
		{[]string{"f", "b", "c"}, "c,b,f", StatusRunning},      // newcomer last, survivors keep order
	}
	for i, st := range steps {
		s = mustApply(t, s, members(st.live...))
		if planIDs(s) != st.wantPlan || s.Status != st.wantStatus {
			t.Fatalf("step %d: plan %s status %s, want %s %s", i, planIDs(s), s.Status, st.wantPlan, st.wantStatus)
		}
		if s.Generation != g+1 {
			t.Fatalf("step %d: generation %d, want %d", i, s.Generation, g+1)
		}
		g = s.Generation
	}
	// The same membership again is not a new plan.
	same := members("f", "b", "c")
	same.Members.Members = s.Live
	if s2 := mustApply(t, s, same); s2.Generation != g {
		t.Fatalf("unchanged membership bumped generation %d -> %d", g, s2.Generation)
	}
	// An older snapshot (a deposed leader's) is ignored.
	old := members("x")
	old.Members.Revision = 1
	if s2 := mustApply(t, s, old); planIDs(s2) != planIDs(s) || s2.Generation != g {
		t.Fatalf("stale snapshot applied: plan %s", planIDs(s2))
	}
}

// Workers of one host (the processes of one pod) become ring neighbours
// whatever order they join in; survivors keep their relative order and a
// standby never displaces a planned worker.
func TestPlanningGroupsWorkersOfAHost(t *testing.T) {
	join := func(s JobState, byHost map[string]string, ids ...string) JobState {
		c := members(ids...)
		for i := range c.Members.Members {
			c.Members.Members[i].HostID = byHost[c.Members.Members[i].ID]
		}
		return mustApply(t, s, c)
	}
	clear(joinRev)
	host := map[string]string{"n0a": "n0", "n0b": "n0", "n1a": "n1", "n1b": "n1", "n2a": "n2"}
	s := mustApply(t, initialState(), spec(1, 5))
	s = join(s, host, "n0a", "n1a")
	s = join(s, host, "n0a", "n1a", "n1b", "n0b") // n1b joined before n0b
	if got := planIDs(s); got != "n0a,n0b,n1a,n1b" {
		t.Fatalf("plan %s, want the workers of each host side by side: n0a,n0b,n1a,n1b", got)
	}
	s = join(s, host, "n0a", "n1a", "n1b", "n0b", "n2a")
	if got := planIDs(s); got != "n0a,n0b,n1a,n1b,n2a" {
		t.Fatalf("plan %s, want a new host last", got)
	}
	// At MaxWorkers a newcomer of a planned host waits as a standby.
	s = mustApply(t, initialState(), spec(1, 2))
	s = join(s, host, "n1a", "n2a")
	s = join(s, host, "n1a", "n2a", "n1b")
	if got := planIDs(s); got != "n1a,n2a" {
		t.Fatalf("plan %s, want n1a,n2a (n1b a standby)", got)
	}
}

func TestFailureReportExcludesSuspectUntilItRejoins(t *testing.T) {
	clear(joinRev)
	s := mustApply(t, mustApply(t, initialState(), spec(1, 0)), members("a", "b", "c"))
	g := s.Generation
	fail := func(gen uint64, suspect string) Command {
		return Command{Op: opReportFailure, Failure: &FailureCommand{WorkerID: "a", Generation: gen, Reason: "allreduce deadline", SuspectID: suspect}}
	}
	s = mustApply(t, s, fail(g, "b"))
	if planIDs(s) != "a,c" || s.Generation != g+1 || s.LastFailure.SuspectID != "b" {
		t.Fatalf("after failure: plan %s gen %d", planIDs(s), s.Generation)
	}
	// The other survivor's report of the same failure is stale: no new plan.
	if s2 := mustApply(t, s, fail(g, "b")); s2.Generation != s.Generation {
		t.Fatal("stale failure report re-planned")
	}
	// b's lease is still alive (stalled): it stays out.
	s = mustApply(t, s, members("a", "b", "c"))
	if planIDs(s) != "a,c" {
		t.Fatalf("stalled b re-admitted: %s", planIDs(s))
	}
	// b re-registers (new join revision): admitted again, at the end.
	delete(joinRev, "b")
	s = mustApply(t, s, members("a", "c", "b"))
	if planIDs(s) != "a,c,b" || len(s.Excluded) != 0 {
		t.Fatalf("re-registered b: plan %s excluded %v", planIDs(s), s.Excluded)
	}
	// A report without a suspect rebuilds the ring with the same members.
	g = s.Generation
	s = mustApply(t, s, fail(g, ""))
	if planIDs(s) != "a,c,b" || s.Generation != g+1 {
		t.Fatalf("no-suspect failure: plan %s gen %d", planIDs(s), s.Generation)
	}
}

func TestCommitRules(t *testing.T) {
	clear(joinRev)
	s := mustApply(t, mustApply(t, initialState(), spec(2, 0)), members("a", "b"))
	g := s.Generation
	commit := func(id string, gen uint64, step int64, done bool) Command {
		return Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: id, Generation: gen, Step: step, Epoch: 1, Cursor: step * 10, Done: done}}
	}
	cases := []struct {
		cmd  Command
		want error
	}{
		{commit("b", g, 5, false), ErrNotRankZero},
		{commit("a", g-1, 5, false), ErrStaleGeneration},
		{commit("a", g, -1, false), ErrInvalid},
	}
	for _, c := range cases {
		if _, err := apply(s, c.cmd); !errors.Is(err, c.want) {
			t.Errorf("commit %+v: got %v, want %v", c.cmd.Commit, err, c.want)
		}
	}
	s = mustApply(t, s, commit("a", g, 5, false))
	if s.Committed != (Committed{Step: 5, Epoch: 1, Cursor: 50, Generation: g}) {
		t.Fatalf("committed %+v", s.Committed)
	}
	if _, err := apply(s, commit("a", g, 4, false)); !errors.Is(err, ErrStepRegression) {
		t.Fatalf("regression: %v", err)
	}
	// Below min: paused, no commits.
	s = mustApply(t, s, members("a"))
	if _, err := apply(s, commit("a", s.Generation, 6, false)); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("commit while paused: %v", err)
	}
	s = mustApply(t, s, members("a", "c"))
	// A new generation may restart from an older step (rollback to a checkpoint).
	s = mustApply(t, s, commit("a", s.Generation, 3, false))
	// A different spec is refused once steps are committed.
	other := spec(2, 0)
	other.Spec.Spec = []byte(`{"model":"resnet50"}`)
	if _, err := apply(s, other); !errors.Is(err, ErrSpecMismatch) {
		t.Fatalf("spec change: %v", err)
	}
	other.Spec.Replace = true
	if _, err := apply(s, other); err != nil {
		t.Fatalf("spec replace: %v", err)
	}
	g = s.Generation
	s = mustApply(t, s, commit("a", g, 10, true))
	if s.Status != StatusDone || s.Generation != g+1 {
		t.Fatalf("done: status %s gen %d", s.Status, s.Generation)
	}
	if _, err := apply(s, commit("a", s.Generation, 11, false)); !errors.Is(err, ErrJobDone) {
		t.Fatalf("commit after done: %v", err)
	}
	if s2 := mustApply(t, s, members("a")); s2.Generation != s.Generation || s2.Status != StatusDone {
		t.Fatal("membership change re-planned a finished job")
	}
}

func TestBadCommands(t *testing.T) {
	s := initialState()
	for _, c := range []Command{
		{Op: "nope"},
		{Op: opSetSpec},
		{Op: opSetSpec, Spec: &SetSpecCommand{MinWorkers: 0}},
		{Op: opSetSpec, Spec: &SetSpecCommand{MinWorkers: 3, MaxWorkers: 2}},
		{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: []Worker{{ID: "a"}, {ID: "a"}}}},
		{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: []Worker{{ID: "a/b"}}}},
		{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{Ref: CheckpointRef{Step: 1}}},
		{Op: opSetLeader, Leader: &LeaderRef{}},
	} {
		n, err := apply(s, c)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", c, err)
		}
		if !reflect.DeepEqual(n, s) {
			t.Errorf("%+v: state changed on error", c)
		}
	}
}

func TestCheckpointRefKeepsNewest(t *testing.T) {
	s := mustApply(t, initialState(), spec(1, 0))
	rec := func(step int64, hash string) Command {
		return Command{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{Ref: CheckpointRef{Step: step, Key: "k", ConfigHash: hash}}}
	}
	s = mustApply(t, s, rec(20, s.ConfigHash))
	s = mustApply(t, s, rec(10, ""))
	if s.Checkpoint.Step != 20 {
		t.Fatalf("older checkpoint replaced newer: %d", s.Checkpoint.Step)
	}
	if _, err := apply(s, rec(30, "other")); !errors.Is(err, ErrSpecMismatch) {
		t.Fatalf("foreign checkpoint: %v", err)
	}
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func TestFSMSnapshotRestoreRoundTrip(t *testing.T) {
	clear(joinRev)
	f := NewFSM()
	var idx uint64
	feed := func(c Command) {
		idx++
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(applyResult); r.err != nil {
			t.Fatal(r.err)
		}
	}
	_, changed := f.Watch()
	feed(spec(1, 4))
	select {
	case <-changed:
	default:
		t.Fatal("Watch channel not closed by a change")
	}
	feed(members("a", "b", "c"))
	st := f.State()
	feed(Command{Op: opCommitStep, Commit: &CommitCommand{WorkerID: "a", Generation: st.Generation, Step: 7, Epoch: 1, Cursor: 896}})
	feed(Command{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{Ref: CheckpointRef{Step: 7, Key: "/ringtrain/j/checkpoints/7", Accuracy: 0.4}}})
	feed(Command{Op: opSetLeader, Leader: &LeaderRef{ID: "n1", ControlAddr: "127.0.0.1:9"}})
	// Garbage in the log is refused, not fatal.
	idx++
	if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: []byte("{")}).(applyResult); !errors.Is(r.err, ErrInvalid) {
		t.Fatalf("garbage command: %v", r.err)
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v closed=%v", err, sink.closed)
	}
	g := NewFSM()
	if err := g.Restore(ioNopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if want, got := f.State(), g.State(); !reflect.DeepEqual(want, got) {
		t.Fatalf("restored state differs:\nwant %+v\n got %+v", want, got)
	}
	if got := g.State(); got.Committed.Step != 7 || planIDs(got) != "a,b,c" || got.Leader.ID != "n1" {
		t.Fatalf("restored %+v", got)
	}
	if err := g.Restore(ioNopCloser{strings.NewReader(`{"version":99}`)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("future snapshot version: %v", err)
	}
}

type ioNopCloser struct {
	r interface{ Read([]byte) (int, error) }
}

func (c ioNopCloser) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c ioNopCloser) Close() error               { return nil }

// A start quorum (the --workers N that a coordinator starts itself) holds
// the job until that many workers are live, however they trickle in: a
// job of two local workers never trains its first steps on one because
// the other registered later. Once it runs, MinWorkers applies again; a
// coordinator started again on the same state waits for the quorum anew,
// and the members recorded by its earlier run do not count.
func TestStartWorkersHoldTheJobUntilAllJoined(t *testing.T) {
	clear(joinRev)
	quorum := func(n int) Command {
		c := spec(1, 4)
		c.Spec.StartWorkers = n
		return c
	}
	s := mustApply(t, initialState(), quorum(2))
	s = mustApply(t, s, members("w1"))
	if s.Status != StatusWaiting || s.StartWorkers != 2 {
		t.Fatalf("one of two start workers live: status %s (start workers %d), want waiting", s.Status, s.StartWorkers)
	}
	s = mustApply(t, s, members("w1", "w0"))
	if s.Status != StatusRunning || planIDs(s) != "w1,w0" || s.StartWorkers != 0 {
		t.Fatalf("both live: status %s plan %s start workers %d, want running w1,w0 0", s.Status, planIDs(s), s.StartWorkers)
	}
	s = mustApply(t, s, members("w1"))
	if s.Status != StatusRunning || planIDs(s) != "w1" {
		t.Fatalf("after the start, w0 died: status %s plan %s, want running on w1 (min workers 1)", s.Status, planIDs(s))
	}
	// The coordinator starts again: Live still lists w1 of the earlier run.
	s = mustApply(t, s, quorum(2))
	if s.Status != StatusPaused || len(s.Live) != 0 {
		t.Fatalf("restarted: status %s live %v, want paused with no live members until a new snapshot", s.Status, s.Live)
	}
	s = mustApply(t, s, members("w1"))
	if s.Status != StatusPaused {
		t.Fatalf("restarted, one of two live: status %s, want paused", s.Status)
	}
	s = mustApply(t, s, members("w1", "w0"))
	if s.Status != StatusRunning || len(s.Plan) != 2 {
		t.Fatalf("restarted, both live: status %s plan %s, want running on two", s.Status, planIDs(s))
	}
	// Without a quorum (a cluster's coordinator) one worker is enough.
	clear(joinRev)
	s = mustApply(t, initialState(), quorum(0))
	if s = mustApply(t, s, members("a")); s.Status != StatusRunning {
		t.Fatalf("no start quorum, min workers 1: status %s, want running", s.Status)
	}
	// A quorum above MaxWorkers could never be met.
	if _, err := apply(initialState(), quorum(5)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("start workers 5 of at most 4: %v, want ErrInvalid", err)
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// The tests in this file drive the worker's state machine over the
// in-memory twins of its collaborators: no processes, no sockets, a tiny
// model on the CPU. Each test is a scenario the e2e tests run for real.

// testJob is a job of steps steps (4 an epoch) with a checkpoint every
// 2 steps.
func testJob(t *testing.T, epochs int) job.Spec {
	s := tinySpec()
	s.Data.SyntheticSize = 64
	s.Epochs = epochs
	s.Checkpoint = job.Checkpoint{EverySteps: 2, Keep: 3, Resume: true}
	s.DeadlineSec = 1
	s.OutputDir = t.TempDir()
	return s
}

// fastTiming shortens every wait of the machine to test scale.
func fastTiming() Timing {
	return Timing{ProbeTimeout: 50 * time.Millisecond, SuspectWait: 50 * time.Millisecond, ExcludedGrace: 100 * time.Millisecond,
		RegisterRetry: 5 * time.Millisecond, WatchRetry: 5 * time.Millisecond, RingSlack: 500 * time.Millisecond,
		WriterLag: 10 * time.Second, CallTimeout: time.Second, RegisterTimeout: time.Second, ReportTimeout: time.Second,
		FlushTimeout: time.Second}
}

// harness is one job's in-memory world: control plane, membership, ring
// network, a shared checkpoint store and the liveness of each address.
type harness struct {
	t       *testing.T
	spec    job.Spec
	train   data.Dataset
	test    data.Dataset
	ctrl    *MemControlPlane
	members *MemMembership
	net     *allreduce.InmemNetwork
	store   *checkpoint.MemStore
	disk    *checkpoint.Store          // when set, the workers' store instead of store
	backend func(id string) nn.Backend // when set, each worker's backend (else the CPU's)
	logs    *observer.ObservedLogs
	log     *zap.Logger

	mu      sync.Mutex // guards dead, stalled, workers
	dead    map[string]bool
	stalled map[string]*stallTransport
	workers map[string]*testWorker
}

type testWorker struct {
	id     string
	addr   string // its ring address
	m      *machine
	cancel context.CancelFunc
	done   chan error
	// hash and step are the trainer's state when run returned.
	hash uint64
	step int64

	mu    sync.Mutex // guards trace
	trace []string   // "from>to" transitions
}

func newHarness(t *testing.T, spec job.Spec) *harness {
	train, test, err := OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{t: t, spec: spec, train: train, test: test, ctrl: NewMemControlPlane(spec.Hash()),
		members: NewMemMembership(), net: allreduce.NewInmemNetwork(), store: checkpoint.NewMemStore(spec.Checkpoint.Keep),
		logs: logs, log: zap.New(core), dead: map[string]bool{}, stalled: map[string]*stallTransport{}, workers: map[string]*testWorker{}}
	t.Cleanup(h.stopAll)
	return h
}

// probe is the in-memory liveness probe: a dead worker refuses at once, a
// stalled one does not answer before the deadline.
func (h *harness) probe(ctx context.Context, addr string) error {
	h.mu.Lock()
	dead, st := h.dead[addr], h.stalled[addr]
	h.mu.Unlock()
	switch {
	case dead:
		return fmt.Errorf("%s: connection refused", addr)
	case st != nil && st.isStalled():
		<-ctx.Done()
		return fmt.Errorf("%s did not answer: %w", addr, ctx.Err())
	}
	return nil
}

// start starts worker id from step 0, with a ring address of its own
// (id, then id+"'" for a replacement).
func (h *harness) start(id string) *testWorker {
	h.t.Helper()
	h.mu.Lock()
	addr := id
	if w := h.workers[id]; w != nil {
		addr = w.addr + "'"
	}
	h.mu.Unlock()
	var b nn.Backend = nn.NewCPU(1)
	if h.backend != nil {
		b = h.backend(id)
	}
	tr, err := NewTrainer(h.spec, b, h.train, h.test)
	if err != nil {
		h.t.Fatal(err)
	}
	st := &stallTransport{Transport: h.net.Transport(addr), gate: make(chan struct{})}
	w := &testWorker{id: id, addr: addr, done: make(chan error, 1)}
	var store CheckpointStore = h.store
	if h.disk != nil {
		store = h.disk
	}
	w.m = newMachine(deps{ID: id, Job: h.spec.Name, Log: h.log.With(zap.String("worker", id)), Spec: h.spec, Trainer: tr,
		Ring: st, Control: h.ctrl, Members: h.members, MembersName: "memory", Store: store, Probe: h.probe,
		Member: cluster.Member{ID: id, Address: addr, Device: "cpu"}, TTL: time.Second, Patience: time.Second, Timing: fastTiming()})
	w.m.trace = func(from, to state) {
		w.mu.Lock()
		w.trace = append(w.trace, from.String()+">"+to.String())
		w.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	h.mu.Lock()
	h.workers[id] = w
	h.stalled[addr] = st
	h.mu.Unlock()
	go func() {
		err := w.m.run(ctx)
		w.hash, _ = tr.StateHash()
		w.step = tr.Step
		tr.Close()
		w.done <- err
	}()
	return w
}

// kill makes worker id die as a killed process would: its ring breaks at
// once, its address refuses probes, and it stops.
func (h *harness) kill(id string) {
	h.mu.Lock()
	w := h.workers[id]
	h.dead[w.addr] = true
	h.mu.Unlock()
	h.net.Partition(w.addr)
	w.cancel()
	if err := w.wait(h.t); err != nil {
		h.t.Logf("killed worker %s: %v", id, err)
	}
}

func (h *harness) stopAll() {
	h.mu.Lock()
	ws := make([]*testWorker, 0, len(h.workers))
	for _, w := range h.workers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	for _, w := range ws {
		w.cancel()
		select {
		case err := <-w.done:
			w.done <- err
		case <-time.After(10 * time.Second):
			h.t.Errorf("worker %s did not stop", w.id)
		}
	}
}

// wait waits for the worker's run to return.
func (w *testWorker) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("worker %s did not finish", w.id)
		return nil
	}
}

func (w *testWorker) transitions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.trace)
}

// publish waits until ids are registered and publishes their plan.
func (h *harness) publish(ids ...string) uint64 {
	h.t.Helper()
	h.awaitMembers(func(have []string) bool {
		for _, id := range ids {
			if !slices.Contains(have, id) {
				return false
			}
		}
		return true
	})
	h.mu.Lock()
	addrs := make([]string, len(ids))
	for i, id := range ids {
		addrs[i] = h.workers[id].addr
	}
	h.mu.Unlock()
	return h.ctrl.Publish(ids, addrs)
}

func (h *harness) awaitMembers(cond func([]string) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.members.Await(ctx, func(m *MemMembership) bool { return cond(m.Members()) }); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) await(what string, cond func(MemControlState) bool) MemControlState {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.ctrl.Await(ctx, cond); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
	return h.ctrl.Snapshot()
}

func committedAtLeast(step int64) func(MemControlState) bool {
	return func(s MemControlState) bool { return s.Committed.Step >= step }
}

func jobDone(s MemControlState) bool { return s.State == controlpb.JobState_JOB_STATE_DONE }

// totalSteps is the job's length in steps.
func (h *harness) totalSteps() int64 {
	return int64(h.spec.Epochs * (h.spec.Data.SyntheticSize / h.spec.GlobalBatch))
}

// finishes waits for the job to be done and checks the end state: the
// final step committed, every given worker ended cleanly with the same
// weights, the model saved.
func (h *harness) finishes(ws ...*testWorker) {
	h.t.Helper()
	s := h.await("job done", jobDone)
	if s.Committed.Step != h.totalSteps() {
		h.t.Errorf("final commit at step %d, want %d", s.Committed.Step, h.totalSteps())
	}
	var hashes []uint64
	for _, w := range ws {
		if err := w.wait(h.t); err != nil {
			h.t.Errorf("worker %s: %v", w.id, err)
		}
		if w.step != h.totalSteps() {
			h.t.Errorf("worker %s ended at step %d, want %d", w.id, w.step, h.totalSteps())
		}
		hashes = append(hashes, w.hash)
	}
	for i := 1; i < len(hashes); i++ {
		if hashes[i] != hashes[0] {
			h.t.Errorf("worker %s ended with weights %x, worker %s with %x", ws[i].id, hashes[i], ws[0].id, hashes[0])
		}
	}
	if got := h.logs.FilterMessage("saved model").Len(); got != 1 {
		h.t.Errorf("%d workers saved the model, want 1", got)
	}
	if _, err := nn.ReadSafetensorsFile(filepath.Join(h.spec.OutputDir, ModelFile)); err != nil {
		h.t.Errorf("final model: %v", err)
	}
}

// logged returns the logged messages of worker id that contain s.
func (h *harness) logged(id, s string) int {
	n := 0
	for _, e := range h.logs.All() {
		if strings.Contains(e.Message, s) && e.ContextMap()["worker"] == id {
			n++
		}
	}
	return n
}

// stallTransport wraps a transport whose links can be stalled as a
// SIGSTOPped process's would: accepted, but nothing moves.
type stallTransport struct {
	allreduce.Transport
	mu    sync.Mutex // guards stall
	stall bool
	gate  chan struct{} // closed when the stall ends
}

func (s *stallTransport) setStalled(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stall == on {
		return
	}
	s.stall = on
	if on {
		s.gate = make(chan struct{})
	} else {
		close(s.gate)
	}
}

func (s *stallTransport) isStalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stall
}

func (s *stallTransport) wait(closed <-chan struct{}) error {
	s.mu.Lock()
	on, gate := s.stall, s.gate
	s.mu.Unlock()
	if !on {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-closed:
		return allreduce.ErrClosed
	}
}

func (s *stallTransport) Open(ctx context.Context, p allreduce.Plan) (allreduce.Link, error) {
	l, err := s.Transport.Open(ctx, p)
	if err != nil || l == nil {
		return l, err
	}
	return &stallLink{Link: l, t: s, closed: make(chan struct{})}, nil
}

type stallLink struct {
	allreduce.Link
	t      *stallTransport
	once   sync.Once
	closed chan struct{}
}

func (l *stallLink) Send(h *allreduce.Header, size int, fill func([]byte)) error {
	if err := l.t.wait(l.closed); err != nil {
		return err
	}
	return l.Link.Send(h, size, fill)
}

func (l *stallLink) Recv(fn func(*allreduce.Header, [][]byte) error) error {
	if err := l.t.wait(l.closed); err != nil {
		return err
	}
	return l.Link.Recv(fn)
}

func (l *stallLink) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Link.Close()
}

// TestMachineJoinsAndTrainsToTheEnd: two workers register, take the plan,
// train every step through checkpoints and epoch ends, and finish with the
// same weights; rank 0 commits the end.
func TestMachineJoinsAndTrainsToTheEnd(t *testing.T) {
	h := newHarness(t, testJob(t, 2))
	w0, w1 := h.start("w0"), h.start("w1")
	h.publish("w0", "w1")
	h.finishes(w0, w1)
	want := []string{"registering>waiting", "waiting>syncing", "syncing>training", "training>committing", "committing>training", "training>finishing", "finishing>done"}
	for _, w := range []*testWorker{w0, w1} {
		tr := w.transitions()
		for _, x := range want {
			if !slices.Contains(tr, x) {
				t.Errorf("worker %s: no transition %s in %v", w.id, x, tr)
			}
		}
	}
	s := h.ctrl.Snapshot()
	if len(s.Failures) != 0 {
		t.Errorf("failures reported in a clean run: %v", s.Failures)
	}
	if len(s.Checkpoints) == 0 {
		t.Error("no checkpoint recorded")
	}
}

// TestMachineCleansOrphansAtStart: rank 0's checkpoint writer starts by
// removing what an interrupted write left in a real checkpoint directory
// (a temporary directory of an unfinished write), then writes as usual.
func TestMachineCleansOrphansAtStart(t *testing.T) {
	h := newHarness(t, testJob(t, 1))
	dir := t.TempDir()
	disk, err := checkpoint.NewStore(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	h.disk = disk
	orphan := filepath.Join(dir, ".tmp-"+filepath.Base(disk.StepDir(2))+"-1234")
	if err := os.MkdirAll(orphan, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan, checkpoint.ModelFile), []byte("half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	w0, w1 := h.start("w0"), h.start("w1")
	h.publish("w0", "w1")
	h.finishes(w0, w1)
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the interrupted write's temporary directory is still there (stat: %v)", err)
	}
	if steps, _ := disk.Steps(); len(steps) == 0 {
		t.Fatal("no checkpoint written to the directory")
	}
}

// TestMachinePeerDeathMidStep: a worker of three dies while the others
// train; its ring neighbours find it dead and name it, and under the next
// plan the survivors roll back to the committed step (from memory, not
// from the store) and finish.
func TestMachinePeerDeathMidStep(t *testing.T) {
	h := newHarness(t, testJob(t, 3))
	w0, w1 := h.start("w0"), h.start("w1")
	h.start("w2")
	h.publish("w0", "w1", "w2")
	// Kill w2 once the others have trained past a committed step, so that
	// they must roll back.
	h.await("steps past a committed one", func(s MemControlState) bool {
		past := map[string]bool{}
		for _, r := range s.Metrics {
			if s.Committed.Step >= 2 && r.GetStep() > s.Committed.Step {
				past[r.GetWorkerId()] = true
			}
		}
		return past["w0"] && past["w1"]
	})
	h.kill("w2")
	s := h.await("failure naming w2", func(s MemControlState) bool {
		return slices.ContainsFunc(s.Failures, func(f *controlpb.FailureReport) bool { return f.GetSuspectId() == "w2" })
	})
	for _, f := range s.Failures {
		if f.GetSuspectId() != "" && f.GetSuspectId() != "w2" {
			t.Errorf("%s named %s as the suspect, not w2", f.GetWorkerId(), f.GetSuspectId())
		}
	}
	committed := h.ctrl.Snapshot().Committed.Step
	h.publish("w0", "w1")
	h.finishes(w0, w1)
	for _, w := range []*testWorker{w0, w1} {
		for _, e := range h.logs.FilterMessage("ring failed; reporting and waiting for a new plan").All() {
			if e.ContextMap()["worker"] == w.id && e.ContextMap()["step"].(int64) > committed && h.logged(w.id, "rolling back in memory") == 0 {
				t.Errorf("worker %s failed at step %v past the committed %d but did not roll back in memory", w.id, e.ContextMap()["step"], committed)
			}
		}
		// A survivor recovers, or (when the other one's report brought
		// the new plan first) drops the broken plan for it.
		if tr := w.transitions(); !slices.Contains(tr, "training>recovering") && !slices.Contains(tr, "training>waiting") {
			t.Errorf("worker %s did not leave the broken plan: %v", w.id, tr)
		}
		if n := h.logged(w.id, "loaded checkpoint"); n != 0 {
			t.Errorf("survivor %s read its state from the store %d times (the committed step is in memory)", w.id, n)
		}
	}
}

// TestMachineStalledPeer: a worker stops answering (its ring accepts but
// nothing moves). Its neighbours' collectives time out, their probes find
// it silent and name it; the others finish without it. The stalled
// worker, left out of a plan with room for it, registers again.
func TestMachineStalledPeer(t *testing.T) {
	h := newHarness(t, testJob(t, 3))
	w0, w1, w2 := h.start("w0"), h.start("w1"), h.start("w2")
	h.publish("w0", "w1", "w2")
	h.await("a committed step", committedAtLeast(2))
	h.mu.Lock()
	st := h.stalled["w2"]
	h.mu.Unlock()
	st.setStalled(true)
	h.await("failure naming w2", func(s MemControlState) bool {
		return slices.ContainsFunc(s.Failures, func(f *controlpb.FailureReport) bool { return f.GetSuspectId() == "w2" })
	})
	// The survivors must not finish the job before w2 notices it was left
	// out (on an idle machine they trained the rest of it in ~100 ms, the
	// ExcludedGrace): the coordinator refuses commits, as one without a
	// raft leader does, until w2 has registered again.
	h.ctrl.RefuseCommits(fmt.Errorf("%w: raft group has no leader", control.ErrNotLeader))
	h.publish("w0", "w1")
	st.setStalled(false) // it wakes up: left out of a plan that has room
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.members.Await(ctx, func(m *MemMembership) bool { return m.Registrations("w2") >= 2 }); err != nil {
		t.Errorf("the excluded worker did not register again: %v", err)
	}
	if s := h.ctrl.Snapshot().State; s != controlpb.JobState_JOB_STATE_RUNNING {
		t.Errorf("job state %v while commits were refused", s)
	}
	h.ctrl.RefuseCommits(nil)
	h.finishes(w0, w1)
	w2.cancel()
	if err := w2.wait(t); err != nil {
		t.Errorf("stalled worker: %v", err)
	}
}

// TestMachineFinalCommitWaitsForLeader: the coordinator has no leader
// when rank 0 declares the job done (its done commit is refused with
// ErrNotLeader, as a replica without a leader answers). Rank 0 retries,
// with pauses, instead of waiting for a plan that will never come; once a
// leader is back the job ends.
func TestMachineFinalCommitWaitsForLeader(t *testing.T) {
	h := newHarness(t, testJob(t, 2))
	w0, w1 := h.start("w0"), h.start("w1")
	h.publish("w0", "w1")
	h.await("a committed step", committedAtLeast(2))
	h.ctrl.RefuseCommits(fmt.Errorf("%w: raft group has no leader", control.ErrNotLeader))
	deadline := time.Now().Add(60 * time.Second)
	for h.logged("w0", "final commit: no coordinator leader; retrying") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("rank 0 did not retry its refused final commit")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := h.ctrl.Snapshot().State; s != controlpb.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job state %v while commits are refused", s)
	}
	if n := h.logged("w0", "final commit refused; waiting for the next plan"); n != 0 {
		t.Fatalf("rank 0 went waiting for a plan %d times", n)
	}
	h.ctrl.RefuseCommits(nil)
	h.finishes(w0, w1)
}

// TestMachineLeaderChange: the coordinator fails over twice during the
// job (every plan watch breaks, calls fail until the new leader is found,
// including the final commit's): the workers reconnect and finish without
// reporting a ring failure.
func TestMachineLeaderChange(t *testing.T) {
	h := newHarness(t, testJob(t, 3))
	w0, w1 := h.start("w0"), h.start("w1")
	h.publish("w0", "w1")
	h.await("a committed step", committedAtLeast(2))
	h.ctrl.LeaderChange(4)
	h.await("a commit after the change", committedAtLeast(8))
	h.ctrl.LeaderChange(2)
	h.finishes(w0, w1)
	if n := h.logged("w0", "plan watch ended; reconnecting") + h.logged("w1", "plan watch ended; reconnecting"); n < 2 {
		t.Errorf("%d plan watches reopened, want one per worker and change at least", n)
	}
	if f := h.ctrl.Snapshot().Failures; len(f) != 0 {
		t.Errorf("a leader change made workers report ring failures: %v", f)
	}
}

// TestMachineDamagedCheckpoint: a replacement joins after a death and the
// committed step's checkpoint is damaged: it falls back to the previous
// checkpoint, the ranks disagree on their starting state, and all load
// the same older checkpoint, then finish identically.
func TestMachineDamagedCheckpoint(t *testing.T) {
	h := newHarness(t, testJob(t, 3))
	w0 := h.start("w0")
	h.start("w1")
	h.publish("w0", "w1")
	s := h.await("two checkpoints", func(s MemControlState) bool { return s.Committed.Step >= 4 })
	h.kill("w1")
	h.await("failure naming w1", func(s MemControlState) bool {
		return slices.ContainsFunc(s.Failures, func(f *controlpb.FailureReport) bool { return f.GetSuspectId() == "w1" })
	})
	s = h.ctrl.Snapshot()
	if !h.store.Damage(s.Committed.Step) {
		t.Fatalf("no checkpoint of the committed step %d", s.Committed.Step)
	}
	w1b := h.start("w1") // a replacement: same id, a new ring address
	h.publish("w0", "w1")
	h.finishes(w0, w1b)
	if n := h.logged("w1", "checkpoint unusable; falling back to an older one"); n == 0 {
		t.Error("the replacement did not log the damaged checkpoint")
	}
	if n := h.logged("w0", "ranks start from different states; all load the checkpoint of the oldest step"); n == 0 {
		t.Error("rank 0 did not notice that the ranks started from different states")
	}
}

// TestMachineScaleUp: one worker trains alone; a second joins, loads the
// committed state from the store, and both finish with the same weights.
func TestMachineScaleUp(t *testing.T) {
	h := newHarness(t, testJob(t, 3))
	w0 := h.start("w0")
	h.publish("w0")
	h.await("a committed step", committedAtLeast(2))
	w1 := h.start("w1")
	h.publish("w0", "w1")
	h.finishes(w0, w1)
	if n := h.logged("w1", "loaded checkpoint"); n == 0 {
		t.Error("the joiner did not load the committed state from the store")
	}
	if !slices.Contains(w0.transitions(), "training>waiting") {
		t.Errorf("w0 did not leave its one-worker plan for the new one: %v", w0.transitions())
	}
}

// TestMachineRefusedCommitsKeepCommittedCheckpoint: the coordinator refuses
// every commit (a raft group without a leader) while the workers train on
// and rank 0 keeps writing checkpoints, more than retention keeps. The
// committed step's checkpoint must survive retention, so that a
// replacement (and the survivor, whose memory no longer holds that state)
// can load it under the next plan and the job finishes.
func TestMachineRefusedCommitsKeepCommittedCheckpoint(t *testing.T) {
	h := newHarness(t, testJob(t, 6))
	w0 := h.start("w0")
	h.start("w1")
	h.publish("w0", "w1")
	h.await("a committed step", committedAtLeast(2))
	h.ctrl.RefuseCommits(fmt.Errorf("%w: raft group has no leader", control.ErrNotLeader))
	committed := h.ctrl.Snapshot().Committed.Step
	keep := int64(h.spec.Checkpoint.Keep)
	every := int64(h.spec.Checkpoint.EverySteps)
	// Wait until keep+1 newer checkpoints were written: without the
	// protection, retention would have deleted the committed one.
	deadline := time.Now().Add(60 * time.Second)
	for {
		steps, _ := h.store.Steps()
		if len(steps) > 0 && steps[0] >= committed+(keep+1)*every {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints %v: rank 0 did not write %d past the committed step %d", steps, keep+1, committed)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.kill("w1")
	steps, _ := h.store.Steps()
	if !slices.Contains(steps, committed) {
		t.Fatalf("retention deleted the committed step %d's checkpoint: store holds %v", committed, steps)
	}
	if s := h.ctrl.Snapshot().Committed.Step; s != committed {
		t.Fatalf("committed step moved to %d while commits were refused", s)
	}
	warned := 0
	for _, e := range h.logs.FilterMessageSnippet("step not committed").All() {
		if e.Level == zapcore.WarnLevel {
			warned++
		}
	}
	if warned == 0 {
		t.Error("refused commits were not logged at warn level")
	}
	// The refusals end only under the next plan: a commit rank 0 still
	// had in flight (its writer lags the store, and a step can complete
	// as w1 dies) would otherwise be accepted under the old plan and move
	// the committed step before the replacement's plan is published.
	w1b := h.start("w1")
	h.publish("w0", "w1")
	if s := h.ctrl.Snapshot().Committed.Step; s != committed {
		t.Fatalf("committed step moved to %d before the next plan", s)
	}
	h.ctrl.RefuseCommits(nil)
	h.finishes(w0, w1b)
	loaded := false
	for _, e := range h.logs.FilterMessage("loaded checkpoint").All() {
		if e.ContextMap()["worker"] == "w1" && e.ContextMap()["step"] == committed {
			loaded = true
		}
	}
	if !loaded {
		t.Errorf("the replacement did not load the committed step %d's checkpoint from the store", committed)
	}
}

// TestMachineStaleCommitDiscardsItsCheckpoint: when the control plane
// refuses a commit as stale (a newer plan replaced the one that computed
// the state), rank 0 removes that checkpoint, so a job resumed from the
// newest checkpoint on disk cannot pick a state of an abandoned plan; a
// commit refused for another reason keeps its checkpoint (see
// TestMachineRefusedCommitsKeepCommittedCheckpoint). The job then finishes.
func TestMachineStaleCommitDiscardsItsCheckpoint(t *testing.T) {
	h := newHarness(t, testJob(t, 6))
	w0 := h.start("w0")
	w1 := h.start("w1")
	h.publish("w0", "w1")
	h.await("a committed step", committedAtLeast(2))
	h.ctrl.RefuseCommits(fmt.Errorf("%w: commit for an older plan", control.ErrStaleGeneration))
	committed := h.ctrl.Snapshot().Committed.Step
	deadline := time.Now().Add(60 * time.Second)
	for len(h.logs.FilterMessage("stale checkpoint removed").All()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("rank 0 removed no two refused checkpoints")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.ctrl.RefuseCommits(nil)
	for _, e := range h.logs.FilterMessage("stale checkpoint removed").All() {
		step, _ := e.ContextMap()["step"].(int64)
		if step <= committed {
			t.Fatalf("removed step %d, not newer than the committed %d", step, committed)
		}
		if steps, _ := h.store.Steps(); slices.Contains(steps, step) {
			// A later write of the same step (after the refusals ended) is
			// a committed one; before that, the store must not hold it.
			if s := h.ctrl.Snapshot().Committed.Step; s < step {
				t.Fatalf("refused step %d still in the store %v (committed %d)", step, steps, s)
			}
		}
	}
	h.finishes(w0, w1)
}

// brokenBackend is the CPU backend whose Sync fails for good once broken,
// as a GPU backend's does after a sticky error (out of memory, an illegal
// address): every later step fails the same way in this process.
type brokenBackend struct {
	nn.Backend
	broken atomic.Bool
}

func (b *brokenBackend) Sync() error {
	if b.broken.Load() {
		return errors.New("gpu: CUDA driver error: cuMemAlloc(536870912) failed with CUresult 2 (CUDA_ERROR_OUT_OF_MEMORY: out of memory)")
	}
	return b.Backend.Sync()
}

// TestMachineBrokenBackendExits: a worker whose backend has failed for
// good (a sticky device error) stops with that error at the first failed
// step, so that its process ends and a supervisor starts a fresh one (a
// new device context), instead of failing step after step under plan
// after plan.
func TestMachineBrokenBackendExits(t *testing.T) {
	h := newHarness(t, testJob(t, 6))
	var bb *brokenBackend
	h.backend = func(id string) nn.Backend {
		bb = &brokenBackend{Backend: nn.NewCPU(1)}
		return bb
	}
	w0 := h.start("w0")
	h.publish("w0")
	h.await("a committed step", committedAtLeast(2))
	bb.broken.Store(true)
	err := w0.wait(t)
	if !errors.Is(err, ErrBackendFailed) || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
		t.Fatalf("worker ended with %v, want the backend's error", err)
	}
	t.Logf("worker: %v; %d failures reported", err, len(h.ctrl.Snapshot().Failures))
}

// TestMachineRefusesOtherJobsCheckpoints: a job starting (step 0, resume
// on) over a checkpoint directory that holds only another job's
// checkpoints (its state directory gone, other settings) stops with an
// input error instead of starting afresh, which would let retention delete
// them; without resuming it trains.
func TestMachineRefusesOtherJobsCheckpoints(t *testing.T) {
	dir := t.TempDir()
	disk, err := checkpoint.NewStore(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	first := newHarness(t, testJob(t, 1))
	first.disk = disk
	w0 := first.start("w0")
	first.publish("w0")
	first.finishes(w0)
	before, err := disk.Steps()
	if err != nil || len(before) == 0 {
		t.Fatalf("the first job left no checkpoints: %v %v", before, err)
	}

	spec := testJob(t, 3)
	spec.Optimizer.LR /= 2
	h := newHarness(t, spec)
	h.disk = disk
	w := h.start("w0")
	h.publish("w0")
	err = w.wait(t)
	if !errors.Is(err, checkpoint.ErrMismatch) || !IsInputError(err) || !strings.Contains(err.Error(), "other settings") {
		t.Fatalf("worker ended with %v, want an input error naming the other job's checkpoints", err)
	}
	if after, _ := disk.Steps(); !slices.Equal(after, before) {
		t.Fatalf("the other job's checkpoints changed: %v, were %v", after, before)
	}

	spec.Checkpoint.Resume = false
	h = newHarness(t, spec)
	h.disk = disk
	w = h.start("w0")
	h.publish("w0")
	h.finishes(w)
}

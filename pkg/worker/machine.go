package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/observe"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// state is a state of the worker's protocol (see the package doc for the
// diagram). Each state's code is in the file named after it.
type state int

const (
	stateRegistering state = iota // registering.go
	stateWaiting                  // waiting.go
	stateSyncing                  // syncing.go
	stateTraining                 // training.go
	stateCommitting               // committing.go
	stateFinishing                // finishing.go
	stateRecovering               // recovering.go
	stateBenching                 // benching.go
	stateDone
)

func (s state) String() string {
	return [...]string{"registering", "waiting", "syncing", "training", "committing", "finishing", "recovering", "benching", "done"}[s]
}

// Timing holds the worker's tuning knobs. The defaults suit a real job;
// unit tests shorten them.
type Timing struct {
	// ProbeTimeout bounds the liveness probe of one ring neighbour after a
	// ring failure: a killed peer refuses at once, a stalled one never
	// answers.
	ProbeTimeout time.Duration
	// SuspectWait is how long a worker that found no suspect waits for a
	// newer plan before it reports the failure without one (the dead
	// worker's neighbours usually report it first).
	SuspectWait time.Duration
	// ExcludedGrace is how long a worker waits, left out of a plan with
	// room for it, before it registers again.
	ExcludedGrace time.Duration
	// RegisterRetry is the pause between registration attempts.
	RegisterRetry time.Duration
	// WatchRetry is the first pause before a plan watch that ended is
	// opened again, or a refused final commit is sent again (doubling up
	// to 20 times it).
	WatchRetry time.Duration
	// RingSlack is added to the spec's collective deadline to bound the
	// opening of a ring.
	RingSlack time.Duration
	// WriterLag bounds the backpressure wait for a checkpoint write.
	WriterLag time.Duration
	// CallTimeout bounds a commit, a failure report or a manifest update.
	CallTimeout time.Duration
	// RegisterTimeout bounds one registration attempt.
	RegisterTimeout time.Duration
	// ReportTimeout bounds sending one metrics report.
	ReportTimeout time.Duration
	// FlushTimeout bounds the wait for queued reports before the final commit.
	FlushTimeout time.Duration
}

// DefaultTiming returns the knobs a real job uses.
func DefaultTiming() Timing {
	return Timing{
		ProbeTimeout:    1 * time.Second,
		SuspectWait:     2 * time.Second,
		ExcludedGrace:   3 * time.Second,
		RegisterRetry:   500 * time.Millisecond,
		WatchRetry:      100 * time.Millisecond,
		RingSlack:       5 * time.Second,
		WriterLag:       2 * time.Minute,
		CallTimeout:     10 * time.Second,
		RegisterTimeout: 5 * time.Second,
		ReportTimeout:   5 * time.Second,
		FlushTimeout:    5 * time.Second,
	}
}

// deps are the machine's collaborators and settings: Run builds them from
// the real control plane, etcd, gRPC ring and checkpoint directory; the
// unit tests from their in-memory twins.
type deps struct {
	ID      string
	Job     string // the job's name (for the log)
	Log     *zap.Logger
	Spec    job.Spec
	Trainer *Trainer
	Ring    allreduce.Transport
	Control ControlPlane
	Members Membership
	// MembersName names the membership service in errors ("etcd [...]").
	MembersName string
	Store       CheckpointStore
	// Probe checks that the ring endpoint at addr is served by a live
	// process (within ctx's deadline).
	Probe func(ctx context.Context, addr string) error
	// Member is this worker's registration; TTL its lease's time to live;
	// Patience bounds the first registration.
	Member   cluster.Member
	TTL      time.Duration
	Patience time.Duration
	Timing   Timing
	Samples  *sampleLog // nil unless the sample log is on
	// Metrics are the worker's Prometheus metrics (new ones when nil).
	Metrics *observe.WorkerMetrics
	// ReportSpool is the file reports spill to while the coordinator
	// does not take them (default: in the temporary directory).
	ReportSpool string
}

// machine is one worker's protocol: a loop over states, each a method
// that does its work and returns the next state. Only the loop goroutine
// runs the states; the background goroutines (membership, plan watch,
// reporter, checkpoint writer) talk to it through plans, rereg, reports
// and mem.
type machine struct {
	deps
	t     *Trainer
	plans *planBox
	rereg chan struct{} // asks keepRegistered for a new registration
	// reports is the queue of metric reports, sent in order, none lost.
	reports *reportQueue

	// Loop state (the loop goroutine only).
	seen    uint64          // the newest plan generation taken
	plan    *controlpb.Plan // the plan being trained
	failure error           // why the last plan's ring failed (recovering)
	sess    *session        // the open ring of plan, nil outside it
	writer  *checkpoint.Writer
	// lastAcc and lastLoss are the test accuracy and loss of the last
	// evaluation, of the weights of step lastEvalStep: only that step's
	// checkpoint carries them (a later one holds other weights).
	lastAcc      *float64
	lastLoss     *float64
	lastEvalStep int64
	// partial is set when a step failed half-way: the trainer's state is
	// then not exactly the state of its step.
	partial bool
	// benchRan is the id of the last benchmark round this worker took.
	benchRan uint64
	trace    func(from, to state) // tests observe transitions

	mu  sync.Mutex                     // guards mem and submitted
	mem map[int64]*checkpoint.Snapshot // in-memory states at checkpoint steps, by step
	// submitted is when rank 0 handed each checkpoint to the writer, by step.
	submitted map[int64]time.Time
}

// session is what a worker holds while it trains under one plan: the
// ring, the reducer, the loader and the cancellation of its collectives.
type session struct {
	rank, world int
	ring        *allreduce.Ring
	red         *allreduce.Reducer
	ld          *Feed // this rank's batches (Trainer.Feed)
	// ctx ends the plan's collectives: on a newer plan or when the run ends.
	ctx     context.Context
	closers []func() // run in reverse order by close
	// images and since measure throughput for the reports.
	images int
	since  time.Time
}

func (s *session) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

func newMachine(d deps) *machine {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Timing == (Timing{}) {
		d.Timing = DefaultTiming()
	}
	if d.Metrics == nil {
		d.Metrics = observe.NewWorkerMetrics()
	}
	if d.Trainer != nil {
		name := "host CPU"
		if r, ok := d.Trainer.B.(nn.DeviceMemoryReporter); ok {
			name = r.DeviceName()
		}
		precision := d.Spec.Precision
		if d.Trainer.B.Name() == "cpu" || precision == "" {
			precision = "fp32" // the CPU backend computes in float32
		}
		d.Metrics.SetDevice(d.Trainer.B.Name(), name, precision)
	}
	if d.ReportSpool == "" {
		d.ReportSpool = filepath.Join(os.TempDir(), fmt.Sprintf("ringtrain-reports-%s-%d.bin", d.ID, os.Getpid()))
	}
	return &machine{deps: d, t: d.Trainer, plans: newPlanBox(), rereg: make(chan struct{}, 1),
		reports: newReportQueue(1024, d.ReportSpool), mem: map[int64]*checkpoint.Snapshot{}, submitted: map[int64]time.Time{}}
}

// run registers, then runs the states until the job is done, ctx ends
// (nil: a clean stop) or an error that no new plan fixes. It returns only
// after every goroutine it started has ended.
func (m *machine) run(ctx context.Context) error {
	reg, err := m.registering(ctx)
	if err != nil || reg == nil {
		return err
	}
	if m.trace != nil {
		m.trace(stateRegistering, stateWaiting)
	}
	ctx, stop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stop()
		bg.Wait()
	}()
	bg.Add(3)
	go func() { defer bg.Done(); m.keepRegistered(ctx, reg) }()
	go func() { defer bg.Done(); m.watchPlans(ctx) }()
	go func() { defer bg.Done(); m.reporter(ctx) }()
	err = m.loop(ctx, stateWaiting)
	m.drainReports()
	if qerr := m.reports.close(); qerr != nil {
		m.Log.Warn("metric reports lost", zap.Error(qerr))
	}
	return err
}

// loop runs the states from st on until done.
func (m *machine) loop(ctx context.Context, st state) error {
	defer func() {
		m.endSession()
		if m.writer != nil {
			m.writer.Close()
			m.writer = nil
		}
	}()
	for st != stateDone {
		next, err := m.enter(ctx, st)
		if err != nil {
			return err
		}
		if m.trace != nil {
			m.trace(st, next)
		}
		if next != stateTraining && next != stateCommitting && next != stateFinishing {
			m.endSession() // the plan's ring is no longer needed
		}
		st = next
	}
	return nil
}

func (m *machine) enter(ctx context.Context, st state) (state, error) {
	switch st {
	case stateWaiting:
		return m.waiting(ctx)
	case stateSyncing:
		return m.syncing(ctx)
	case stateTraining:
		return m.training(ctx)
	case stateCommitting:
		return m.committing(ctx)
	case stateFinishing:
		return m.finishing(ctx)
	case stateRecovering:
		return m.recovering(ctx)
	case stateBenching:
		return m.benching(ctx)
	}
	return stateDone, nil
}

func (m *machine) endSession() {
	if m.sess != nil {
		m.sess.close()
		m.sess = nil
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

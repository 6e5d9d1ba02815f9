package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ModelFile is the final model in the output directory (torchvision names).
const ModelFile = "model.safetensors"

// Config is a worker process's configuration.
type Config struct {
	ID           string   // unique in the job (default: hostname-pid)
	Coordinators []string // control addresses of the coordinator replicas
	ListenAddr   string   // ring endpoint (default 127.0.0.1:0)
	// Advertise is the ring address other workers dial (default: the
	// listener's address, which must then not be a wildcard like 0.0.0.0).
	Advertise string
	Device    string // overrides the spec's device when set
	Threads   int    // overrides the spec's threads when > 0
	// JoinTimeout bounds reaching the coordinator and etcd (default 15 s):
	// a worker that cannot reach them fails with a clear error.
	JoinTimeout time.Duration
	// SampleLog, when set, is a directory where the worker appends the
	// dataset indices it trains at every step (one JSON line each, see
	// SampleRecord) to samples-<id>-<pid>.jsonl. The environment variable
	// RINGTRAIN_SAMPLE_LOG sets it too.
	SampleLog string
	// TLS secures every connection of the worker (control API, ring,
	// probes, etcd endpoints given as https) with mutual TLS; nil is
	// plaintext.
	TLS *tlsconf.Config
	// NoSharedMemory keeps ring traffic between workers on the same host
	// on TCP instead of the shared-memory fast path.
	NoSharedMemory bool
	// OpenBackend opens the compute backend (device, threads, GPU
	// precision); required.
	OpenBackend func(device string, threads int, precision string) (nn.Backend, error)
	Log         *zap.Logger
}

// ErrUnreachable is returned when the coordinator or etcd cannot be reached.
var ErrUnreachable = errors.New("worker: cannot reach the control plane")

// probeTimeout bounds the liveness probe of one ring neighbour after a
// ring failure: a killed peer refuses at once, a stalled one never sends
// its HTTP/2 preface.
const probeTimeout = 1 * time.Second

// Run joins the job and trains until it is done, ctx is cancelled, or an
// unrecoverable error occurs. A broken ring, a lost etcd lease or a
// coordinator failover are not fatal: the worker reports, re-registers or
// reconnects and goes on with the next plan.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.ID == "" {
		h, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 15 * time.Second
	}
	if cfg.SampleLog == "" {
		cfg.SampleLog = os.Getenv("RINGTRAIN_SAMPLE_LOG")
	}
	if cfg.OpenBackend == nil {
		return fmt.Errorf("%w: worker config without OpenBackend", ErrSpec)
	}
	log = log.With(zap.String("worker", cfg.ID))

	// The ring endpoint first: its address is part of the registration.
	tr, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{
		ServerCreds: cfg.TLS.ServerCreds(), ClientCreds: cfg.TLS.ClientCreds(), DisableSharedMemory: cfg.NoSharedMemory})
	if err != nil {
		return err
	}
	defer tr.Close()
	laddr, err := tr.Listen(cfg.ListenAddr)
	if err != nil {
		return err
	}
	addr, err := advertised(laddr, cfg.Advertise)
	if err != nil {
		return err
	}

	cl, err := coordinator.NewClient(cfg.Coordinators, cfg.TLS.DialOption())
	if err != nil {
		return err
	}
	defer cl.Close()
	jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	hostID, _ := os.Hostname()
	info := &controlpb.WorkerInfo{Id: cfg.ID, Address: addr.String(), HostId: hostID, Device: cfg.Device, Pid: int64(os.Getpid())}
	jr, err := cl.Join(jctx, info)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: coordinator %v did not answer within %s (is it running, is the address right, and do both sides use the same --tls-* settings?): %w",
			ErrUnreachable, cfg.Coordinators, cfg.JoinTimeout, err)
	}
	spec, err := job.Unmarshal(jr.GetSpec())
	if err != nil {
		return err
	}
	if cfg.Device != "" {
		spec.Device = cfg.Device
	}
	if cfg.Threads > 0 {
		spec.Threads = cfg.Threads
	}

	ectx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	ec, err := cluster.Connect(ectx, cluster.Options{Endpoints: jr.GetEtcdEndpoints(), DialTimeout: cfg.JoinTimeout, TLS: cfg.TLS.EtcdTLS()})
	cancel()
	if err != nil {
		return fmt.Errorf("%w: etcd %v (from the coordinator) did not answer within %s: %w",
			ErrUnreachable, jr.GetEtcdEndpoints(), cfg.JoinTimeout, err)
	}
	defer ec.Close()
	ej, err := ec.Job(jr.GetJob())
	if err != nil {
		return err
	}

	b, err := cfg.OpenBackend(spec.Device, spec.Threads, spec.Precision)
	if err != nil {
		return err
	}
	train, test, err := OpenDatasets(ctx, spec)
	if err != nil {
		return err
	}
	t, err := NewTrainer(spec, b, train, test)
	if err != nil {
		return err
	}
	defer t.Close()
	// Overlapped gradient copies of a GPU worker (see Trainer.Overlap).
	t.Overlap = os.Getenv("RINGTRAIN_GPU_OVERLAP") == "1"

	w := &runner{cfg: cfg, log: log, spec: spec, t: t, tr: tr, cl: cl, ej: ej, plans: newPlanBox(), rereg: make(chan struct{}, 1),
		reports: make(chan *controlpb.MetricsReport, 1024)}
	if cfg.SampleLog != "" {
		sl, err := openSampleLog(cfg.SampleLog, cfg.ID)
		if err != nil {
			return err
		}
		defer sl.Close()
		w.samples = sl
	}
	ttl := time.Duration(jr.GetMemberTtlMs()) * time.Millisecond
	member := cluster.Member{ID: cfg.ID, Address: addr.String(), HostID: hostID, Device: b.Name(), PID: os.Getpid()}
	// A replacement may find its id still held by the lease of the process
	// it replaces: retry until that lease has expired.
	reg, err := w.register(ctx, member, ttl, cfg.JoinTimeout+ttl)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: register in etcd %v: %w", ErrUnreachable, jr.GetEtcdEndpoints(), err)
	}
	log.Info("joined", zap.String("job", jr.GetJob()), zap.String("ring", addr.String()), zap.String("backend", b.Name()))

	ctx, stop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stop()
		bg.Wait()
	}()
	bg.Add(3)
	go func() { defer bg.Done(); w.keepRegistered(ctx, reg, member, ttl) }()
	go func() { defer bg.Done(); w.watchPlans(ctx) }()
	go func() { defer bg.Done(); w.reporter(ctx) }()
	err = w.loop(ctx)
	w.drainReports()
	return err
}

// register registers m, retrying while the id is held by an older lease
// or etcd does not answer, for at most patience.
func (w *runner) register(ctx context.Context, m cluster.Member, ttl, patience time.Duration) (*cluster.Registration, error) {
	deadline := time.Now().Add(patience)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reg, err := w.ej.Register(rctx, m, ttl)
		cancel()
		if err == nil {
			return reg, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		if errors.Is(err, cluster.ErrMemberExists) {
			w.log.Info("id still registered by an earlier process; waiting for its lease to expire", zap.Error(err))
		} else {
			w.log.Warn("registration failed; retrying", zap.Error(err))
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

// keepRegistered holds the membership: when the lease is lost (etcd was
// unreachable for longer than the TTL) it registers again, so that the
// coordinator plans this worker in again. It revokes the lease when ctx
// ends (a clean leave).
func (w *runner) keepRegistered(ctx context.Context, reg *cluster.Registration, m cluster.Member, ttl time.Duration) {
	for {
		select {
		case <-ctx.Done():
			_ = reg.Close()
			return
		case <-reg.Done():
			w.log.Warn("membership lease lost; registering again")
		case <-w.rereg:
		}
		_ = reg.Close()
		for {
			var err error
			reg, err = w.register(ctx, m, ttl, 24*time.Hour)
			if err == nil {
				w.log.Info("registered again")
				break
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// watchPlans follows the coordinator's plans into w.plans for as long as
// ctx lives: a plan stream that ends (coordinator restarted, leader
// failover, network trouble) is opened again.
func (w *runner) watchPlans(ctx context.Context) {
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		after := w.plans.generation()
		err := w.cl.WatchPlan(ctx, w.cfg.ID, after, func(p *controlpb.Plan) error {
			w.plans.set(p)
			pause = 100 * time.Millisecond
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("plan watch ended; reconnecting", zap.Error(err))
		sleepCtx(ctx, pause)
		pause = min(2*pause, 2*time.Second)
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

// planBox holds the newest plan seen; changed is closed when it changes.
type planBox struct {
	mu      sync.Mutex // guards p and changed
	p       *controlpb.Plan
	changed chan struct{}
}

func newPlanBox() *planBox { return &planBox{changed: make(chan struct{})} }

// set keeps p when it is newer than the held plan.
func (b *planBox) set(p *controlpb.Plan) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p != nil && p.GetGeneration() <= b.p.GetGeneration() {
		return
	}
	b.p = p
	close(b.changed)
	b.changed = make(chan struct{})
}

// get returns the newest plan (nil before the first) and a channel closed
// when a newer one arrives.
func (b *planBox) get() (*controlpb.Plan, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.p, b.changed
}

func (b *planBox) generation() uint64 {
	p, _ := b.get()
	return p.GetGeneration()
}

// drainReports sends what is still queued (the last epoch's figures).
func (w *runner) drainReports() {
	for {
		select {
		case m := <-w.reports:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = w.cl.ReportMetrics(ctx, m)
			cancel()
			w.pending.Done()
		default:
			return
		}
	}
}

// advertised is the ring address to register: adv when given, else the
// listener's address, refused when it is a wildcard (other workers could
// not dial it).
func advertised(l net.Addr, adv string) (net.Addr, error) {
	if adv != "" {
		a, err := net.ResolveTCPAddr("tcp", adv)
		if err != nil {
			return nil, fmt.Errorf("worker: --advertise %q: %w", adv, err)
		}
		return a, nil
	}
	if t, ok := l.(*net.TCPAddr); ok && t.IP.IsUnspecified() {
		return nil, fmt.Errorf("worker: listening on %s: give the address other workers reach this one at with --advertise HOST:%d", l, t.Port)
	}
	return l, nil
}

type runner struct {
	cfg   Config
	log   *zap.Logger
	spec  job.Spec
	t     *Trainer
	tr    *allreduce.GRPCTransport
	cl    *coordinator.Client
	ej    *cluster.Job
	plans *planBox
	rereg chan struct{} // asks keepRegistered for a new registration
	// reports is the queue of metric reports, sent in order.
	reports chan *controlpb.MetricsReport
	pending sync.WaitGroup // counts queued and in-flight reports
	samples *sampleLog     // nil unless the sample log is on

	plan    *controlpb.Plan // the plan being trained; only the loop goroutine uses it
	store   *checkpoint.Store
	writer  *checkpoint.Writer
	mu      sync.Mutex                     // guards mem
	mem     map[int64]*checkpoint.Snapshot // in-memory states at checkpoint steps, by step
	lastAcc *float64
}

// nextPlan waits for a plan newer than generation after in which this
// worker has a rank and the job runs (or the job is done). A worker left
// out of a running plan that has room for it (it was reported as a
// suspect, e.g. after a stall) registers again, which lifts the exclusion.
func (w *runner) nextPlan(ctx context.Context, after uint64) (*controlpb.Plan, error) {
	var outSince time.Time
	for {
		p, changed := w.plans.get()
		if p != nil && p.GetGeneration() > after {
			after = p.GetGeneration()
			w.log.Info("plan", zap.Uint64("generation", p.GetGeneration()), zap.String("state", p.GetState().String()),
				zap.Int32("rank", p.GetYourRank()), zap.Int("world", len(p.GetMembers())), zap.Int64("committed", p.GetCommitted().GetStep()))
			if p.GetState() == controlpb.JobState_JOB_STATE_DONE {
				return p, nil
			}
			if p.GetState() == controlpb.JobState_JOB_STATE_RUNNING && p.GetYourRank() >= 0 {
				return p, nil
			}
			outSince = time.Time{}
			if p.GetYourRank() < 0 && (p.GetMaxWorkers() == 0 || len(p.GetMembers()) < int(p.GetMaxWorkers())) {
				outSince = time.Now()
			}
		}
		var check <-chan time.Time
		if !outSince.IsZero() {
			check = time.After(time.Until(outSince.Add(excludedGrace)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-check:
			w.log.Warn("left out of a plan with room for this worker; registering again")
			select {
			case w.rereg <- struct{}{}:
			default:
			}
			outSince = time.Time{}
		}
	}
}

// excludedGrace is how long a worker waits, left out of a plan with room
// for it, before it registers again (a new registration normally shows up
// in a plan within the coordinator's settle delay).
const excludedGrace = 3 * time.Second

func (w *runner) loop(ctx context.Context) error {
	var err error
	w.store, err = checkpoint.NewStore(filepath.Join(w.spec.OutputDir, "checkpoints"), w.spec.Checkpoint.Keep)
	if err != nil {
		return err
	}
	w.mem = map[int64]*checkpoint.Snapshot{}
	defer func() {
		if w.writer != nil {
			w.writer.Close()
		}
	}()
	var seen uint64
	for {
		p, err := w.nextPlan(ctx, seen)
		if err != nil {
			return nil // cancelled: a clean stop
		}
		seen = p.GetGeneration()
		if p.GetState() == controlpb.JobState_JOB_STATE_DONE {
			w.log.Info("job done")
			return nil
		}
		w.plan = p
		if err := w.syncState(p); err != nil {
			return err
		}
		done, err := w.runPlan(ctx, p)
		if done {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			w.reportFailure(ctx, p, err)
		}
	}
}

// ringError marks an error of the ring (opening it or a collective): the
// plan's ring is broken and a new plan is needed.
type ringError struct {
	open bool // the ring could not be opened
	err  error
}

func (e *ringError) Error() string { return e.err.Error() }
func (e *ringError) Unwrap() error { return e.err }

// reportFailure tells the coordinator that the ring of plan p failed,
// naming a suspect when a liveness probe of the ring neighbours (of every
// member when the ring could not even be opened) finds one that is dead or
// stalled. Without a suspect it first waits briefly for a newer plan: the
// dead worker's neighbours report it, and an unqualified report arriving
// first would make a plan that still contains it.
func (w *runner) reportFailure(ctx context.Context, p *controlpb.Plan, err error) {
	var re *ringError
	openFailed := errors.As(err, &re) && re.open
	suspect := w.findSuspect(ctx, p, openFailed)
	w.log.Warn("ring failed; reporting and waiting for a new plan", zap.Error(err), zap.String("suspect", suspect),
		zap.Uint64("generation", p.GetGeneration()), zap.Int64("step", w.t.Step))
	if suspect == "" {
		_, changed := w.plans.get()
		if w.plans.generation() > p.GetGeneration() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if w.plans.generation() > p.GetGeneration() {
				return
			}
		case <-time.After(2 * time.Second):
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.cl.ReportFailure(rctx, &controlpb.FailureReport{WorkerId: w.cfg.ID, Generation: p.GetGeneration(),
		Reason: err.Error(), SuspectId: suspect}); err != nil && ctx.Err() == nil {
		w.log.Warn("failure not reported", zap.Error(err))
	}
}

// findSuspect probes the ring neighbours of this worker in plan p (every
// other member when all is true) and returns the id of the first that does
// not answer, or "".
func (w *runner) findSuspect(ctx context.Context, p *controlpb.Plan, all bool) string {
	members := p.GetMembers()
	world := len(members)
	rank := int(p.GetYourRank())
	if world < 2 || rank < 0 {
		return ""
	}
	var cands []*controlpb.PlanMember
	if all {
		for _, m := range members {
			if int(m.GetRank()) != rank {
				cands = append(cands, m)
			}
		}
	} else {
		byRank := make(map[int]*controlpb.PlanMember, world)
		for _, m := range members {
			byRank[int(m.GetRank())] = m
		}
		cands = append(cands, byRank[(rank+world-1)%world])
		if world > 2 {
			cands = append(cands, byRank[(rank+1)%world])
		}
	}
	type result struct {
		id  string
		err error
	}
	res := make(chan result, len(cands))
	for _, m := range cands {
		go func(m *controlpb.PlanMember) {
			res <- result{m.GetId(), probe(ctx, m.GetAddress(), probeTimeout, w.cfg.TLS)}
		}(m)
	}
	suspect := ""
	for range cands {
		r := <-res
		if r.err != nil && suspect == "" && ctx.Err() == nil {
			w.log.Warn("ring neighbour does not answer", zap.String("peer", r.id), zap.Error(r.err))
			suspect = r.id
		}
	}
	return suspect
}

// syncState brings the trainer to the plan's committed step: from memory
// when this worker holds that state, otherwise from the checkpoint on disk
// (falling back to the newest verified one before it, with a log line).
func (w *runner) syncState(p *controlpb.Plan) error {
	target := p.GetCommitted().GetStep()
	if target == 0 && w.t.Step == 0 {
		return w.resumeFromDisk() // a fresh start, or a restarted job
	}
	defer w.forgetAfter(target)
	if w.t.Step == target && w.memAt(target) != nil {
		return nil
	}
	if s := w.memAt(target); s != nil {
		w.log.Info("rolling back in memory", zap.Int64("from", w.t.Step), zap.Int64("to", target))
		return w.t.Restore(s)
	}
	return w.loadAtMost(target)
}

// loadAtMost loads the newest verified checkpoint of this job at or before
// step target.
func (w *runner) loadAtMost(target int64) error {
	l, skipped, err := w.store.LoadAtMost(w.spec.Hash(), target)
	for _, s := range skipped {
		w.log.Warn("checkpoint unusable; falling back to an older one", zap.Int64("step", s.Step), zap.Error(s.Err))
	}
	if err != nil {
		if target == 0 {
			return w.freshStart()
		}
		return fmt.Errorf("worker: state of committed step %d: %w", target, err)
	}
	if l.Meta.Step != target {
		w.log.Warn("committed step's checkpoint unusable; resuming from an older one",
			zap.Int64("committed", target), zap.Int64("step", l.Meta.Step))
	}
	w.log.Info("loaded checkpoint", zap.Int64("step", l.Meta.Step), zap.Int64("epoch", l.Meta.Epoch), zap.Int64("cursor", l.Meta.Cursor))
	return w.t.Load(l)
}

// freshStart puts the trainer back to its initial state (step 0).
func (w *runner) freshStart() error {
	if s := w.memAt(0); s != nil {
		return w.t.Restore(s)
	}
	if w.t.Step == 0 {
		return nil
	}
	return fmt.Errorf("worker: no state of step 0 to restart from")
}

// resumeFromDisk loads the newest verified checkpoint of this job when the
// job starts at step 0 and resuming is on (a restarted job).
func (w *runner) resumeFromDisk() error {
	if !w.spec.Checkpoint.Resume {
		return nil
	}
	l, skipped, err := w.store.LoadLatest(w.spec.Hash())
	for _, s := range skipped {
		w.log.Warn("checkpoint unusable; falling back to an older one", zap.Int64("step", s.Step), zap.Error(s.Err))
	}
	if err != nil {
		return nil // none: a fresh start
	}
	w.log.Info("resuming from checkpoint", zap.Int64("step", l.Meta.Step), zap.Int64("epoch", l.Meta.Epoch),
		zap.Int64("cursor", l.Meta.Cursor), zap.String("dir", l.Manifest.Dir))
	return w.t.Load(l)
}

func (w *runner) memAt(step int64) *checkpoint.Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mem[step]
}

// memKeep is how many of the newest snapshots a worker keeps in memory
// (plus step 0): rank 0 queues snapshot n only once n-1 is committed, and
// another rank is at most one checkpoint ahead of rank 0, so the committed
// step is always among its three newest.
const memKeep = 3

// writerLagLimit bounds the backpressure wait for a checkpoint write.
const writerLagLimit = 2 * time.Minute

// remember keeps s as the in-memory state of its step (the memKeep newest
// are kept, plus step 0 for a restart from scratch).
func (w *runner) remember(s *checkpoint.Snapshot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mem[s.Meta.Step] = s
	for len(w.mem) > memKeep+1 {
		oldest := int64(-1)
		for k := range w.mem {
			if k > 0 && (oldest < 0 || k < oldest) {
				oldest = k
			}
		}
		if oldest < 0 || oldest == s.Meta.Step {
			break
		}
		delete(w.mem, oldest)
	}
}

// forgetAfter drops in-memory states newer than step: after a rollback
// they belong to an abandoned timeline.
func (w *runner) forgetAfter(step int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.mem {
		if k > step {
			delete(w.mem, k)
		}
	}
}

// agreeStep checks that every rank starts the plan from the same state:
// the same step and the same weights (a hash of parameters and buffers).
// A joiner whose checkpoint was corrupt may have gone back further than
// the survivors' memory, or a survivor may hold a state of an abandoned
// timeline; on any disagreement every rank loads the newest verified
// checkpoint at or before the oldest step, so all hold identical bytes.
func (w *runner) agreeStep(ctx context.Context, ring *allreduce.Ring, rank, world int) error {
	if world < 2 {
		return nil
	}
	h, err := w.t.StateHash()
	if err != nil {
		return err
	}
	// Four exact float32 lanes per rank: the step and 3x16 bits of hash.
	v := make([]float32, 4*world)
	v[4*rank] = float32(w.t.Step)
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
	w.log.Warn("ranks start from different states; all load the checkpoint of the oldest step",
		zap.Int64("mine", w.t.Step), zap.Int64("oldest", lo))
	if err := w.loadAtMost(lo); err != nil {
		return err
	}
	w.forgetAfter(-1)
	return nil
}

// runPlan trains under one plan until the job is done (done=true), the
// ring fails (a *ringError), or a newer plan arrives (false, nil).
func (w *runner) runPlan(ctx context.Context, p *controlpb.Plan) (done bool, err error) {
	rank, world := int(p.GetYourRank()), len(p.GetMembers())
	peers := make([]string, world)
	for _, m := range p.GetMembers() {
		peers[m.GetRank()] = m.GetAddress()
	}
	comp, err := allreduce.ParseCompression(w.spec.Compression)
	if err != nil {
		return true, err
	}
	rc := allreduce.DefaultConfig(p.GetConfigHash()[:min(16, len(p.GetConfigHash()))], p.GetGeneration(), rank, world)
	rc.Timeout = time.Duration(w.spec.DeadlineSec * float64(time.Second))
	rc.Compression = comp
	octx, cancel := context.WithTimeout(ctx, rc.Timeout+5*time.Second)
	stopOnPlan := w.cancelOnNewPlan(octx, cancel, p.GetGeneration())
	ring, err := allreduce.Open(octx, w.tr, rc, peers)
	stopOnPlan()
	cancel()
	if err != nil {
		if w.plans.generation() > p.GetGeneration() {
			return false, nil // superseded while waiting for the peers
		}
		return false, &ringError{open: true, err: fmt.Errorf("open ring of generation %d: %w", p.GetGeneration(), err)}
	}
	defer ring.Close()
	// A newer plan aborts the ring's collectives at once.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	defer w.cancelOnNewPlan(rctx, rcancel, p.GetGeneration())()
	if err := w.agreeStep(rctx, ring, rank, world); err != nil {
		return w.ringFailed(ctx, p, err)
	}
	if w.spec.BatchNorm == "sync" {
		w.t.Model.SetChannelReducer(ring)
		defer w.t.Model.SetChannelReducer(nil)
	}
	red, err := w.t.NewReducer(ring)
	if err != nil {
		return true, err
	}
	if rank == 0 && w.writer == nil {
		w.writer = checkpoint.NewWriter(w.store, w.onCheckpoint)
	}
	if w.memAt(w.t.Step) == nil {
		// The starting state must be restorable in memory (a rollback
		// to it needs no disk read); rank 0 writes it when it is new.
		if err := w.commitLocal(p.GetGeneration(), world, rank); err != nil {
			return true, err
		}
	}
	ld, err := w.t.Loader(rctx, rank, world)
	if err != nil {
		return true, err
	}
	defer ld.Close()
	w.log.Info("training", zap.Int("rank", rank), zap.Int("world", world), zap.Int64("step", w.t.Step),
		zap.Int("epoch", w.t.Pos.Epoch), zap.Int("cursor", w.t.Pos.Cursor))
	var imgs int
	tick := time.Now()
	for !w.t.Done() {
		if w.plans.generation() > p.GetGeneration() {
			return false, nil // membership changed: re-plan
		}
		fetch := time.Now()
		b, err := ld.Next(rctx)
		dataWait := time.Since(fetch)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			if rctx.Err() != nil {
				return false, nil
			}
			return true, err
		}
		epoch := b.Pos.Epoch
		step := w.t.Step
		w.samples.assigned(p.GetGeneration(), step, b, rank, world)
		res, err := w.t.TrainStep(rctx, b, red, world)
		if err != nil {
			return w.ringFailed(ctx, p, err)
		}
		w.samples.done(p.GetGeneration(), step, rank)
		imgs += res.LocalN
		now := time.Now()
		ips := float64(imgs) / now.Sub(tick).Seconds()
		w.report(&controlpb.MetricsReport{WorkerId: w.cfg.ID, Generation: p.GetGeneration(), Rank: int32(rank),
			Step: w.t.Step, Epoch: int64(epoch), Loss: res.Loss, Accuracy: float64(res.Correct) / float64(max(res.N, 1)),
			ImagesPerSec: ips, Phase: "train", Samples: int64(res.N), Phases: stepPhases(res, dataWait, world, false)})
		if now.Sub(tick) > 5*time.Second {
			imgs, tick = 0, now
		}
		epochEnd := w.t.Pos.Epoch > epoch
		if epochEnd {
			ev, err := w.t.Evaluate(rctx, ring, rank, world, allreduce.Tag{Step: uint64(w.t.Step), Bucket: 1 << 24})
			if err != nil {
				return w.ringFailed(ctx, p, err)
			}
			acc := ev.Accuracy
			w.lastAcc = &acc
			w.report(&controlpb.MetricsReport{WorkerId: w.cfg.ID, Generation: p.GetGeneration(), Rank: int32(rank),
				Step: w.t.Step, Epoch: int64(epoch), Loss: ev.Loss, Accuracy: ev.Accuracy, Phase: "eval", Samples: int64(ev.N)})
			if rank == 0 {
				w.log.Info("epoch done", zap.Int("epoch", epoch+1), zap.Float64("val_loss", ev.Loss), zap.Float64("val_acc", ev.Accuracy))
			}
		}
		if epochEnd || (w.spec.Checkpoint.EverySteps > 0 && w.t.Step%int64(w.spec.Checkpoint.EverySteps) == 0) {
			if err := w.commitLocal(p.GetGeneration(), world, rank); err != nil {
				return true, err
			}
		}
	}
	return w.finish(ctx, p, rank, world)
}

// ringFailed classifies an error of a step under plan p.
func (w *runner) ringFailed(ctx context.Context, p *controlpb.Plan, err error) (bool, error) {
	if ctx.Err() != nil {
		return true, nil
	}
	if w.plans.generation() > p.GetGeneration() {
		return false, nil // aborted for a newer plan
	}
	if errors.Is(err, nn.ErrNonFinite) {
		return true, err // diverged: no plan fixes that
	}
	return false, &ringError{err: err}
}

// cancelOnNewPlan cancels (via cancel) when a plan newer than gen
// arrives; the returned function stops watching.
func (w *runner) cancelOnNewPlan(ctx context.Context, cancel context.CancelFunc, gen uint64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, changed := w.plans.get()
			if p.GetGeneration() > gen {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-changed:
			}
		}
	}()
	return func() { close(stop); <-done }
}

// finish ends the job once its length is reached: rank 0 makes the final
// state durable, saves the model and declares the job done; the other
// ranks wait for that (or for a new plan, when something failed first).
func (w *runner) finish(ctx context.Context, p *controlpb.Plan, rank, world int) (bool, error) {
	if w.memAt(w.t.Step) == nil {
		if err := w.commitLocal(p.GetGeneration(), world, rank); err != nil {
			return true, err
		}
	}
	if rank == 0 {
		if w.writer != nil {
			w.writer.Close() // the final checkpoint is durable and committed
			w.writer = nil
		}
		path := filepath.Join(w.spec.OutputDir, ModelFile)
		if err := nn.SaveWeights(path, w.t.B, w.t.Model.Params(), w.t.Model.Buffers(), map[string]string{
			"format": "pt", "arch": w.spec.Model.Arch, "stem": w.spec.Model.Stem}); err != nil {
			return true, err
		}
		w.log.Info("saved model", zap.String("path", path), zap.Int64("step", w.t.Step))
		w.flushReports(5 * time.Second)
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := w.cl.CommitStep(cctx, &controlpb.CommitStepRequest{WorkerId: w.cfg.ID, Generation: p.GetGeneration(),
				Step: w.t.Step, Epoch: int64(w.t.Pos.Epoch), Cursor: int64(w.t.Pos.Cursor), Done: true})
			cancel()
			switch {
			case err == nil, errors.Is(err, coordinator.ErrJobDone):
				return true, nil
			case ctx.Err() != nil:
				return true, nil
			case errors.Is(err, coordinator.ErrUnreachable):
				w.log.Warn("final commit: coordinator unreachable; retrying", zap.Error(err))
				continue
			default:
				// A newer plan (a failure at the very end): follow it.
				w.log.Warn("final commit refused; waiting for the next plan", zap.Error(err))
				return false, nil
			}
		}
	}
	// Other ranks wait for the coordinator to declare the job done.
	np, err := w.nextPlan(ctx, p.GetGeneration())
	if err != nil || np.GetState() == controlpb.JobState_JOB_STATE_DONE {
		return true, nil
	}
	return false, nil // a failure before the end: follow the new plan
}

// commitLocal snapshots the state (every rank keeps it in memory for a
// rollback); rank 0 also writes it to disk in the background and, once it
// is durable, commits the step to the coordinator under generation gen.
func (w *runner) commitLocal(gen uint64, world, rank int) error {
	start := time.Now()
	s, err := w.t.Snapshot(world, w.lastAcc)
	if err != nil {
		return err
	}
	s.Meta.Generation = gen
	w.remember(s)
	if rank == 0 && w.writer != nil {
		// Backpressure: the previous checkpoint must be durable and
		// committed before this one is queued, so the committed step is
		// always one of the newest snapshots every rank keeps in memory
		// (see remember) and a survivor never reads its state from disk.
		// A disk slower than the checkpoint cadence stalls training here
		// rather than silently widening the rollback.
		if waited := time.Now(); !w.writer.WaitIdle(writerLagLimit) {
			w.log.Warn("previous checkpoint still being written; queueing the next one anyway",
				zap.Duration("waited", time.Since(waited)))
		} else if d := time.Since(waited); d > 100*time.Millisecond {
			w.log.Info("waited for the previous checkpoint write", zap.Duration("waited", d))
		}
		w.writer.Submit(s)
		w.log.Debug("checkpoint captured", zap.Int64("step", s.Meta.Step), zap.Duration("stall", time.Since(start)))
	}
	return nil
}

// onCheckpoint runs on the writer's goroutine after each write. The step is
// committed under the generation that computed it: a state of a plan that
// has since been replaced is refused as stale by the coordinator.
func (w *runner) onCheckpoint(meta checkpoint.Meta, m cluster.Manifest, err error) {
	if err != nil {
		w.log.Error("checkpoint write failed; training goes on, the previous checkpoint stays the newest",
			zap.Int64("step", meta.Step), zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := w.ej.PutManifest(ctx, m)
	if err != nil {
		w.log.Warn("checkpoint manifest not stored in etcd", zap.Error(err))
	}
	w.pruneManifests(ctx)
	acc := 0.0
	if m.Accuracy != nil {
		acc = *m.Accuracy
	}
	if key != "" {
		if _, err := w.cl.RecordCheckpoint(ctx, &controlpb.RecordCheckpointRequest{WorkerId: w.cfg.ID, Generation: meta.Generation,
			Checkpoint: &controlpb.CheckpointRef{Step: m.Step, Epoch: m.Epoch, Key: key, Accuracy: acc, ConfigHash: m.ConfigHash}}); err != nil {
			w.log.Debug("checkpoint not recorded", zap.Error(err))
		}
	}
	if _, err := w.cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: w.cfg.ID, Generation: meta.Generation,
		Step: m.Step, Epoch: m.Epoch, Cursor: m.Cursor}); err != nil {
		w.log.Debug("step not committed", zap.Int64("step", m.Step), zap.Error(err))
	}
	w.log.Info("checkpoint", zap.Int64("step", m.Step), zap.String("dir", m.Dir))
}

// pruneManifests deletes the etcd manifests of checkpoints that retention
// has removed from disk.
func (w *runner) pruneManifests(ctx context.Context) {
	steps, err := w.store.Steps()
	if err != nil {
		return
	}
	onDisk := make(map[int64]bool, len(steps))
	for _, s := range steps {
		onDisk[s] = true
	}
	ms, err := w.ej.ListManifests(ctx)
	if err != nil {
		return
	}
	for _, m := range ms {
		if !onDisk[m.Step] {
			if err := w.ej.DeleteManifest(ctx, m.Step); err != nil {
				w.log.Debug("manifest not pruned", zap.Int64("step", m.Step), zap.Error(err))
			}
		}
	}
}

// report queues metrics for the reporter goroutine, which sends them in
// order without blocking training (when the queue is full, the report is
// dropped: metrics must never slow a step down).
func (w *runner) report(m *controlpb.MetricsReport) {
	w.pending.Add(1)
	select {
	case w.reports <- m:
	default:
		w.pending.Done()
	}
}

// flushReports waits (at most d) until every queued report was sent: the
// final step's figures must reach the coordinator before the job is
// declared done and the coordinator exits.
func (w *runner) flushReports(d time.Duration) {
	done := make(chan struct{})
	go func() { w.pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (w *runner) reporter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-w.reports:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := w.cl.ReportMetrics(rctx, m); err != nil {
				w.log.Debug("metrics not reported", zap.Error(err))
			}
			cancel()
			w.pending.Done()
		}
	}
}

// probe checks that the ring endpoint at addr is served by a live process:
// a gRPC connection becomes ready only after the server's HTTP/2 preface,
// which a killed process (connection refused) or a stopped one (SIGSTOP:
// the kernel accepts, nobody answers) never sends.
func probe(ctx context.Context, addr string, timeout time.Duration, tc *tlsconf.Config) error {
	cc, err := grpc.NewClient(addr, tc.DialOption())
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("worker: ring endpoint %s: %s", addr, s)
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("worker: ring endpoint %s did not answer within %s", addr, timeout)
		}
	}
}

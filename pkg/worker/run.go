package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ModelFile is the final model in the output directory (torchvision names).
const ModelFile = "model.safetensors"

// Config is a worker process's configuration.
type Config struct {
	ID           string   // unique in the job (default: hostname-pid)
	Coordinators []string // control addresses of the coordinator replicas
	ListenAddr   string   // ring endpoint (default 127.0.0.1:0)
	Device       string   // overrides the spec's device when set
	Threads      int      // overrides the spec's threads when > 0
	// JoinTimeout bounds reaching the coordinator and etcd (default 15 s):
	// a worker that cannot reach them fails with a clear error.
	JoinTimeout time.Duration
	// OpenBackend opens the compute backend (device, threads); required.
	OpenBackend func(device string, threads int) (nn.Backend, error)
	Log         *zap.Logger
}

// ErrUnreachable is returned when the coordinator or etcd cannot be reached.
var ErrUnreachable = errors.New("worker: cannot reach the control plane")

// Run joins the job and trains until it is done, ctx is cancelled, or an
// unrecoverable error occurs.
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
	log = log.With(zap.String("worker", cfg.ID))

	// The ring endpoint first: its address is part of the registration.
	tr, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{})
	if err != nil {
		return err
	}
	defer tr.Close()
	addr, err := tr.Listen(cfg.ListenAddr)
	if err != nil {
		return err
	}

	cl, err := coordinator.NewClient(cfg.Coordinators)
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
		return fmt.Errorf("%w: coordinator %v did not answer within %s: %v", ErrUnreachable, cfg.Coordinators, cfg.JoinTimeout, err)
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
	ec, err := cluster.Connect(ectx, cluster.Options{Endpoints: jr.GetEtcdEndpoints(), DialTimeout: cfg.JoinTimeout})
	cancel()
	if err != nil {
		return fmt.Errorf("%w: etcd %v: %v", ErrUnreachable, jr.GetEtcdEndpoints(), err)
	}
	defer ec.Close()
	ej, err := ec.Job(jr.GetJob())
	if err != nil {
		return err
	}

	b, err := cfg.OpenBackend(spec.Device, spec.Threads)
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

	w := &runner{cfg: cfg, log: log, spec: spec, t: t, tr: tr, cl: cl, ej: ej, plans: make(chan *controlpb.Plan, 1),
		reports: make(chan *controlpb.MetricsReport, 1024)}
	ttl := time.Duration(jr.GetMemberTtlMs()) * time.Millisecond
	rctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	reg, err := ej.Register(rctx, cluster.Member{ID: cfg.ID, Address: addr.String(), HostID: hostID, Device: b.Name(), PID: os.Getpid()}, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: register in etcd: %v", ErrUnreachable, err)
	}
	defer reg.Close()
	log.Info("joined", zap.String("job", jr.GetJob()), zap.String("ring", addr.String()), zap.String("backend", b.Name()))

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-reg.Done():
			log.Warn("membership lease lost")
			stop()
		case <-ctx.Done():
		}
	}()
	go func() {
		err := cl.WatchPlan(ctx, cfg.ID, 0, func(p *controlpb.Plan) error {
			select { // latest plan wins
			case <-w.plans:
			default:
			}
			w.plans <- p
			return nil
		})
		if err != nil && ctx.Err() == nil {
			log.Warn("plan watch ended", zap.Error(err))
			stop()
		}
	}()
	go w.reporter(ctx)
	err = w.loop(ctx)
	w.drainReports()
	return err
}

// drainReports sends what is still queued (the last epoch's figures).
func (w *runner) drainReports() {
	for {
		select {
		case m := <-w.reports:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = w.cl.ReportMetrics(ctx, m)
			cancel()
		default:
			return
		}
	}
}

type runner struct {
	cfg   Config
	log   *zap.Logger
	spec  job.Spec
	t     *Trainer
	tr    *allreduce.GRPCTransport
	cl    *coordinator.Client
	ej    *cluster.Job
	plans chan *controlpb.Plan
	// reports is the queue of metric reports, sent in order.
	reports chan *controlpb.MetricsReport

	plan    *controlpb.Plan
	store   *checkpoint.Store
	writer  *checkpoint.Writer
	mu      sync.Mutex                     // guards mem
	mem     map[int64]*checkpoint.Snapshot // in-memory committed states, by step
	lastAcc *float64
}

// nextPlan waits for a plan in which this worker has a rank and the job runs.
func (w *runner) nextPlan(ctx context.Context) (*controlpb.Plan, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case p := <-w.plans:
			w.log.Info("plan", zap.Uint64("generation", p.GetGeneration()), zap.String("state", p.GetState().String()),
				zap.Int32("rank", p.GetYourRank()), zap.Int("world", len(p.GetMembers())))
			if p.GetState() == controlpb.JobState_JOB_STATE_DONE {
				return p, nil
			}
			if p.GetState() == controlpb.JobState_JOB_STATE_RUNNING && p.GetYourRank() >= 0 {
				return p, nil
			}
		}
	}
}

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
	for {
		p, err := w.nextPlan(ctx)
		if err != nil {
			return nil // cancelled: a clean stop
		}
		if p.GetState() == controlpb.JobState_JOB_STATE_DONE {
			w.log.Info("job done")
			return nil
		}
		w.plan = p
		if err := w.syncState(ctx, p); err != nil {
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
			w.log.Warn("ring failed; waiting for a new plan", zap.Error(err))
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = w.cl.ReportFailure(rctx, &controlpb.FailureReport{WorkerId: w.cfg.ID, Generation: p.GetGeneration(), Reason: err.Error()})
			cancel()
		}
	}
}

// syncState brings the trainer to the plan's committed step: from memory
// when this worker holds that state, otherwise from the checkpoint on disk.
func (w *runner) syncState(ctx context.Context, p *controlpb.Plan) error {
	target := p.GetCommitted().GetStep()
	if target == 0 && w.t.Step == 0 {
		return w.resumeFromDisk() // a fresh start, or a restarted job
	}
	if w.t.Step == target {
		return nil
	}
	if s := w.memAt(target); s != nil {
		w.log.Info("rolling back in memory", zap.Int64("from", w.t.Step), zap.Int64("to", target))
		return w.t.Restore(s)
	}
	l, err := w.store.Load(target)
	if err != nil {
		return fmt.Errorf("worker: state of committed step %d: %w", target, err)
	}
	w.log.Info("loaded checkpoint", zap.Int64("step", target))
	return w.t.Load(l)
}

// resumeFromDisk loads the newest verified checkpoint of this job when the
// job starts at step 0 and resuming is on (a restarted job).
func (w *runner) resumeFromDisk() error {
	if !w.spec.Checkpoint.Resume {
		return nil
	}
	l, skipped, err := w.store.LoadLatest(w.spec.Hash())
	for _, s := range skipped {
		w.log.Warn("skipping checkpoint", zap.Int64("step", s.Step), zap.Error(s.Err))
	}
	if err != nil {
		return nil // none: a fresh start
	}
	w.log.Info("resuming from checkpoint", zap.Int64("step", l.Meta.Step), zap.Int64("epoch", l.Meta.Epoch))
	return w.t.Load(l)
}

func (w *runner) haveMem(step int64) bool { return w.memAt(step) != nil }

func (w *runner) memAt(step int64) *checkpoint.Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mem[step]
}

func (w *runner) remember(s *checkpoint.Snapshot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mem[s.Meta.Step] = s
	for k := range w.mem { // keep the two newest
		if k < s.Meta.Step && len(w.mem) > 2 {
			delete(w.mem, k)
		}
	}
}

// runPlan trains under one plan until the job is done (done=true), the
// ring fails, or a newer plan arrives.
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
	rc := allreduce.DefaultConfig(w.plan.GetConfigHash()[:min(16, len(w.plan.GetConfigHash()))], p.GetGeneration(), rank, world)
	rc.Timeout = time.Duration(w.spec.DeadlineSec * float64(time.Second))
	rc.Compression = comp
	octx, cancel := context.WithTimeout(ctx, rc.Timeout+5*time.Second)
	ring, err := allreduce.Open(octx, w.tr, rc, peers)
	cancel()
	if err != nil {
		return false, fmt.Errorf("open ring of generation %d: %w", p.GetGeneration(), err)
	}
	defer ring.Close()
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
	if w.t.Step == p.GetCommitted().GetStep() && !w.haveMem(w.t.Step) {
		w.commitLocal(world, rank)
	}
	ld, err := w.t.Loader(ctx, rank, world)
	if err != nil {
		return true, err
	}
	defer ld.Close()
	w.log.Info("training", zap.Int("rank", rank), zap.Int("world", world), zap.Int64("step", w.t.Step),
		zap.Int("epoch", w.t.Pos.Epoch), zap.Int("cursor", w.t.Pos.Cursor))
	var imgs int
	tick := time.Now()
	for !w.t.Done() {
		select {
		case np := <-w.plans: // membership changed: re-plan
			w.plans <- np
			return false, nil
		default:
		}
		b, err := ld.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		epoch := b.Pos.Epoch
		res, err := w.t.TrainStep(ctx, b, red, world)
		if err != nil {
			return false, err
		}
		imgs += res.LocalN
		now := time.Now()
		ips := float64(imgs) / now.Sub(tick).Seconds()
		w.report(&controlpb.MetricsReport{WorkerId: w.cfg.ID, Generation: p.GetGeneration(), Rank: int32(rank),
			Step: w.t.Step, Epoch: int64(epoch), Loss: res.Loss, Accuracy: float64(res.Correct) / float64(max(res.N, 1)),
			ImagesPerSec: ips, Phase: "train", Samples: int64(res.N)})
		if now.Sub(tick) > 5*time.Second {
			imgs, tick = 0, now
		}
		epochEnd := w.t.Pos.Epoch > epoch
		if epochEnd {
			ev, err := w.t.Evaluate(ctx, ring, rank, world, allreduce.Tag{Step: uint64(w.t.Step), Bucket: 1 << 24})
			if err != nil {
				return false, err
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
			if err := w.commitLocal(world, rank); err != nil {
				return true, err
			}
		}
	}
	// The job's length is reached: rank 0 saves the model and ends the job.
	w.commitLocal(world, rank)
	if rank == 0 {
		if w.writer != nil {
			w.writer.Close()
			w.writer = nil
		}
		path := filepath.Join(w.spec.OutputDir, ModelFile)
		if err := nn.SaveWeights(path, w.t.B, w.t.Model.Params(), w.t.Model.Buffers(), map[string]string{
			"format": "pt", "arch": w.spec.Model.Arch, "stem": w.spec.Model.Stem}); err != nil {
			return true, err
		}
		w.log.Info("saved model", zap.String("path", path))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := w.cl.CommitStep(cctx, &controlpb.CommitStepRequest{WorkerId: w.cfg.ID, Generation: p.GetGeneration(),
			Step: w.t.Step, Epoch: int64(w.t.Pos.Epoch), Cursor: int64(w.t.Pos.Cursor), Done: true}); err != nil {
			return true, fmt.Errorf("worker: final commit: %w", err)
		}
		return true, nil
	}
	// Other ranks wait for the coordinator to declare the job done.
	for {
		np, err := w.nextPlan(ctx)
		if err != nil || np.GetState() == controlpb.JobState_JOB_STATE_DONE {
			return true, nil
		}
		if np.GetCommitted().GetStep() < w.t.Step { // a failure before the end: redo
			w.plans <- np
			return false, nil
		}
	}
}

// commitLocal snapshots the state (every rank keeps it in memory for a
// rollback); rank 0 also writes it to disk in the background and, once it
// is durable, commits the step to the coordinator.
func (w *runner) commitLocal(world, rank int) error {
	start := time.Now()
	s, err := w.t.Snapshot(world, w.lastAcc)
	if err != nil {
		return err
	}
	w.remember(s)
	if rank == 0 && w.writer != nil {
		w.writer.Submit(s)
		w.log.Debug("checkpoint captured", zap.Int64("step", s.Meta.Step), zap.Duration("stall", time.Since(start)))
	}
	return nil
}

// onCheckpoint runs on the writer's goroutine after each write.
func (w *runner) onCheckpoint(m cluster.Manifest, err error) {
	if err != nil {
		w.log.Error("checkpoint write failed; training goes on with the previous checkpoint", zap.Error(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := w.ej.PutManifest(ctx, m)
	if err != nil {
		w.log.Warn("checkpoint manifest not stored in etcd", zap.Error(err))
	}
	gen := w.plan.GetGeneration()
	acc := 0.0
	if m.Accuracy != nil {
		acc = *m.Accuracy
	}
	if _, err := w.cl.RecordCheckpoint(ctx, &controlpb.RecordCheckpointRequest{WorkerId: w.cfg.ID, Generation: gen,
		Checkpoint: &controlpb.CheckpointRef{Step: m.Step, Epoch: m.Epoch, Key: key, Accuracy: acc, ConfigHash: m.ConfigHash}}); err != nil {
		w.log.Debug("checkpoint not recorded", zap.Error(err))
	}
	if _, err := w.cl.CommitStep(ctx, &controlpb.CommitStepRequest{WorkerId: w.cfg.ID, Generation: gen,
		Step: m.Step, Epoch: m.Epoch, Cursor: m.Cursor}); err != nil {
		w.log.Debug("step not committed", zap.Error(err))
	}
	w.log.Info("checkpoint", zap.Int64("step", m.Step), zap.String("dir", m.Dir))
}

// report queues metrics for the reporter goroutine, which sends them in
// order without blocking training (when the queue is full, the report is
// dropped: metrics must never slow a step down).
func (w *runner) report(m *controlpb.MetricsReport) {
	select {
	case w.reports <- m:
	default:
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
		}
	}
}

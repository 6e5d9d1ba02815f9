package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/observe"
	"github.com/ringtrain/ringtrain/pkg/report"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// httpOptions are the coordinator's --http flags.
type httpOptions struct {
	addr  string // "" = the mode's default, "off" = none
	token string
}

func (h *httpOptions) bind(f *pflag.FlagSet) {
	f.StringVar(&h.addr, "http", "", "dashboard, /metrics, /healthz and /readyz on this address (default with --workers: 127.0.0.1 on a free port, printed at start; otherwise off unless given, e.g. :8080; \"off\" disables)")
	f.StringVar(&h.token, "http-token", "", "bearer token the dashboard and /metrics require (default $RINGTRAIN_HTTP_TOKEN; empty: none). HTTPS with the job's certificate when --tls-* are given")
}

// resolve returns the address to serve on ("" for none).
func (h httpOptions) resolve(localWorkers int) string {
	switch {
	case h.addr == "off":
		return ""
	case h.addr != "":
		return h.addr
	case localWorkers > 0:
		return "127.0.0.1:0"
	}
	return ""
}

// observer feeds the dashboard's board and the coordinator's metrics from
// the workers' reports and the replicated job state, and serves them.
type observer struct {
	log     *zap.Logger
	board   *observe.Board
	m       *observe.CoordinatorMetrics
	srv     *observe.Server
	coPtr   atomic.Pointer[coordinator.Coordinator] // set by attach
	co      *coordinator.Coordinator                // coPtr's value once attached; used by follow's goroutine
	ej      *cluster.Job
	spec    job.Spec
	spe     int
	tlsOn   bool
	stalled time.Duration // a planned worker silent this long is "stalled"
	lr      func(step int64) float64

	mu         sync.Mutex // guards seen, lastStep, ips, ipsGen, ckptFailed
	seen       map[string]workerSeen
	lastStep   int64
	ips        map[string]float64 // latest train images/s per worker, by id
	ipsGen     map[string]uint64  // the generation of that report
	ckptFailed int                // checkpoint writes reported failed

	etcdMu sync.Mutex // guards etcdErr
	etcdOK error
}

// workerSeen is what the observer remembers about a worker's last report.
type workerSeen struct {
	at   time.Time
	gen  uint64
	rank int32
}

// newObserver builds the board and the metrics; attach gives it the
// coordinator, serve starts the server.
func newObserver(log *zap.Logger, ej *cluster.Job, spec job.Spec, spe int, tc *tlsconf.Config) *observer {
	o := &observer{log: log, board: observe.NewBoard(), m: observe.NewCoordinatorMetrics(), ej: ej, spec: spec, spe: spe,
		tlsOn: tc != nil, seen: map[string]workerSeen{}, ips: map[string]float64{}, ipsGen: map[string]uint64{},
		stalled: max(time.Duration(spec.DeadlineSec*float64(time.Second)), 5*time.Second)}
	specJSON, _ := json.Marshal(spec)
	o.board.UpdateJob(func(j *observe.JobView) {
		j.Name, j.Epochs, j.StepsPerEpoch = spec.Name, spec.Epochs, spe
		j.TotalSteps = int64(spe) * int64(spec.Epochs)
		if spec.MaxSteps > 0 && int64(spec.MaxSteps) < j.TotalSteps {
			j.TotalSteps = int64(spec.MaxSteps)
		}
		j.Spec = specJSON
		j.Started = time.Now()
	})
	return o
}

// attach gives the observer its coordinator; reports before it are only
// counted by the progress.
func (o *observer) attach(co *coordinator.Coordinator) {
	o.co = co
	o.coPtr.Store(co)
	o.board.UpdateJob(func(j *observe.JobView) { j.Replica = co.Node().ID() })
}

// serve starts the HTTP server on addr (TLS when tc is set).
func (o *observer) serve(addr, token string, tc *tlsconf.Config) error {
	opts := observe.Options{Addr: addr, Token: token, Registry: o.m.Registry,
		Health:    &observe.Health{Ready: o.ready},
		Dashboard: observe.NewDashboard(o.board, observe.DashboardOptions{OutputDir: o.spec.OutputDir})}
	if tc != nil {
		opts.TLS = tc.ServerTLS()
	}
	srv, err := observe.Start(opts)
	if err != nil {
		return err
	}
	o.srv = srv
	return nil
}

func (o *observer) close() {
	if o.srv != nil {
		o.srv.Close()
	}
}

// ready: this replica knows a leader and etcd answers.
func (o *observer) ready() error {
	co := o.coPtr.Load()
	if co == nil {
		return fmt.Errorf("starting")
	}
	if li := co.Node().Leader(); li.ID == "" {
		return fmt.Errorf("no raft leader known")
	}
	o.etcdMu.Lock()
	defer o.etcdMu.Unlock()
	return o.etcdOK
}

// probeEtcd checks etcd every 2 s for ready.
func (o *observer) probeEtcd(ctx context.Context, cl *cluster.Client) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Etcd().Get(cctx, "ringtrain-health")
		cancel()
		if err != nil {
			err = fmt.Errorf("etcd does not answer: %w", err)
		}
		o.etcdMu.Lock()
		o.etcdOK = err
		o.etcdMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// sample converts a train report (its phases as the worker measured them).
func sample(m *controlpb.MetricsReport, world int) observe.StepSample {
	s := observe.StepSample{Step: m.GetStep(), Epoch: int(m.GetEpoch()), Generation: m.GetGeneration(), World: world,
		Loss: m.GetLoss(), Accuracy: m.GetAccuracy(), ImagesPerSec: m.GetImagesPerSec()}
	if world > 0 {
		s.Images = int(m.GetSamples()) / world
	}
	if m.GetUnixNano() > 0 {
		s.Time = time.Unix(0, m.GetUnixNano())
	}
	if p := m.GetPhases(); p != nil {
		sec := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
		s.Duration, s.Data, s.Compute, s.Exposed, s.Optimizer = sec(p.GetStepSeconds()), sec(p.GetDataWaitSeconds()),
			sec(p.GetComputeSeconds()), sec(p.GetExposedAllreduceSeconds()), sec(p.GetOptimizerSeconds())
		s.AllReduceBytes, s.Comm = p.GetAllreduceBytes(), sec(p.GetAllreduceSeconds())
		s.Hidden = time.Duration(p.GetHiddenFraction() * float64(s.Comm))
		if p.GetWorld() > 0 {
			s.World = int(p.GetWorld())
		}
	}
	return s
}

// deviceMemGiB is a train report's device memory held and the device's
// total, GiB (0 and 0 from a CPU worker).
func deviceMemGiB(m *controlpb.MetricsReport) (held, total float64) {
	return float64(m.GetDeviceMemoryBytes()) / (1 << 30), float64(m.GetDeviceMemoryTotalBytes()) / (1 << 30)
}

// trainRow copies a train report's figures into its worker's row.
func trainRow(w *observe.WorkerView, m *controlpb.MetricsReport) {
	w.Step, w.ImagesPerSec = m.GetStep(), m.GetImagesPerSec()
	w.DeviceMemGiB, w.DeviceTotalGiB = deviceMemGiB(m)
	if p := m.GetPhases(); p != nil {
		w.StepMS, w.DataMS, w.ComputeMS = 1e3*p.GetStepSeconds(), 1e3*p.GetDataWaitSeconds(), 1e3*p.GetComputeSeconds()
		w.ExposedMS, w.OptimizerMS = 1e3*p.GetExposedAllreduceSeconds(), 1e3*p.GetOptimizerSeconds()
		w.BusbwGBs, w.Hidden = p.GetBusbwBytesPerSecond()/1e9, p.GetHiddenFraction()
	}
}

// onMetrics takes every report the leader receives.
func (o *observer) onMetrics(m *controlpb.MetricsReport) {
	co := o.coPtr.Load()
	if co == nil {
		return
	}
	st := co.Node().State()
	now := time.Now()
	id := m.GetWorkerId()
	o.mu.Lock()
	o.seen[id] = workerSeen{at: now, gen: m.GetGeneration(), rank: m.GetRank()}
	var total float64
	if m.GetPhase() == "train" {
		o.ips[id], o.ipsGen[id] = m.GetImagesPerSec(), m.GetGeneration()
	}
	for w, v := range o.ips {
		if o.ipsGen[w] == st.Generation && st.Rank(w) >= 0 {
			total += v
		}
	}
	newer := m.GetStep() > o.lastStep
	if m.GetPhase() == "train" && m.GetRank() == 0 && newer {
		o.lastStep = m.GetStep()
	}
	o.mu.Unlock()

	world := len(st.Plan)
	current := m.GetGeneration() == st.Generation
	o.board.UpdateWorker(id, func(w *observe.WorkerView) {
		w.LastSeen = now
		if current {
			w.Rank = int(m.GetRank())
		}
		if m.GetPhase() != "train" {
			return
		}
		trainRow(w, m)
		if current && st.Status == coordinator.StatusRunning {
			w.State = observe.StateTraining
		}
	})
	switch m.GetPhase() {
	case "checkpoint":
		o.onCheckpointFailed(m, st)
	case "train":
		s := sample(m, world)
		o.m.ObserveStep(s, int(m.GetRank()))
		o.m.ImagesPerSec.Set(total)
		if m.GetRank() != 0 {
			return
		}
		lr := 0.0
		if o.lr != nil {
			lr = o.lr(m.GetStep() - 1)
		}
		t := s.Time
		if t.IsZero() {
			t = now
		}
		if p := m.GetPhases(); p != nil {
			o.board.UpdateRing(func(r *observe.RingView) {
				r.BusbwGBs, r.Hidden = p.GetBusbwBytesPerSecond()/1e9, p.GetHiddenFraction()
			})
		}
		o.board.AddStep(observe.StepPoint{Step: m.GetStep(), Epoch: m.GetEpoch(), Loss: m.GetLoss(), Accuracy: m.GetAccuracy(),
			LR: lr, ImagesPerSec: total, TimeMS: t.UnixMilli()})
		o.board.UpdateJob(func(j *observe.JobView) {
			j.Step, j.Epoch, j.ImagesPerSec = m.GetStep(), m.GetEpoch(), total
			j.ETASeconds = -1
			if total > 0 && o.spec.GlobalBatch > 0 && j.TotalSteps > 0 {
				j.ETASeconds = float64(j.TotalSteps-j.Step) * float64(o.spec.GlobalBatch) / total
			}
		})
	case "eval":
		if m.GetRank() == 0 {
			o.m.ValLoss.Set(m.GetLoss())
			o.m.ValAcc.Set(m.GetAccuracy())
		}
	}
}

// onEpoch takes an epoch's record from the progress (the history).
func (o *observer) onEpoch(e report.Epoch) {
	o.board.AddEpoch(observe.EpochPoint{Epoch: e.Epoch, Steps: e.Steps, TrainLoss: e.TrainLoss, TrainAcc: e.TrainAcc,
		ValLoss: e.ValLoss, ValAcc: e.ValAcc, ImagesPerSec: e.ImagesPerSec, LR: e.LR, Seconds: e.Seconds})
	o.board.AddEvent("epoch", fmt.Sprintf("epoch %d done at step %d: train loss %.4f, validation loss %.4f, accuracy %.2f%%",
		e.Epoch, e.Steps, e.TrainLoss, e.ValLoss, 100*e.ValAcc))
}

// event adds a timeline entry and logs it.
func (o *observer) event(kind, text string, fields ...zap.Field) {
	o.board.AddEvent(kind, text)
	o.log.Info(text, append(fields, zap.String("event", kind))...)
}

// follow keeps the board and the metrics in step with the replicated
// state (plans, failures, rollbacks, checkpoints, leaders) until ctx ends.
func (o *observer) follow(ctx context.Context) {
	var prev *coordinator.JobState
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lead := false
	for {
		st, changed := o.co.Node().Watch()
		o.onState(prev, st)
		prev = &st
		if l := o.co.Node().IsLeader(); l != lead {
			lead = l
			o.m.RaftLeader.Set(map[bool]float64{true: 1}[l])
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
			o.refresh(st)
		}
	}
}

func ids(ws []coordinator.Worker) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	return out
}

// onState turns a state change into events, metrics and board rows.
func (o *observer) onState(prev *coordinator.JobState, st coordinator.JobState) {
	o.m.Generation.Set(float64(st.Generation))
	o.m.CommittedStep.Set(float64(st.Committed.Step))
	o.m.SetStatus(string(st.Status))
	li := o.co.Node().Leader()
	o.board.UpdateJob(func(j *observe.JobView) {
		j.Status, j.Generation, j.Committed = string(st.Status), st.Generation, st.Committed.Step
		j.Leader, j.IsLeader = li.ID, o.co.Node().IsLeader()
	})
	o.setRing(st)
	if prev == nil {
		return
	}
	if st.Leader.ID != prev.Leader.ID && st.Leader.ID != "" {
		o.m.LeaderChanges.Inc()
		o.event("leader", fmt.Sprintf("replica %s leads (control %s, term %d)", st.Leader.ID, st.Leader.ControlAddr, o.co.Node().Term()))
	}
	if st.Generation != prev.Generation {
		o.onPlan(*prev, st)
	}
	if st.Checkpoint != nil && (prev.Checkpoint == nil || prev.Checkpoint.Step != st.Checkpoint.Step) {
		o.m.Checkpoints.Inc()
		go o.onCheckpoint(*st.Checkpoint, time.Now())
	}
}

// onPlan explains a new generation.
func (o *observer) onPlan(prev, st coordinator.JobState) {
	reason := observe.ReasonScale
	var why string
	before, after := ids(prev.Plan), ids(st.Plan)
	var joined, left []string
	for _, id := range after {
		if !slices.Contains(before, id) {
			joined = append(joined, id)
		}
	}
	for _, id := range before {
		if !slices.Contains(after, id) {
			left = append(left, id)
		}
	}
	switch {
	case st.Status == coordinator.StatusDone:
		reason, why = observe.ReasonDone, "the job is done"
	case st.LastFailure != nil && st.LastFailure.Generation == prev.Generation &&
		(prev.LastFailure == nil || *prev.LastFailure != *st.LastFailure):
		f := st.LastFailure
		reason = observe.ReasonFailure
		why = fmt.Sprintf("failure reported by %s", f.WorkerID)
		if f.SuspectID != "" {
			why += ", suspect " + f.SuspectID
		}
		o.m.Failures.Inc()
		o.event("failure", fmt.Sprintf("ring of generation %d failed: %s (reported by %s, suspect %q)", f.Generation, f.Reason, f.WorkerID, f.SuspectID))
	case len(left) > 0:
		reason, why = observe.ReasonLeave, fmt.Sprintf("%v left", left)
	case len(joined) > 0:
		reason, why = observe.ReasonJoin, fmt.Sprintf("%v joined", joined)
	default:
		why = fmt.Sprintf("status %s, %d..%d workers", st.Status, st.MinWorkers, st.MaxWorkers)
	}
	switch {
	case st.StartWorkers > 0 && st.Status != coordinator.StatusRunning:
		why += fmt.Sprintf("; the job starts once %d workers are live", st.StartWorkers)
	case (st.Status == coordinator.StatusWaiting || st.Status == coordinator.StatusPaused) && len(st.Live) < st.MinWorkers:
		why += fmt.Sprintf("; %d of the %d workers it needs are live (--min-workers)", len(st.Live), st.MinWorkers)
	}
	o.m.RingRebuilds.WithLabelValues(reason).Inc()
	if reason == observe.ReasonDone {
		o.event("done", fmt.Sprintf("job done at step %d", st.Committed.Step))
		return
	}
	o.event("plan", fmt.Sprintf("generation %d: %s, ring %v (%s)", st.Generation, st.Status, after, why),
		zap.Uint64("generation", st.Generation), zap.String("reason", reason))
	o.mu.Lock()
	last := o.lastStep
	o.mu.Unlock()
	if st.Status == coordinator.StatusRunning && prev.Ran && last > st.Committed.Step {
		o.m.Rollbacks.Inc()
		o.event("rollback", fmt.Sprintf("rolled back to committed step %d (from step %d)", st.Committed.Step, last),
			zap.Int64("to", st.Committed.Step), zap.Int64("from", last))
		o.mu.Lock()
		o.lastStep = st.Committed.Step
		o.mu.Unlock()
	}
}

// onCheckpoint reports a recorded checkpoint with its size, the time its
// write took (from its start to being recorded here) and whether its files
// are all on disk with their manifest's sizes.
func (o *observer) onCheckpoint(ref coordinator.CheckpointRef, recorded time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := o.ej.GetManifest(ctx, ref.Step)
	if err != nil {
		o.event("checkpoint", fmt.Sprintf("checkpoint of step %d recorded (manifest not read: %v)", ref.Step, err))
		return
	}
	size := m.TotalSize()
	o.m.CkptBytes.Set(float64(size))
	write := recorded.Sub(m.Created)
	if write > 0 {
		o.m.CkptSeconds.Observe(write.Seconds())
	}
	verified := "files present"
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(o.spec.OutputDir, "checkpoints", filepath.Base(m.Dir), f.Name))
		if err != nil || st.Size() != f.Size {
			verified = "NOT verified: " + f.Name + " missing or of another size"
			break
		}
	}
	if m.Dir == "" {
		verified = "no directory in manifest"
	}
	where := fmt.Sprintf("in epoch %d", m.Epoch+1)
	if m.Cursor == 0 {
		where = fmt.Sprintf("end of epoch %d", m.Epoch)
	}
	o.event("checkpoint", fmt.Sprintf("checkpoint step %d (%s): %.1f MB, written in %s, %s (SHA-256 in its manifest)",
		m.Step, where, float64(size)/1e6, write.Round(time.Millisecond), verified))
}

// onCheckpointFailed reports a checkpoint that rank 0 could not write:
// training goes on, but until a write succeeds a failure takes the job back
// to the committed step, the newest checkpoint.
func (o *observer) onCheckpointFailed(m *controlpb.MetricsReport, st coordinator.JobState) {
	o.m.CkptFailures.Inc()
	o.mu.Lock()
	o.ckptFailed++
	o.mu.Unlock()
	text := fmt.Sprintf("checkpoint of step %d not written by %s: %s; training goes on, a failure would take the job back to step %d (the newest checkpoint)",
		m.GetStep(), m.GetWorkerId(), m.GetError(), st.Committed.Step)
	o.board.AddEvent("checkpoint", text)
	o.log.Warn(text, zap.String("event", "checkpoint"))
}

// checkpointFailures is the number of checkpoint writes reported failed.
func (o *observer) checkpointFailures() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ckptFailed
}

// setRing updates the ring view and the workers' rows from the plan.
func (o *observer) setRing(st coordinator.JobState) {
	order := ids(st.Plan)
	var links []observe.LinkView
	for i, w := range st.Plan {
		if len(st.Plan) < 2 {
			break
		}
		next := st.Plan[(i+1)%len(st.Plan)]
		tr := "TCP"
		switch {
		case w.HostID != "" && w.HostID == next.HostID:
			tr = "shared memory (same host)"
		case o.tlsOn:
			tr = "TLS"
		}
		links = append(links, observe.LinkView{From: w.ID, To: next.ID, Transport: tr})
	}
	o.board.UpdateRing(func(r *observe.RingView) { r.Order, r.Links = order, links })
	live := map[string]coordinator.Worker{}
	for _, w := range st.Live {
		live[w.ID] = w
	}
	for _, w := range o.board.Workers() {
		if _, ok := live[w.ID]; !ok && st.Rank(w.ID) < 0 && w.State != observe.StateGone {
			o.board.UpdateWorker(w.ID, func(v *observe.WorkerView) { v.State, v.Rank = observe.StateGone, -1 })
		}
	}
	excluded := map[coordinator.Exclusion]bool{}
	for _, e := range st.Excluded {
		excluded[e] = true
	}
	for _, w := range st.Live {
		rank := st.Rank(w.ID)
		o.board.UpdateWorker(w.ID, func(v *observe.WorkerView) {
			v.Host, v.Device, v.Address, v.Rank = w.HostID, w.Device, w.Address, rank
			switch {
			case excluded[coordinator.Exclusion{ID: w.ID, JoinRevision: w.JoinRevision}]:
				v.State = observe.StateGone // reported failed: out until it registers again
			case rank < 0 || st.Status != coordinator.StatusRunning:
				v.State = observe.StateJoining
			case v.State == observe.StateGone || v.State == observe.StateJoining:
				v.State = observe.StateSyncing // planned; trains once it reports a step of this plan
			}
		})
	}
}

// refresh marks silent planned workers as stalled and updates the member
// counts and raft figures (every second).
func (o *observer) refresh(st coordinator.JobState) {
	if o.co != nil {
		o.m.RaftTerm.Set(float64(o.co.Node().Term()))
	}
	now := time.Now()
	counts := map[string]int{}
	for _, w := range o.board.Workers() {
		state := w.State
		if w.Rank >= 0 && st.Status == coordinator.StatusRunning && (state == observe.StateTraining || state == observe.StateSyncing) &&
			!w.LastSeen.IsZero() && now.Sub(w.LastSeen) > o.stalled {
			state = observe.StateStalled
			id := w.ID
			o.board.UpdateWorker(id, func(v *observe.WorkerView) { v.State = state })
		}
		counts[state]++
	}
	o.m.SetMembers(counts)
}

// startHTTP serves the dashboard, the metrics and the health endpoints
// when the mode or --http asks for it, and starts following the state.
func startHTTP(ctx context.Context, obs *observer, o options, tc *tlsconf.Config, cl *cluster.Client, log *zap.Logger) error {
	go obs.follow(ctx)
	go obs.probeEtcd(ctx, cl)
	addr := o.http.resolve(o.workers)
	if addr == "" {
		return nil
	}
	token := o.http.token
	if token == "" {
		token = os.Getenv("RINGTRAIN_HTTP_TOKEN")
	}
	if err := obs.serve(addr, token, tc); err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	fmt.Fprintf(os.Stderr, "dashboard: %s/  (metrics: %s/metrics)\n", obs.srv.URL(), obs.srv.URL())
	log.Info("dashboard", zap.String("url", obs.srv.URL()+"/"), zap.Bool("token", token != ""))
	return nil
}

// logWaiting says how workers reach this replica, and, for a replica
// restarted with its raft state, that it rejoined and who leads.
func logWaiting(ctx context.Context, log *zap.Logger, co *coordinator.Coordinator, replicas int, rejoined bool) {
	if replicas > 1 {
		log.Info("waiting for workers: start them with 'worker run --coordinator <the control addresses of all replicas>' (any replica redirects to the leader)",
			zap.String("this_replica", co.Addr()))
	} else {
		log.Info("waiting for workers: start them with 'worker run --coordinator " + co.Addr() + "'")
	}
	if !rejoined {
		return
	}
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		li, err := co.Node().WaitLeader(wctx)
		if err != nil {
			log.Warn("replica restarted with its raft state, but no leader is known yet", zap.Error(err))
			return
		}
		st := co.Node().State()
		log.Info("replica rejoined the job's raft cluster", zap.String("node", co.Node().ID()), zap.String("leader", li.ID),
			zap.String("leader_control", li.ControlAddr), zap.Int64("committed_step", st.Committed.Step), zap.Uint64("generation", st.Generation))
	}()
}

// jobDuration is how long the job took: from its first step (steps.jsonl,
// written across restarts and failovers) when known, else since this
// replica started; with this replica's own time beside it when they differ.
func jobDuration(prog *progress, replicaStart time.Time) string {
	mine := time.Since(replicaStart).Round(time.Second)
	first := prog.firstStepTime()
	if first.IsZero() || first.After(replicaStart) {
		return mine.String()
	}
	return fmt.Sprintf("%s since the first step (this replica ran %s)", time.Since(first).Round(time.Second), mine)
}

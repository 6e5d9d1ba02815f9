package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// MembershipSource delivers live-membership snapshots; *cluster.Job is the
// real one. The channel closes when ctx ends or the source fails.
type MembershipSource interface {
	WatchMembers(ctx context.Context) (<-chan cluster.MemberSnapshot, error)
}

var _ MembershipSource = (*cluster.Job)(nil)

// SpecInput is the job spec a coordinator replica imposes when it becomes
// leader (set from its flags or job file).
type SpecInput struct {
	Spec       []byte
	ConfigHash string // ConfigHash(Spec) when empty
	MinWorkers int
	MaxWorkers int
	// StartWorkers, when above 0, is the start quorum imposed the first
	// time this replica leads (SetSpecCommand.StartWorkers): the job runs
	// only once that many workers are live. cmd/coordinator sets it to
	// --workers, the processes it starts itself.
	StartWorkers int
}

// ServiceConfig configures the Control service of one replica.
type ServiceConfig struct {
	// Job is the job name handed to joining workers. Required.
	Job string
	// EtcdEndpoints are handed to joining workers for their registration.
	EtcdEndpoints []string
	// MemberTTL is the lease TTL workers must use (default
	// cluster.DefaultMemberTTL).
	MemberTTL time.Duration
	// Members is followed while this replica leads; nil disables planning
	// from membership (tests may apply UpdateMembers themselves).
	Members MembershipSource
	// Spec, when set, is applied each time this replica becomes leader
	// and the replicated spec differs or the job is failed (a coordinator
	// started again retries a job an earlier run stopped: the input may
	// have been fixed).
	Spec *SpecInput
	// SettleDelay batches membership changes that arrive close together
	// into one plan (default 200 ms).
	SettleDelay time.Duration
	// OnMetrics, if set, is called (on the leader) with every report.
	OnMetrics func(*controlpb.MetricsReport)
	// Logger (default: none).
	Logger *zap.Logger
}

// Service implements controlpb.ControlServer over a Node, and while its
// node leads, turns membership snapshots into plans. It is safe for
// concurrent use.
type Service struct {
	controlpb.UnimplementedControlServer
	node *Node
	cfg  ServiceConfig
	log  *zap.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	imposed   chan error  // the first final imposition's outcome, see SpecImposed
	delivered atomic.Bool // imposed has been sent to
	retired   atomic.Bool // the spec is no longer imposed, see StopImposing

	mu      sync.Mutex // guards metrics and subs
	metrics map[string]*controlpb.MetricsReport
	subs    map[*metricsSub]bool // WatchMetrics streams
}

var _ controlpb.ControlServer = (*Service)(nil)

// NewService starts the leadership loop of node and returns the service.
// Close stops it; it does not close node.
func NewService(node *Node, cfg ServiceConfig) (*Service, error) {
	if node == nil {
		return nil, fmt.Errorf("%w: service needs a node", ErrInvalid)
	}
	if err := cluster.ValidateName("job name", cfg.Job); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if cfg.MemberTTL < 0 || cfg.SettleDelay < 0 {
		return nil, fmt.Errorf("%w: negative member TTL or settle delay", ErrInvalid)
	}
	if cfg.MemberTTL == 0 {
		cfg.MemberTTL = cluster.DefaultMemberTTL
	}
	if cfg.SettleDelay == 0 {
		cfg.SettleDelay = 200 * time.Millisecond
	}
	if cfg.Spec != nil {
		if cfg.Spec.MinWorkers < 1 || (cfg.Spec.MaxWorkers != 0 && cfg.Spec.MaxWorkers < cfg.Spec.MinWorkers) {
			return nil, fmt.Errorf("%w: workers min %d max %d", ErrInvalid, cfg.Spec.MinWorkers, cfg.Spec.MaxWorkers)
		}
		if cfg.Spec.StartWorkers < 0 || (cfg.Spec.MaxWorkers != 0 && cfg.Spec.StartWorkers > cfg.Spec.MaxWorkers) {
			return nil, fmt.Errorf("%w: start workers %d, max %d", ErrInvalid, cfg.Spec.StartWorkers, cfg.Spec.MaxWorkers)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{node: node, cfg: cfg, log: log, cancel: cancel, imposed: make(chan error, 1),
		metrics: map[string]*controlpb.MetricsReport{}, subs: map[*metricsSub]bool{}}
	s.wg.Add(1)
	go s.leadershipLoop(ctx)
	return s, nil
}

// Close stops the leadership loop. It is idempotent.
func (s *Service) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// leadershipLoop runs leaderDuties while the node leads.
func (s *Service) leadershipLoop(ctx context.Context) {
	defer s.wg.Done()
	var duty *leaderDuty
	defer func() { duty.stop() }()
	led := false // this replica led before (its start quorum is imposed)
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	for {
		var lead bool
		select {
		case <-ctx.Done():
			return
		case lead = <-s.node.LeadershipCh():
		case <-check.C: // a missed transition must not leave duties running
			lead = s.node.IsLeader()
		}
		switch {
		case lead && duty == nil:
			duty = s.startDuty(ctx, !led)
			led = true
			s.log.Info("coordinator leads", zap.String("node", s.node.ID()))
		case !lead && duty != nil:
			duty.stop()
			duty = nil
			s.log.Info("coordinator lost leadership", zap.String("node", s.node.ID()))
		}
	}
}

// leaderDuty is a running leaderDuties goroutine.
type leaderDuty struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Service) startDuty(ctx context.Context, first bool) *leaderDuty {
	lctx, cancel := context.WithCancel(ctx)
	d := &leaderDuty{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		s.leaderDuties(lctx, first)
	}()
	return d
}

// stop cancels the duty and waits for it; a nil duty is a no-op.
func (d *leaderDuty) stop() {
	if d == nil {
		return
	}
	d.cancel()
	<-d.done
}

// SpecImposed delivers, once, the outcome of imposing ServiceConfig.Spec
// when this replica first leads (a failure to replicate is retried while
// it leads; after a lost leadership, the next one tries again): nil when
// the spec is in force (applied, or the job's already), or why the job
// refused it (ErrSpecMismatch: steps are committed under another spec;
// ErrJobDone; ErrInvalid). It has one reader; with no Spec, or before this
// replica leads, nothing is delivered.
func (s *Service) SpecImposed() <-chan error { return s.imposed }

// StopImposing keeps this replica from imposing ServiceConfig.Spec when
// it next leads: a replica whose run has ended and that lingers (coordinator
// --linger) must not retry a job it saw fail, with the input it failed
// on, when a failover makes it leader; a replica started again does.
func (s *Service) StopImposing() { s.retired.Store(true) }

// leaderDuties imposes the configured spec (with its start quorum when
// first is set: this replica's first leadership) and follows membership
// until ctx ends (leadership lost or service closed).
func (s *Service) leaderDuties(ctx context.Context, first bool) {
	if sp := s.cfg.Spec; sp != nil && !s.retired.Load() {
		// The job's answer is final; a failure to replicate (a slow
		// disk, a lost leadership) is retried while this replica leads.
		for {
			err := s.impose(ctx, sp, first)
			if err == nil || errors.Is(err, ErrSpecMismatch) || errors.Is(err, ErrJobDone) || errors.Is(err, ErrInvalid) {
				if s.delivered.CompareAndSwap(false, true) {
					s.imposed <- err
				}
				break
			}
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return
			}
			sleepCtx(ctx, time.Second)
			if s.retired.Load() {
				break
			}
		}
	}
	if s.cfg.Members == nil {
		<-ctx.Done()
		return
	}
	for ctx.Err() == nil {
		ch, err := s.cfg.Members.WatchMembers(ctx)
		if err != nil {
			s.log.Warn("watch membership", zap.Error(err))
			sleepCtx(ctx, time.Second)
			continue
		}
		s.followMembers(ctx, ch)
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// impose applies sp unless the job already has it (with its start quorum
// when first is set) and returns the job's refusal, if any.
func (s *Service) impose(ctx context.Context, sp *SpecInput, first bool) error {
	hash := sp.ConfigHash
	if hash == "" {
		hash = ConfigHash(sp.Spec)
	}
	st := s.node.State()
	quorum := 0
	if first && st.Status != StatusDone {
		quorum = sp.StartWorkers
	}
	if st.ConfigHash == hash && st.MinWorkers == sp.MinWorkers && st.MaxWorkers == sp.MaxWorkers && st.Status != StatusFailed && quorum == 0 {
		return nil
	}
	_, err := s.node.Apply(ctx, Command{Op: opSetSpec, Spec: &SetSpecCommand{
		Spec: sp.Spec, ConfigHash: hash, MinWorkers: sp.MinWorkers, MaxWorkers: sp.MaxWorkers, StartWorkers: quorum}})
	switch {
	case errors.Is(err, ErrJobDone):
		s.log.Info("the job is done; this replica's spec is not applied", zap.Error(err))
	case err != nil && ctx.Err() == nil:
		s.log.Error("apply job spec", zap.Error(err))
	}
	return err
}

// followMembers applies membership snapshots, waiting SettleDelay after
// the first of a burst so that one plan covers the whole burst.
func (s *Service) followMembers(ctx context.Context, ch <-chan cluster.MemberSnapshot) {
	var pending *cluster.MemberSnapshot
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case snap, ok := <-ch:
			if !ok {
				return
			}
			if pending == nil {
				settle = time.After(s.cfg.SettleDelay)
			}
			pending = &snap
		case <-settle:
			snap := *pending
			pending, settle = nil, nil
			ws := make([]Worker, len(snap.Members))
			for i, m := range snap.Members {
				ws[i] = WorkerFromMember(m)
			}
			st, err := s.node.Apply(ctx, Command{Op: opUpdateMembers, Members: &UpdateMembersCommand{Members: ws, Revision: snap.Revision}})
			if err != nil {
				s.log.Warn("apply membership", zap.Error(err))
				if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed) {
					return
				}
				continue
			}
			s.log.Info("plan", zap.Uint64("generation", st.Generation), zap.String("status", string(st.Status)),
				zap.Int("workers", len(st.Plan)), zap.Int("live", len(st.Live)))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// notLeader returns the gRPC error a follower answers with.
func (s *Service) notLeader() error {
	li := s.node.Leader()
	return toStatus(fmt.Errorf("%w: node %s; leader %q at %q", ErrNotLeader, s.node.ID(), li.ID, li.ControlAddr), &li)
}

// apply applies cmd and converts its error for gRPC.
func (s *Service) apply(ctx context.Context, cmd Command) (JobState, error) {
	st, err := s.node.Apply(ctx, cmd)
	if errors.Is(err, ErrNotLeader) {
		return st, s.notLeader()
	}
	return st, toStatus(err, nil)
}

// Join returns what a worker needs to register and train. Until the job
// has a spec it fails with UNAVAILABLE, which Client retries.
func (s *Service) Join(ctx context.Context, req *controlpb.JoinRequest) (*controlpb.JoinResponse, error) {
	if !s.node.IsLeader() {
		return nil, s.notLeader()
	}
	w := req.GetWorker()
	if err := cluster.ValidateName("worker id", w.GetId()); err != nil {
		return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err), nil)
	}
	st := s.node.State()
	if len(st.Spec) == 0 && st.ConfigHash == "" {
		// Retryable: the leader applies its spec right after election.
		return nil, status.Error(codes.Unavailable, "coordinator: job spec not set yet")
	}
	return &controlpb.JoinResponse{
		Job:           s.cfg.Job,
		EtcdEndpoints: slices.Clone(s.cfg.EtcdEndpoints),
		MemberTtlMs:   s.cfg.MemberTTL.Milliseconds(),
		Spec:          st.Spec,
		ConfigHash:    st.ConfigHash,
		Plan:          PlanProto(st, w.GetId()),
	}, nil
}

// WatchPlan streams plans newer than req.AfterGeneration until the client
// goes away or this replica stops leading.
func (s *Service) WatchPlan(req *controlpb.WatchPlanRequest, stream controlpb.Control_WatchPlanServer) error {
	after := req.GetAfterGeneration()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if !s.node.IsLeader() {
			return s.notLeader()
		}
		st, changed := s.node.Watch()
		if st.Generation > after {
			if err := stream.Send(PlanProto(st, req.GetWorkerId())); err != nil {
				return err
			}
			after = st.Generation
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		case <-tick.C: // re-check leadership
		}
	}
}

// ReportMetrics keeps the latest report per worker.
func (s *Service) ReportMetrics(ctx context.Context, m *controlpb.MetricsReport) (*controlpb.MetricsAck, error) {
	if !s.node.IsLeader() {
		return nil, s.notLeader()
	}
	if err := cluster.ValidateName("worker id", m.GetWorkerId()); err != nil {
		return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err), nil)
	}
	c := cloneMetrics(m)
	c.UnixNano = time.Now().UnixNano()
	s.mu.Lock()
	if c.Phase != "bench" && c.Phase != "checkpoint" { // the job's latest figures, not a bench round's nor an error
		s.metrics[c.WorkerId] = c
	}
	s.publishLocked(c)
	s.mu.Unlock()
	if s.cfg.OnMetrics != nil {
		s.cfg.OnMetrics(cloneMetrics(c))
	}
	return &controlpb.MetricsAck{}, nil
}

func cloneMetrics(m *controlpb.MetricsReport) *controlpb.MetricsReport {
	return &controlpb.MetricsReport{
		WorkerId: m.GetWorkerId(), Generation: m.GetGeneration(), Rank: m.GetRank(), Step: m.GetStep(),
		Epoch: m.GetEpoch(), Loss: m.GetLoss(), Accuracy: m.GetAccuracy(), ImagesPerSec: m.GetImagesPerSec(),
		Phase: m.GetPhase(), Samples: m.GetSamples(), UnixNano: m.GetUnixNano(),
		Phases:            proto.Clone(m.GetPhases()).(*controlpb.StepPhases),
		DeviceMemoryBytes: m.GetDeviceMemoryBytes(), DeviceMemoryTotalBytes: m.GetDeviceMemoryTotalBytes(),
		Error: m.GetError(),
	}
}

// ReportFailure re-plans when the report is about the current generation.
func (s *Service) ReportFailure(ctx context.Context, r *controlpb.FailureReport) (*controlpb.Plan, error) {
	st, err := s.apply(ctx, Command{Op: opReportFailure, Failure: &FailureCommand{
		WorkerID: r.GetWorkerId(), Generation: r.GetGeneration(), Reason: truncate(r.GetReason(), maxReason), SuspectID: r.GetSuspectId(),
		Fatal: r.GetFatal()}})
	if err != nil {
		return nil, err
	}
	if r.GetFatal() {
		s.log.Error("worker reported an error that will repeat; job stopped", zap.String("worker", r.GetWorkerId()),
			zap.String("reason", truncate(r.GetReason(), maxReason)))
	} else {
		s.log.Warn("failure reported", zap.String("worker", r.GetWorkerId()), zap.Uint64("generation", r.GetGeneration()),
			zap.String("suspect", r.GetSuspectId()), zap.String("reason", truncate(r.GetReason(), maxReason)), zap.Uint64("new_generation", st.Generation))
	}
	return PlanProto(st, r.GetWorkerId()), nil
}

// CommitStep records rank 0's committed step.
func (s *Service) CommitStep(ctx context.Context, r *controlpb.CommitStepRequest) (*controlpb.CommitStepResponse, error) {
	st, err := s.apply(ctx, Command{Op: opCommitStep, Commit: &CommitCommand{
		WorkerID: r.GetWorkerId(), Generation: r.GetGeneration(), Step: r.GetStep(), Epoch: r.GetEpoch(),
		Cursor: r.GetCursor(), Done: r.GetDone()}})
	if err != nil {
		return nil, err
	}
	return &controlpb.CommitStepResponse{Committed: committedProto(st.Committed), State: statusProto(st.Status)}, nil
}

// RecordCheckpoint stores the newest checkpoint reference.
func (s *Service) RecordCheckpoint(ctx context.Context, r *controlpb.RecordCheckpointRequest) (*controlpb.RecordCheckpointResponse, error) {
	c := r.GetCheckpoint()
	st, err := s.apply(ctx, Command{Op: opRecordCheckpoint, Checkpoint: &CheckpointCommand{WorkerID: r.GetWorkerId(), Generation: r.GetGeneration(),
		Ref: CheckpointRef{Step: c.GetStep(), Epoch: c.GetEpoch(), Key: c.GetKey(), Accuracy: c.GetAccuracy(), ConfigHash: c.GetConfigHash()}}})
	if err != nil {
		return nil, err
	}
	return &controlpb.RecordCheckpointResponse{Latest: checkpointProto(st.Checkpoint)}, nil
}

// GetJob returns the job state and the latest metrics.
func (s *Service) GetJob(ctx context.Context, _ *controlpb.GetJobRequest) (*controlpb.JobStatus, error) {
	if !s.node.IsLeader() {
		return nil, s.notLeader()
	}
	st := s.node.State()
	li, _ := s.Leader(ctx, nil)
	js := &controlpb.JobStatus{Job: s.cfg.Job, Plan: PlanProto(st, ""), Spec: st.Spec, Leader: li}
	planned := map[string]bool{}
	for _, w := range st.Plan {
		planned[w.ID] = true
	}
	s.mu.Lock()
	for _, m := range s.metrics {
		js.Metrics = append(js.Metrics, cloneMetrics(m))
		if planned[m.WorkerId] && m.Phase != "eval" && m.Generation == st.Generation {
			js.ImagesPerSec += m.ImagesPerSec
		}
	}
	s.mu.Unlock()
	slices.SortFunc(js.Metrics, func(a, b *controlpb.MetricsReport) int {
		switch {
		case a.WorkerId < b.WorkerId:
			return -1
		case a.WorkerId > b.WorkerId:
			return 1
		}
		return 0
	})
	for _, w := range st.Live {
		js.Live = append(js.Live, workerProto(w))
	}
	return js, nil
}

// Bench starts or ends a benchmark round (see controlpb.Control.Bench).
func (s *Service) Bench(ctx context.Context, r *controlpb.BenchRequest) (*controlpb.Plan, error) {
	st, err := s.apply(ctx, Command{Op: opBench, Bench: &BenchCommand{
		Workers: int(r.GetWorkers()), Spec: r.GetSpec(), Steps: r.GetSteps(), End: r.GetEnd(), ID: r.GetId()}})
	if err != nil {
		return nil, err
	}
	if r.GetEnd() {
		s.log.Info("bench round ended", zap.Uint64("round", r.GetId()), zap.Uint64("generation", st.Generation))
	} else {
		s.log.Info("bench round", zap.Uint64("round", st.Generation), zap.Int("workers", len(st.Current())))
	}
	return PlanProto(st, ""), nil
}

// WatchMetrics streams every report this leader receives from now on.
// When the last stream ends while a bench round runs, the round is ended
// (its bench is gone). A subscriber that falls more than metricsBacklog reports behind has its
// stream ended with RESOURCE_EXHAUSTED rather than losing reports silently.
func (s *Service) WatchMetrics(_ *controlpb.WatchMetricsRequest, stream controlpb.Control_WatchMetricsServer) error {
	if !s.node.IsLeader() {
		return s.notLeader()
	}
	sub := &metricsSub{ch: make(chan *controlpb.MetricsReport, metricsBacklog), lost: make(chan struct{})}
	s.mu.Lock()
	s.subs[sub] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		last := len(s.subs) == 0
		s.mu.Unlock()
		// A round outlives no bench: when the last stream goes (the bench
		// was killed, or finished), a round still running is ended, so
		// that its workers do not wait for an end that never comes.
		if b := s.node.State().Bench; last && b != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := s.node.Apply(ctx, Command{Op: opBench, Bench: &BenchCommand{End: true, ID: b.ID}}); err != nil {
				s.log.Warn("end the bench round left by its bench", zap.Uint64("round", b.ID), zap.Error(err))
			} else {
				s.log.Warn("bench round ended: its bench went away", zap.Uint64("round", b.ID))
			}
		}
	}()
	// The header tells the client that it is subscribed.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-sub.lost:
			return status.Error(codes.ResourceExhausted, "coordinator: metrics stream fell behind; reports were dropped")
		case m := <-sub.ch:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-tick.C:
			if !s.node.IsLeader() {
				return s.notLeader()
			}
		}
	}
}

// metricsBacklog is how many reports a WatchMetrics stream may fall behind.
const metricsBacklog = 4096

// metricsSub is one WatchMetrics stream.
type metricsSub struct {
	ch   chan *controlpb.MetricsReport
	lost chan struct{} // closed when a report could not be queued
	once sync.Once
}

// publish hands m to every WatchMetrics stream (s.mu held).
func (s *Service) publishLocked(m *controlpb.MetricsReport) {
	for sub := range s.subs {
		select {
		case sub.ch <- cloneMetrics(m):
		default:
			sub.once.Do(func() { close(sub.lost) })
		}
	}
}

// Leader names the leader; every replica answers it.
func (s *Service) Leader(context.Context, *controlpb.LeaderRequest) (*controlpb.LeaderInfo, error) {
	li := s.node.Leader()
	return &controlpb.LeaderInfo{LeaderId: li.ID, LeaderAddress: li.ControlAddr, NodeId: s.node.ID(), IsLeader: s.node.IsLeader(), Term: s.node.Term()}, nil
}

// PlanProto converts the state's plan for worker id (YourRank is -1 when
// id is not planned).
func PlanProto(st JobState, id string) *controlpb.Plan {
	p := &controlpb.Plan{
		Generation:       st.Generation,
		State:            statusProto(st.Status),
		YourRank:         int32(st.Rank(id)),
		Committed:        committedProto(st.Committed),
		LatestCheckpoint: checkpointProto(st.Checkpoint),
		ConfigHash:       st.ConfigHash,
		MinWorkers:       int32(st.MinWorkers),
		MaxWorkers:       int32(st.MaxWorkers),
	}
	if st.Status == StatusFailed && st.LastFailure != nil {
		p.Failure = st.LastFailure.String()
	}
	if b := st.Bench; b != nil {
		// A benchmark round: its members, running, and no room for others.
		p.State = controlpb.JobState_JOB_STATE_RUNNING
		p.YourRank = int32(rankIn(b.Members, id))
		p.MinWorkers, p.MaxWorkers = int32(len(b.Members)), int32(len(b.Members))
		p.Bench = &controlpb.BenchPlan{Id: b.ID, Spec: b.Spec, Steps: b.Steps}
	}
	for i, w := range st.Current() {
		p.Members = append(p.Members, &controlpb.PlanMember{Rank: int32(i), Id: w.ID, Address: w.Address, HostId: w.HostID, Device: w.Device})
	}
	return p
}

func workerProto(w Worker) *controlpb.WorkerInfo {
	return &controlpb.WorkerInfo{Id: w.ID, Address: w.Address, HostId: w.HostID, Device: w.Device, Pid: int64(w.PID)}
}

func committedProto(c Committed) *controlpb.Committed {
	return &controlpb.Committed{Step: c.Step, Epoch: c.Epoch, Cursor: c.Cursor, Generation: c.Generation}
}

func checkpointProto(c *CheckpointRef) *controlpb.CheckpointRef {
	if c == nil {
		return nil
	}
	return &controlpb.CheckpointRef{Step: c.Step, Epoch: c.Epoch, Key: c.Key, Accuracy: c.Accuracy, ConfigHash: c.ConfigHash}
}

func statusProto(s Status) controlpb.JobState {
	switch s {
	case StatusWaiting:
		return controlpb.JobState_JOB_STATE_WAITING
	case StatusRunning:
		return controlpb.JobState_JOB_STATE_RUNNING
	case StatusPaused:
		return controlpb.JobState_JOB_STATE_PAUSED
	case StatusDone:
		return controlpb.JobState_JOB_STATE_DONE
	case StatusFailed:
		return controlpb.JobState_JOB_STATE_FAILED
	}
	return controlpb.JobState_JOB_STATE_UNSPECIFIED
}

// maxReason bounds a reported failure reason kept in the replicated state
// (a worker's error may quote user input of any length).
const maxReason = 4096

// truncate shortens s to at most n bytes (on a rune boundary), marking
// the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d bytes more)", len(s)-cut)
}

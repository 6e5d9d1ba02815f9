package observe

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The phases of a step, the label values of the step-time histograms:
// PhaseStep is the whole step; the others are its parts (zero-length
// parts are not observed).
const (
	PhaseStep      = "step"
	PhaseData      = "data"              // waiting for the next batch
	PhaseCompute   = "compute"           // forward and backward
	PhaseExposed   = "allreduce_exposed" // all-reduce not hidden behind backward
	PhaseOptimizer = "optimizer"
)

// Worker states, the label values of ringtrain_worker_state and the
// dashboard's worker states.
const (
	StateJoining  = "joining"  // registered, not (yet) in a running plan
	StateSyncing  = "syncing"  // loading the committed state, opening the ring
	StateTraining = "training" // stepping in the current plan
	StateStalled  = "stalled"  // in the plan, but no step for a while
	StateGone     = "gone"     // no longer a member
)

var workerStates = []string{StateJoining, StateSyncing, StateTraining, StateStalled, StateGone}

// stepBuckets span 1 ms to about 65 s.
var stepBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

// StepSample is what one worker measured in one training step.
type StepSample struct {
	Step       int64 // steps done after this one
	Epoch      int   // 0-based
	Generation uint64
	World      int
	Loss       float64 // global batch mean
	Accuracy   float64 // global batch, 0..1
	Images     int     // this worker's images
	Duration   time.Duration
	// The step's parts; zero when not measured.
	Data, Compute, Exposed, Optimizer time.Duration
	// The all-reduce: bytes this worker reduced, how long the collectives
	// ran, and how much of that was hidden behind backward.
	AllReduceBytes int64
	Comm, Hidden   time.Duration
	ImagesPerSec   float64 // this worker, recent
	Time           time.Time
}

// BusBandwidth is the all-reduce's bus bandwidth in bytes/s (the
// nccl-tests definition: bytes / time x 2(N-1)/N), 0 when unknown.
func BusBandwidth(bytes int64, comm time.Duration, world int) float64 {
	if bytes <= 0 || comm <= 0 || world < 2 {
		return 0
	}
	return float64(bytes) / comm.Seconds() * 2 * float64(world-1) / float64(world)
}

// HiddenRatio is hidden/comm (0 without communication).
func HiddenRatio(hidden, comm time.Duration) float64 {
	if comm <= 0 {
		return 0
	}
	return float64(hidden) / float64(comm)
}

// WorkerMetrics are one worker process's metrics, on their own registry
// (with the Go runtime and process collectors). Safe for concurrent use.
type WorkerMetrics struct {
	Registry *prometheus.Registry

	stepSeconds  *prometheus.HistogramVec
	steps        prometheus.Counter
	images       prometheus.Counter
	ips          prometheus.Gauge
	step         prometheus.Gauge
	epoch        prometheus.Gauge
	loss         prometheus.Gauge
	acc          prometheus.Gauge
	valLoss      prometheus.Gauge
	valAcc       prometheus.Gauge
	arBytes      prometheus.Counter
	busbw        prometheus.Gauge
	hidden       prometheus.Gauge
	failures     prometheus.Counter
	rollbacks    prometheus.Counter
	ckptSeconds  prometheus.Histogram
	ckptBytes    prometheus.Counter
	loaderQueue  prometheus.Gauge
	generation   prometheus.Gauge
	rank         prometheus.Gauge
	world        prometheus.Gauge
	state        *prometheus.GaugeVec
	lastStepUnix prometheus.Gauge
	devInfo      *prometheus.GaugeVec
	devMem       *prometheus.GaugeVec

	mu       sync.Mutex // guards lastStep, lastGen, curState
	lastStep time.Time
	lastGen  uint64
	curState string
}

// newRegistry returns a registry with the Go and process collectors on it,
// and shorthands that register a collector, a new gauge and a new counter.
func newRegistry() (*prometheus.Registry, func(prometheus.Collector), func(name, help string) prometheus.Gauge, func(name, help string) prometheus.Counter) {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	g := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		f(x)
		return x
	}
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		f(x)
		return x
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r, f, g, c
}

// NewWorkerMetrics registers a worker's collectors on a new registry.
func NewWorkerMetrics() *WorkerMetrics {
	r, f, g, c := newRegistry()
	m := &WorkerMetrics{Registry: r}
	m.stepSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ringtrain_worker_step_seconds",
		Help:    "Time of a training step on this worker, whole (phase=step) and by part (data, compute = forward+backward, allreduce_exposed, optimizer).",
		Buckets: stepBuckets}, []string{"phase"})
	f(m.stepSeconds)
	m.steps = c("ringtrain_worker_steps_total", "Training steps this worker completed (a step trained again after a rollback counts again).")
	m.images = c("ringtrain_worker_images_total", "Training images this worker processed.")
	m.ips = g("ringtrain_worker_images_per_second", "This worker's recent training throughput.")
	m.step = g("ringtrain_worker_step", "Steps done after the last step this worker trained.")
	m.epoch = g("ringtrain_worker_epoch", "0-based epoch of the last step this worker trained.")
	m.loss = g("ringtrain_worker_train_loss", "Mean training loss of the last step's global batch.")
	m.acc = g("ringtrain_worker_train_accuracy_ratio", "Top-1 accuracy of the last step's global batch (0..1).")
	m.valLoss = g("ringtrain_worker_validation_loss", "Validation loss at the last epoch end.")
	m.valAcc = g("ringtrain_worker_validation_accuracy_ratio", "Validation top-1 accuracy at the last epoch end (0..1).")
	m.arBytes = c("ringtrain_worker_allreduce_bytes_total", "Bytes of gradients and buffers this worker all-reduced.")
	m.busbw = g("ringtrain_worker_allreduce_busbw_bytes_per_second", "Bus bandwidth of the last step's all-reduce (nccl-tests definition).")
	m.hidden = g("ringtrain_worker_allreduce_hidden_ratio", "Fraction of the last step's all-reduce time hidden behind backward (0..1).")
	m.failures = c("ringtrain_worker_ring_failures_total", "Ring failures this worker noticed (a dead or stalled peer, a broken link).")
	m.rollbacks = c("ringtrain_worker_rollbacks_total", "Rollbacks of this worker's state to a committed step.")
	m.ckptSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ringtrain_worker_checkpoint_write_seconds",
		Help: "Time from handing a checkpoint to the background writer until it was durable and recorded (rank 0).", Buckets: stepBuckets})
	f(m.ckptSeconds)
	m.ckptBytes = c("ringtrain_worker_checkpoint_written_bytes_total", "Bytes of checkpoints written (rank 0).")
	m.loaderQueue = g("ringtrain_worker_data_loader_queued_batches", "Batches the data loader has ready ahead of training.")
	m.generation = g("ringtrain_worker_plan_generation", "Generation of the plan this worker follows.")
	m.rank = g("ringtrain_worker_rank", "This worker's rank in its plan (-1: not planned).")
	m.world = g("ringtrain_worker_world_size", "Workers in this worker's plan.")
	m.state = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringtrain_worker_state",
		Help: "1 for the state this worker is in (joining, syncing, training, stalled, gone), 0 for the others."}, []string{"state"})
	f(m.state)
	m.lastStepUnix = g("ringtrain_worker_last_step_timestamp_seconds", "Unix time of this worker's last completed step.")
	m.devInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringtrain_worker_device_info",
		Help: "1, labelled with the backend this worker trains on (cpu, cuda), its device's name and the precision."},
		[]string{"backend", "name", "precision"})
	f(m.devInfo)
	m.devMem = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringtrain_worker_device_memory_bytes",
		Help: "Device memory of a GPU worker: live (in tensors and scratch), cached (kept for reuse), peak (most of live+cached so far), total (the device's)."},
		[]string{"kind"})
	f(m.devMem)
	m.rank.Set(-1)
	m.SetState(StateJoining)
	for _, p := range []string{PhaseStep, PhaseData, PhaseCompute, PhaseExposed, PhaseOptimizer} {
		m.stepSeconds.WithLabelValues(p) // present from the start
	}
	return m
}

// ObserveStep records one completed step.
func (m *WorkerMetrics) ObserveStep(s StepSample) {
	if m == nil {
		return
	}
	observePhases(m.stepSeconds, s)
	m.steps.Inc()
	m.images.Add(float64(s.Images))
	m.ips.Set(s.ImagesPerSec)
	m.step.Set(float64(s.Step))
	m.epoch.Set(float64(s.Epoch))
	m.loss.Set(s.Loss)
	m.acc.Set(s.Accuracy)
	if s.AllReduceBytes > 0 {
		m.arBytes.Add(float64(s.AllReduceBytes))
		m.busbw.Set(BusBandwidth(s.AllReduceBytes, s.Comm, s.World))
		m.hidden.Set(HiddenRatio(s.Hidden, s.Comm))
	}
	t := s.Time
	if t.IsZero() {
		t = time.Now()
	}
	m.lastStepUnix.Set(float64(t.UnixNano()) / 1e9)
	m.mu.Lock()
	m.lastStep, m.lastGen = t, s.Generation
	m.mu.Unlock()
	m.SetState(StateTraining)
}

func observePhases(h *prometheus.HistogramVec, s StepSample) {
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{PhaseStep, s.Duration}, {PhaseData, s.Data}, {PhaseCompute, s.Compute}, {PhaseExposed, s.Exposed}, {PhaseOptimizer, s.Optimizer}} {
		if p.d > 0 {
			h.WithLabelValues(p.name).Observe(p.d.Seconds())
		}
	}
}

// ObserveEval records an epoch end's validation figures.
func (m *WorkerMetrics) ObserveEval(loss, acc float64) {
	if m == nil {
		return
	}
	m.valLoss.Set(loss)
	m.valAcc.Set(acc)
}

// SetPlan records the plan this worker follows (rank -1: not in it).
func (m *WorkerMetrics) SetPlan(generation uint64, rank, world int) {
	if m == nil {
		return
	}
	m.generation.Set(float64(generation))
	m.rank.Set(float64(rank))
	m.world.Set(float64(world))
}

// SetState sets the worker's state (one of the State constants).
func (m *WorkerMetrics) SetState(state string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if state == m.curState {
		return
	}
	m.curState = state
	for _, s := range workerStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(s).Set(v)
	}
}

// State returns the state last set.
func (m *WorkerMetrics) State() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.curState
}

// RingFailure counts a ring failure this worker noticed.
func (m *WorkerMetrics) RingFailure() {
	if m != nil {
		m.failures.Inc()
	}
}

// Rollback counts a rollback to a committed step.
func (m *WorkerMetrics) Rollback() {
	if m != nil {
		m.rollbacks.Inc()
	}
}

// CheckpointWritten records a durable checkpoint of size bytes that took d.
func (m *WorkerMetrics) CheckpointWritten(d time.Duration, bytes int64) {
	if m == nil {
		return
	}
	m.ckptSeconds.Observe(d.Seconds())
	m.ckptBytes.Add(float64(bytes))
}

// SetDevice labels ringtrain_worker_device_info with the worker's
// backend, device name and precision.
func (m *WorkerMetrics) SetDevice(backend, name, precision string) {
	if m != nil {
		m.devInfo.Reset()
		m.devInfo.WithLabelValues(backend, name, precision).Set(1)
	}
}

// SetDeviceMemory records a GPU worker's device memory (bytes).
func (m *WorkerMetrics) SetDeviceMemory(live, cached, peak, total uint64) {
	if m != nil {
		m.devMem.WithLabelValues("live").Set(float64(live))
		m.devMem.WithLabelValues("cached").Set(float64(cached))
		m.devMem.WithLabelValues("peak").Set(float64(peak))
		m.devMem.WithLabelValues("total").Set(float64(total))
	}
}

// SetLoaderQueue records how many batches the data loader has ready.
func (m *WorkerMetrics) SetLoaderQueue(n int) {
	if m != nil {
		m.loaderQueue.Set(float64(n))
	}
}

// Stepping is a readiness check: nil while this worker's last step was
// under the plan generation gen (the current one) and no older than
// within.
func (m *WorkerMetrics) Stepping(gen uint64, within time.Duration) error {
	m.mu.Lock()
	last, lastGen, state := m.lastStep, m.lastGen, m.curState
	m.mu.Unlock()
	switch {
	case last.IsZero():
		return fmt.Errorf("no step trained yet (%s)", state)
	case lastGen != gen:
		return fmt.Errorf("last step was under plan generation %d, current is %d (%s)", lastGen, gen, state)
	case time.Since(last) > within:
		return fmt.Errorf("no step for %s (%s)", time.Since(last).Round(time.Second), state)
	}
	return nil
}

// CoordinatorMetrics are a coordinator replica's metrics on their own
// registry (with the Go runtime and process collectors). The job figures
// come from the workers' reports, which only the leader receives. Safe for
// concurrent use.
type CoordinatorMetrics struct {
	Registry *prometheus.Registry

	StepSeconds   *prometheus.HistogramVec
	Step          prometheus.Gauge
	Epoch         prometheus.Gauge
	CommittedStep prometheus.Gauge
	ImagesPerSec  prometheus.Gauge
	Images        prometheus.Counter
	TrainLoss     prometheus.Gauge
	TrainAcc      prometheus.Gauge
	ValLoss       prometheus.Gauge
	ValAcc        prometheus.Gauge
	AllReduceB    prometheus.Counter
	Busbw         prometheus.Gauge
	Hidden        prometheus.Gauge
	RingRebuilds  *prometheus.CounterVec
	Failures      prometheus.Counter
	Rollbacks     prometheus.Counter
	Checkpoints   prometheus.Counter
	CkptFailures  prometheus.Counter
	CkptBytes     prometheus.Gauge
	CkptSeconds   prometheus.Histogram
	Members       *prometheus.GaugeVec
	Generation    prometheus.Gauge
	RaftLeader    prometheus.Gauge
	RaftTerm      prometheus.Gauge
	LeaderChanges prometheus.Counter
	Status        *prometheus.GaugeVec
}

// Job statuses, the label values of ringtrain_job_status.
var jobStatuses = []string{"waiting", "running", "paused", "done"}

// Reasons for a new plan, the label values of ringtrain_ring_rebuilds_total.
const (
	ReasonJoin    = "join"
	ReasonLeave   = "leave"
	ReasonFailure = "failure"
	ReasonScale   = "scale"
	ReasonDone    = "done"
)

// NewCoordinatorMetrics registers a coordinator's collectors on a new
// registry.
func NewCoordinatorMetrics() *CoordinatorMetrics {
	r, f, g, c := newRegistry()
	m := &CoordinatorMetrics{Registry: r}
	m.StepSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ringtrain_step_seconds",
		Help:    "Training step time reported by the workers, whole (phase=step) and by part (data, compute, allreduce_exposed, optimizer).",
		Buckets: stepBuckets}, []string{"phase"})
	f(m.StepSeconds)
	m.Step = g("ringtrain_job_step", "Steps done, as rank 0 last reported.")
	m.Epoch = g("ringtrain_job_epoch", "0-based epoch rank 0 last reported.")
	m.CommittedStep = g("ringtrain_job_committed_step", "Last step made durable (checkpointed and committed).")
	m.ImagesPerSec = g("ringtrain_job_images_per_second", "Training throughput of all planned workers together.")
	m.Images = c("ringtrain_job_images_total", "Training images reported by all workers.")
	m.TrainLoss = g("ringtrain_train_loss", "Training loss of the last reported step (global batch).")
	m.TrainAcc = g("ringtrain_train_accuracy_ratio", "Training top-1 accuracy of the last reported step (0..1).")
	m.ValLoss = g("ringtrain_validation_loss", "Validation loss at the last epoch end.")
	m.ValAcc = g("ringtrain_validation_accuracy_ratio", "Validation top-1 accuracy at the last epoch end (0..1).")
	m.AllReduceB = c("ringtrain_allreduce_bytes_total", "Bytes all-reduced, as reported by the workers.")
	m.Busbw = g("ringtrain_allreduce_busbw_bytes_per_second", "Bus bandwidth of rank 0's last all-reduce (nccl-tests definition).")
	m.Hidden = g("ringtrain_allreduce_hidden_ratio", "Fraction of rank 0's last all-reduce hidden behind backward (0..1).")
	m.RingRebuilds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ringtrain_ring_rebuilds_total",
		Help: "New plans (rings) published, by reason: join, leave, failure, scale, done."}, []string{"reason"})
	f(m.RingRebuilds)
	m.Failures = c("ringtrain_failures_total", "Failures noticed: ring failures reported by workers that produced a new plan.")
	m.Rollbacks = c("ringtrain_rollbacks_total", "Rollbacks of the job to its committed step.")
	m.Checkpoints = c("ringtrain_checkpoints_total", "Checkpoints recorded.")
	m.CkptFailures = c("ringtrain_checkpoint_write_failures_total", "Checkpoint writes that failed (reported by rank 0; training goes on).")
	m.CkptBytes = g("ringtrain_checkpoint_size_bytes", "Size of the newest checkpoint.")
	m.CkptSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ringtrain_checkpoint_write_seconds",
		Help: "Time from the start of a checkpoint's write until it was recorded.", Buckets: stepBuckets})
	f(m.CkptSeconds)
	m.Members = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringtrain_members",
		Help: "Workers by state (joining, syncing, training, stalled, gone)."}, []string{"state"})
	f(m.Members)
	m.Generation = g("ringtrain_plan_generation", "Generation of the current plan.")
	m.RaftLeader = g("ringtrain_raft_leader", "1 when this replica is the raft leader.")
	m.RaftTerm = g("ringtrain_raft_term", "This replica's raft term.")
	m.LeaderChanges = c("ringtrain_raft_leader_changes_total", "Leader changes this replica saw.")
	m.Status = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringtrain_job_status",
		Help: "1 for the job's status (waiting, running, paused, done), 0 for the others."}, []string{"status"})
	f(m.Status)
	for _, r := range []string{ReasonJoin, ReasonLeave, ReasonFailure, ReasonScale, ReasonDone} {
		m.RingRebuilds.WithLabelValues(r)
	}
	for _, p := range []string{PhaseStep, PhaseData, PhaseCompute, PhaseExposed, PhaseOptimizer} {
		m.StepSeconds.WithLabelValues(p)
	}
	m.SetMembers(map[string]int{})
	m.SetStatus("waiting")
	return m
}

// ObserveStep records one worker's reported step.
func (m *CoordinatorMetrics) ObserveStep(s StepSample, rank int) {
	observePhases(m.StepSeconds, s)
	m.Images.Add(float64(s.Images))
	if s.AllReduceBytes > 0 {
		m.AllReduceB.Add(float64(s.AllReduceBytes))
	}
	if rank != 0 {
		return
	}
	m.Step.Set(float64(s.Step))
	m.Epoch.Set(float64(s.Epoch))
	m.TrainLoss.Set(s.Loss)
	m.TrainAcc.Set(s.Accuracy)
	if s.Comm > 0 {
		m.Busbw.Set(BusBandwidth(s.AllReduceBytes, s.Comm, s.World))
		m.Hidden.Set(HiddenRatio(s.Hidden, s.Comm))
	}
}

// SetMembers sets the member counts by state (missing states are 0).
func (m *CoordinatorMetrics) SetMembers(byState map[string]int) {
	for _, s := range workerStates {
		m.Members.WithLabelValues(s).Set(float64(byState[s]))
	}
}

// SetStatus sets the job's status.
func (m *CoordinatorMetrics) SetStatus(status string) {
	for _, s := range jobStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		m.Status.WithLabelValues(s).Set(v)
	}
}

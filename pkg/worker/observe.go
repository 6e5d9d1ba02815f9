package worker

import (
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/observe"
)

// readyWindow is how long a worker stays ready after its last step (an
// epoch's evaluation or a checkpoint capture pauses stepping).
func (m *machine) readyWindow() time.Duration {
	return max(2*time.Duration(m.Spec.DeadlineSec*float64(time.Second)), 20*time.Second)
}

// ready: this worker is in the current plan and stepping.
func (m *machine) ready() error {
	p, _ := m.plans.get()
	if p == nil {
		return errNotPlanned("no plan yet")
	}
	if p.GetYourRank() < 0 {
		return errNotPlanned("not in the current plan")
	}
	return m.Metrics.Stepping(p.GetGeneration(), m.readyWindow())
}

type errNotPlanned string

func (e errNotPlanned) Error() string { return string(e) }

// observeStep records a finished step in the worker's metrics: the same
// measurements as the step report's phases (res.Phases, dataWait).
func (m *machine) observeStep(res StepResult, gen uint64, epoch, world int, ips float64, queued int, dataWait time.Duration, mem nn.DeviceMemory) {
	ph := res.Phases
	ph.DataWait = dataWait
	m.Metrics.SetLoaderQueue(queued)
	if mem != (nn.DeviceMemory{}) {
		m.Metrics.SetDeviceMemory(mem.Live, mem.Cached, mem.Peak, mem.Total)
	}
	m.Metrics.ObserveStep(observe.StepSample{Step: m.t.Step, Epoch: epoch, Generation: gen, World: world,
		Loss: res.Loss, Accuracy: float64(res.Correct) / float64(max(res.N, 1)), Images: res.LocalN, Duration: ph.Total(),
		Data: ph.DataWait, Compute: ph.Compute, Exposed: ph.Exposed, Optimizer: ph.Optimizer,
		AllReduceBytes: res.Comm.Bytes, Comm: res.Comm.Comm, Hidden: res.Comm.Hidden, ImagesPerSec: ips, Time: time.Now()})
}

// deviceMemory is a device backend's memory (zero for the CPU), read
// between steps on the goroutine that issues the backend's ops.
func (m *machine) deviceMemory() nn.DeviceMemory {
	if r, ok := m.t.B.(nn.DeviceMemoryReporter); ok {
		return r.DeviceMemory()
	}
	return nn.DeviceMemory{}
}

// checkpointSubmitted and checkpointDone time rank 0's checkpoint writes.
func (m *machine) checkpointSubmitted(step int64) {
	m.mu.Lock()
	m.submitted[step] = time.Now()
	m.mu.Unlock()
}

func (m *machine) checkpointDone(step, bytes int64) {
	m.mu.Lock()
	t, ok := m.submitted[step]
	for s := range m.submitted {
		if s <= step {
			delete(m.submitted, s)
		}
	}
	m.mu.Unlock()
	if ok {
		m.Metrics.CheckpointWritten(time.Since(t), bytes)
	}
}

// logLeaderChange logs the control client moving to another coordinator
// replica: the first contact (possibly redirected by a follower), or a
// failover from a leader that stopped answering or stepped down.
func logLeaderChange(log *zap.Logger, c control.LeaderChange) {
	switch {
	case c.From == "" && c.Via != "":
		log.Info("coordinator redirect: a follower named the leader", zap.String("follower", c.Via), zap.String("leader", c.To))
	case c.From == "":
		log.Info("coordinator leader", zap.String("leader", c.To))
	default:
		log.Warn("coordinator failover: the leader changed", zap.String("from", c.From), zap.String("to", c.To),
			zap.String("redirected_by", c.Via), zap.String("reason", c.Reason))
	}
}

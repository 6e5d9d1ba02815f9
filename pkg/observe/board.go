package observe

import (
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// JobView is the job as the dashboard's first screen shows it.
type JobView struct {
	Name          string          `json:"name"`
	Replica       string          `json:"replica"` // this coordinator replica's id
	Leader        string          `json:"leader"`  // the leader replica's id ("" unknown)
	IsLeader      bool            `json:"is_leader"`
	Status        string          `json:"status"` // waiting, running, paused, done
	Generation    uint64          `json:"generation"`
	Epochs        int             `json:"epochs"`
	StepsPerEpoch int             `json:"steps_per_epoch"`
	TotalSteps    int64           `json:"total_steps"`
	Step          int64           `json:"step"`  // steps done (rank 0's last report)
	Epoch         int64           `json:"epoch"` // 0-based epoch of that step
	Committed     int64           `json:"committed"`
	ImagesPerSec  float64         `json:"images_per_sec"`
	ETASeconds    float64         `json:"eta_seconds"` // -1: unknown
	Started       time.Time       `json:"started"`
	Updated       time.Time       `json:"updated"`
	Spec          json.RawMessage `json:"spec,omitempty"`
	Files         []FileView      `json:"files"`
}

// FileView is an output file offered for download.
type FileView struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	URL  string `json:"url"`
}

// StepPoint is one step on the per-step curves (rank 0's report).
type StepPoint struct {
	Step         int64   `json:"step"`
	Epoch        int64   `json:"epoch"`
	Loss         float64 `json:"loss"`
	Accuracy     float64 `json:"accuracy"`
	LR           float64 `json:"lr"`
	ImagesPerSec float64 `json:"images_per_sec"`
	TimeMS       int64   `json:"time_ms"` // when the worker finished it, Unix ms
}

// EpochPoint is one epoch on the per-epoch curves.
type EpochPoint struct {
	Epoch        int     `json:"epoch"` // 1-based
	Steps        int64   `json:"steps"`
	TrainLoss    float64 `json:"train_loss"`
	TrainAcc     float64 `json:"train_acc"`
	ValLoss      float64 `json:"val_loss"`
	ValAcc       float64 `json:"val_acc"`
	ImagesPerSec float64 `json:"images_per_sec"`
	LR           float64 `json:"lr"`
	Seconds      float64 `json:"seconds"`
}

// WorkerView is one worker's row.
type WorkerView struct {
	ID           string  `json:"id"`
	Host         string  `json:"host"`
	Device       string  `json:"device"`
	Address      string  `json:"address"`
	Rank         int     `json:"rank"` // -1: not planned
	State        string  `json:"state"`
	Step         int64   `json:"step"`
	ImagesPerSec float64 `json:"images_per_sec"`
	// The last step's time and its parts, milliseconds (0: not measured).
	StepMS      float64   `json:"step_ms"`
	DataMS      float64   `json:"data_ms"`
	ComputeMS   float64   `json:"compute_ms"`
	ExposedMS   float64   `json:"exposed_ms"`
	OptimizerMS float64   `json:"optimizer_ms"`
	BusbwGBs    float64   `json:"busbw_gbs"` // GB/s
	Hidden      float64   `json:"hidden"`    // 0..1
	LastSeen    time.Time `json:"last_seen"` // last report received
	// A GPU worker's device memory held by its backend and the device's
	// total, GiB (0: a CPU worker, or not reported).
	DeviceMemGiB   float64 `json:"device_mem_gib"`
	DeviceTotalGiB float64 `json:"device_total_gib"`
}

// LinkView is one link of the ring, from a rank to the next.
type LinkView struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Transport string `json:"transport"` // shared memory, TCP, TLS
}

// RingView is the current ring.
type RingView struct {
	Order    []string   `json:"order"` // worker ids in rank order
	Links    []LinkView `json:"links"`
	BusbwGBs float64    `json:"busbw_gbs"`
	Hidden   float64    `json:"hidden"`
}

// Event is one entry of the timeline.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // plan, failure, rollback, checkpoint, leader, resume, epoch, done
	Text string    `json:"text"`
}

// Snapshot is the whole board at one moment. Steps holds the points from
// StepsFrom on.
type Snapshot struct {
	Seq       uint64       `json:"seq"`
	Job       JobView      `json:"job"`
	Workers   []WorkerView `json:"workers"`
	Ring      RingView     `json:"ring"`
	Events    []Event      `json:"events"`
	Epochs    []EpochPoint `json:"epochs"`
	StepsFrom int          `json:"steps_from"` // absolute index of Steps[0]
	StepsEnd  int          `json:"steps_end"`  // absolute index after the last point
	Steps     []StepPoint  `json:"steps"`
}

// Board limits.
const (
	maxSteps  = 20000 // older points are thinned out (every second one dropped)
	maxEvents = 500
)

// Board is the dashboard's model of the job. The coordinator writes it;
// the dashboard's handlers read copies. Safe for concurrent use.
type Board struct {
	mu       sync.Mutex // guards every field below
	seq      uint64
	job      JobView
	workers  map[string]*WorkerView
	ring     RingView
	events   []Event
	epochs   []EpochPoint
	steps    []StepPoint
	base     int // absolute index of steps[0] as clients see it
	thinned  int // absolute index clients must reload from after a thinning
	changed  chan struct{}
	lastStep int64
}

// NewBoard returns an empty board.
func NewBoard() *Board {
	return &Board{workers: map[string]*WorkerView{}, changed: make(chan struct{}), job: JobView{ETASeconds: -1, Status: "waiting"}}
}

func (b *Board) notifyLocked() {
	b.seq++
	close(b.changed)
	b.changed = make(chan struct{})
}

// Changed returns a channel closed at the board's next change.
func (b *Board) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// UpdateJob changes the job view under the board's lock.
func (b *Board) UpdateJob(f func(*JobView)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.job)
	b.job.Updated = time.Now()
	b.notifyLocked()
}

// Job returns a copy of the job view.
func (b *Board) Job() JobView {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.job
}

// AddStep appends a point to the per-step curves. A step that is not
// after the last one (trained again after a rollback) is appended too:
// the curve shows what was trained, in order.
func (b *Board) AddStep(p StepPoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.steps = append(b.steps, p)
	if len(b.steps) > maxSteps {
		// Thin the older half: every second point goes.
		half := len(b.steps) / 2
		kept := b.steps[:0]
		for i, s := range b.steps {
			if i >= half || i%2 == 0 {
				kept = append(kept, s)
			}
		}
		b.base += len(b.steps) - len(kept)
		b.steps = kept
		b.thinned = b.base + len(b.steps)
	}
	b.lastStep = p.Step
	b.notifyLocked()
}

// AddEpoch records an epoch's figures, replacing an earlier record of it.
func (b *Board) AddEpoch(e EpochPoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.epochs {
		if b.epochs[i].Epoch == e.Epoch {
			b.epochs[i] = e
			b.notifyLocked()
			return
		}
	}
	b.epochs = append(b.epochs, e)
	sort.Slice(b.epochs, func(i, j int) bool { return b.epochs[i].Epoch < b.epochs[j].Epoch })
	b.notifyLocked()
}

// UpdateWorker changes (creating it when new) worker id's row.
func (b *Board) UpdateWorker(id string, f func(*WorkerView)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.workers[id]
	if w == nil {
		w = &WorkerView{ID: id, Rank: -1, State: StateJoining}
		b.workers[id] = w
	}
	f(w)
	b.notifyLocked()
}

// Workers returns copies of the worker rows, ordered by rank (planned
// first) then id.
func (b *Board) Workers() []WorkerView {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.workersLocked()
}

func (b *Board) workersLocked() []WorkerView {
	out := make([]WorkerView, 0, len(b.workers))
	for _, w := range b.workers {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := out[i].Rank, out[j].Rank
		if (ri >= 0) != (rj >= 0) {
			return ri >= 0
		}
		if ri != rj {
			return ri < rj
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// SetRing replaces the ring view.
func (b *Board) SetRing(r RingView) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ring = r
	b.notifyLocked()
}

// UpdateRing changes the ring view under the board's lock.
func (b *Board) UpdateRing(f func(*RingView)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.ring)
	b.notifyLocked()
}

// AddEvent appends an event to the timeline (the oldest go beyond 500).
func (b *Board) AddEvent(kind, text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, Event{Time: time.Now(), Kind: kind, Text: text})
	if len(b.events) > maxEvents {
		b.events = append([]Event(nil), b.events[len(b.events)-maxEvents:]...)
	}
	b.notifyLocked()
}

// Snapshot returns a copy of the board with the step points from absolute
// index from on (0: all; an index before a thinning returns all points).
func (b *Board) Snapshot(from int) Snapshot { return b.snapshot(from, maxEvents) }

// snapshot is Snapshot with only the newest events (at most n).
func (b *Board) snapshot(from, events int) Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	if from < b.thinned || from < b.base {
		from = b.base
	}
	end := b.base + len(b.steps)
	if from > end {
		from = b.base // a client of an earlier process: start over
	}
	s := Snapshot{Seq: b.seq, Job: b.job, Workers: b.workersLocked(), Ring: b.ring,
		Events: append([]Event(nil), b.events[max(0, len(b.events)-events):]...), Epochs: append([]EpochPoint(nil), b.epochs...),
		StepsFrom: from, StepsEnd: end, Steps: append([]StepPoint(nil), b.steps[from-b.base:]...)}
	s.Ring.Order = append([]string(nil), b.ring.Order...)
	s.Ring.Links = append([]LinkView(nil), b.ring.Links...)
	s.Job.Files = append([]FileView(nil), b.job.Files...)
	return s
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/report"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// progress turns the workers' metric reports into a progress bar per
// epoch on the coordinator's terminal and into the history files.
type progress struct {
	out           io.Writer
	log           *zap.Logger
	outputDir     string
	stepsPerEpoch int
	bar           bool

	mu       sync.Mutex // guards everything below
	hist     report.History
	epoch    int64 // epoch of the current bar, -1 before the first report
	pb       *progressbar.ProgressBar
	lossSum  float64
	accSum   float64
	n        int64
	ips      map[int32]float64 // latest images/s per rank
	started  time.Time
	lastStep int64
	lastLR   float64
	lr       func(step int64) float64 // learning rate of a step (0-based); nil: unknown
	steps    *os.File                 // steps.jsonl; nil when it could not be opened
	onEpoch  func(report.Epoch)       // called with every epoch's record; nil: none
	onEvent  func(kind, text string)  // called with timeline events (resume); nil: none
	restored bool                     // the record of an earlier run was read back (see restore)
}

// StepsFile is the per-step metrics log in the output directory: one JSON
// line per step reported by rank 0 (a step trained again after a rollback
// appears again, with a newer generation; the last line of a step wins;
// a report sent again after a lost answer may repeat a line).
const StepsFile = "steps.jsonl"

// stepLine is one line of StepsFile.
type stepLine struct {
	Step         int64   `json:"step"`  // steps done after this one
	Epoch        int64   `json:"epoch"` // 0-based epoch the step belongs to
	Loss         float64 `json:"loss"`
	Accuracy     float64 `json:"accuracy"`
	LR           float64 `json:"lr"`
	ImagesPerSec float64 `json:"images_per_sec"` // all workers together
	Generation   uint64  `json:"generation"`
	Samples      int64   `json:"samples,omitempty"` // global batch behind loss and accuracy
	// Time is when the worker finished the step (its clock; the leader's
	// receipt time for reports of workers that do not say).
	Time string `json:"time"`
	// Phases is where rank 0's step went (see controlpb.StepPhases).
	Phases *phasesLine `json:"phases,omitempty"`
}

// phasesLine is controlpb.StepPhases in steps.jsonl: seconds, bytes,
// bytes/s.
type phasesLine struct {
	Step      float64 `json:"step_s"`
	DataWait  float64 `json:"data_wait_s"`
	Compute   float64 `json:"compute_s"`
	Exposed   float64 `json:"exposed_allreduce_s"`
	Optimizer float64 `json:"optimizer_s"`
	AllReduce float64 `json:"allreduce_s"`
	Hidden    float64 `json:"hidden_fraction"`
	Bytes     int64   `json:"allreduce_bytes"`
	BusBW     float64 `json:"busbw_bytes_per_s"`
	Buckets   int32   `json:"buckets"`
	World     int32   `json:"world"`
	Emulated  bool    `json:"emulated_compute,omitempty"`
	EndUnixNs int64   `json:"end_unix_ns,omitempty"`
}

func phasesOf(p *controlpb.StepPhases) *phasesLine {
	if p == nil {
		return nil
	}
	return &phasesLine{Step: p.GetStepSeconds(), DataWait: p.GetDataWaitSeconds(), Compute: p.GetComputeSeconds(),
		Exposed: p.GetExposedAllreduceSeconds(), Optimizer: p.GetOptimizerSeconds(), AllReduce: p.GetAllreduceSeconds(),
		Hidden: p.GetHiddenFraction(), Bytes: p.GetAllreduceBytes(), BusBW: p.GetBusbwBytesPerSecond(),
		Buckets: p.GetBuckets(), World: p.GetWorld(), Emulated: p.GetEmulatedCompute(), EndUnixNs: p.GetEndUnixNano()}
}

func newProgress(out io.Writer, log *zap.Logger, outputDir string, stepsPerEpoch int, bar bool) *progress {
	return &progress{out: out, log: log, outputDir: outputDir, stepsPerEpoch: stepsPerEpoch, bar: bar,
		epoch: -1, ips: map[int32]float64{}, hist: report.History{Job: filepath.Base(outputDir)}}
}

func (p *progress) imagesPerSec() float64 {
	s := 0.0
	for _, v := range p.ips {
		s += v
	}
	return s
}

// onMetrics is the coordinator service's OnMetrics hook.
func (p *progress) onMetrics(m *controlpb.MetricsReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch m.GetPhase() {
	case "train":
		p.ips[m.GetRank()] = m.GetImagesPerSec()
		if m.GetRank() != 0 {
			return // loss and accuracy are global: rank 0's reports suffice
		}
		if !p.restored && m.GetStep() > p.lastStep+1 {
			// The first report of this process comes after steps it never
			// saw: a resumed job (state directory kept or lost) or a new
			// leader. Read back the record of those steps.
			p.restoreLocked(m.GetStep() - 1)
		}
		p.restored = true
		if m.GetStep() <= p.lastStep {
			// A step trained again after a rollback: logged, not counted twice.
			p.writeStep(m)
			return
		}
		p.lastStep = m.GetStep()
		if p.lr != nil {
			p.lastLR = p.lr(m.GetStep() - 1)
		}
		p.writeStep(m)
		if m.GetEpoch() != p.epoch {
			p.newEpoch(m.GetEpoch(), stepTime(m))
		}
		w := float64(m.GetSamples())
		p.lossSum += m.GetLoss() * w
		p.accSum += m.GetAccuracy() * w
		p.n += m.GetSamples()
		if p.pb != nil {
			inEpoch := int(m.GetStep()) - int(m.GetEpoch())*p.stepsPerEpoch
			p.pb.Describe(fmt.Sprintf("epoch %d  loss %.4f  acc %5.1f%%  %6.0f img/s",
				m.GetEpoch()+1, p.lossSum/float64(max(p.n, 1)), 100*p.accSum/float64(max(p.n, 1)), p.imagesPerSec()))
			_ = p.pb.Set(max(inEpoch, 0))
		}
	case "eval":
		if m.GetRank() != 0 {
			return
		}
		if p.pb != nil {
			_ = p.pb.Finish()
			fmt.Fprintln(p.out)
			p.pb = nil
		}
		e := report.Epoch{Epoch: int(m.GetEpoch()) + 1, Steps: m.GetStep(),
			TrainLoss: p.lossSum / float64(max(p.n, 1)), TrainAcc: p.accSum / float64(max(p.n, 1)),
			ValLoss: m.GetLoss(), ValAcc: m.GetAccuracy(), ImagesPerSec: p.imagesPerSec(),
			Seconds: stepTime(m).Sub(p.started).Seconds(), Workers: len(p.ips), LR: p.lastLR}
		p.hist.Add(e)
		if p.onEpoch != nil {
			p.onEpoch(e)
		}
		p.log.Info("epoch", zap.Int("epoch", e.Epoch), zap.Float64("train_loss", e.TrainLoss), zap.Float64("train_acc", e.TrainAcc),
			zap.Float64("val_loss", e.ValLoss), zap.Float64("val_acc", e.ValAcc), zap.Float64("images_per_sec", e.ImagesPerSec))
		if err := p.hist.Write(p.outputDir); err != nil {
			p.log.Error("history not written", zap.Error(err))
		}
	}
}

// newEpoch starts the figures of epoch, whose first step ended at t.
func (p *progress) newEpoch(epoch int64, t time.Time) {
	if p.pb != nil {
		_ = p.pb.Finish()
		fmt.Fprintln(p.out)
	}
	p.epoch, p.lossSum, p.accSum, p.n, p.started = epoch, 0, 0, 0, t
	p.newBar(epoch)
}

func (p *progress) newBar(epoch int64) {
	if p.bar {
		p.pb = progressbar.NewOptions(p.stepsPerEpoch,
			progressbar.OptionSetWriter(p.out),
			progressbar.OptionSetDescription(fmt.Sprintf("epoch %d", epoch+1)),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetWidth(24),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
}

// writeStep appends m (a rank-0 train report) to steps.jsonl.
func (p *progress) writeStep(m *controlpb.MetricsReport) {
	if p.steps == nil {
		return
	}
	l := stepLine{Step: m.GetStep(), Epoch: m.GetEpoch(), Loss: m.GetLoss(), Accuracy: m.GetAccuracy(),
		ImagesPerSec: p.imagesPerSec(), Generation: m.GetGeneration(), Samples: m.GetSamples(), Time: stepTime(m).UTC().Format(time.RFC3339Nano),
		Phases: phasesOf(m.GetPhases())}
	if p.lr != nil {
		l.LR = p.lr(m.GetStep() - 1)
	}
	b, err := json.Marshal(l)
	if err != nil {
		return
	}
	if _, err := p.steps.Write(append(b, '\n')); err != nil {
		p.log.Warn("steps.jsonl not written", zap.Error(err))
		p.steps.Close()
		p.steps = nil
	}
}

// openSteps opens steps.jsonl for appending (a resumed job goes on with
// the same file).
func (p *progress) openSteps() {
	f, err := os.OpenFile(filepath.Join(p.outputDir, StepsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.log.Warn("steps.jsonl not opened", zap.Error(err))
		return
	}
	p.steps = f
}

// resume continues the history of an earlier run of the job (a restarted
// coordinator, or a replica that became leader) up to the committed step.
func (p *progress) resume(lastStep int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.restored {
		p.restoreLocked(lastStep)
		p.restored = true
	}
}

// finish writes the history one last time.
func (p *progress) finish() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.steps != nil {
		p.steps.Close()
		p.steps = nil
	}
	if p.pb != nil {
		_ = p.pb.Finish()
		fmt.Fprintln(p.out)
		p.pb = nil
	}
	if len(p.hist.Epochs) == 0 {
		return nil // nothing seen (a follower replica): keep the leader's files
	}
	// A replica that led for a while and lost the lead holds an early part
	// of the history; the leader that finished the job wrote all of it
	// (seen in the chart's cluster test: a stale replica's 14 epochs
	// replaced the 40 of the leader): keep the longer record.
	if old, err := report.ReadHistory(filepath.Join(p.outputDir, report.JSONFile)); err == nil && len(old.Epochs) > len(p.hist.Epochs) {
		return nil
	}
	return p.hist.Write(p.outputDir)
}

func (p *progress) history() report.History {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hist
}

// stepTime is when the worker finished the step of m (the receipt time
// when the worker did not say).
func stepTime(m *controlpb.MetricsReport) time.Time {
	if m.GetUnixNano() > 0 {
		return time.Unix(0, m.GetUnixNano())
	}
	return time.Now()
}

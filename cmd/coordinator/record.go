package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
	"github.com/ringtrain/ringtrain/pkg/report"
)

// readStepLines reads steps.jsonl: for every step up to upTo, its last
// line (a step trained again after a rollback, or a report sent twice,
// appears more than once). Unreadable lines are skipped.
func readStepLines(path string, upTo int64) map[int64]stepLine {
	out := map[int64]stepLine{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l stepLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Step <= 0 || l.Step > upTo {
			continue
		}
		out[l.Step] = l
	}
	return out
}

// epochFigures sums step lines of one epoch into train loss and accuracy
// weighted by each step's samples (1 for old lines without them).
type epochFigures struct {
	lossSum, accSum float64
	n               int64
	first, last     stepLine
	ipsSum          float64
	lines           int
}

func (e *epochFigures) add(l stepLine) {
	w := l.Samples
	if w <= 0 {
		w = 1
	}
	e.lossSum += l.Loss * float64(w)
	e.accSum += l.Accuracy * float64(w)
	e.n += w
	e.ipsSum += l.ImagesPerSec
	if e.lines == 0 || l.Step < e.first.Step {
		e.first = l
	}
	if e.lines == 0 || l.Step > e.last.Step {
		e.last = l
	}
	e.lines++
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// restoreLocked rebuilds the record of the steps up to upTo that this
// process did not see: whole epochs from history.json when it has them,
// else from steps.jsonl (train figures) and the epoch-end checkpoint's
// meta.json (validation figures); and the sums of the epoch upTo is in, so
// that its train loss and accuracy cover the whole epoch. p.mu is held.
func (p *progress) restoreLocked(upTo int64) {
	if upTo <= 0 {
		return
	}
	lines := readStepLines(filepath.Join(p.outputDir, StepsFile), upTo)
	byEpoch := map[int64]*epochFigures{}
	for _, l := range lines {
		e := byEpoch[l.Epoch]
		if e == nil {
			e = &epochFigures{}
			byEpoch[l.Epoch] = e
		}
		e.add(l)
	}
	old, _ := report.ReadHistory(filepath.Join(p.outputDir, report.JSONFile))
	fromHistory, rebuilt := 0, 0
	spe := int64(max(p.stepsPerEpoch, 1))
	for e := int64(0); (e+1)*spe <= upTo; e++ {
		if old != nil {
			found := false
			for _, h := range old.Epochs {
				if h.Epoch == int(e)+1 && h.Steps <= upTo {
					p.hist.Add(h)
					found = true
				}
			}
			if found {
				fromHistory++
				continue
			}
		}
		f := byEpoch[e]
		if f == nil {
			continue
		}
		rec := report.Epoch{Epoch: int(e) + 1, Steps: f.last.Step, TrainLoss: f.lossSum / float64(f.n), TrainAcc: f.accSum / float64(f.n),
			ImagesPerSec: f.ipsSum / float64(f.lines), LR: f.last.LR, Rebuilt: true}
		if d := parseTime(f.last.Time).Sub(parseTime(f.first.Time)); d > 0 {
			rec.Seconds = d.Seconds()
		}
		if m, ok := readCheckpointMeta(p.outputDir, f.last.Step); ok {
			if m.Accuracy != nil {
				rec.ValAcc = *m.Accuracy
			}
			if m.Loss != nil {
				rec.ValLoss = *m.Loss
			}
		}
		p.hist.Add(rec)
		rebuilt++
	}
	sort.Slice(p.hist.Epochs, func(i, j int) bool { return p.hist.Epochs[i].Epoch < p.hist.Epochs[j].Epoch })
	// The epoch in progress: its steps so far count in its figures.
	cur := (upTo - 1) / spe
	if l, ok := lines[upTo]; ok {
		cur = l.Epoch
	}
	partial := 0
	p.epoch, p.lossSum, p.accSum, p.n = cur, 0, 0, 0
	p.started = time.Now()
	if f := byEpoch[cur]; f != nil {
		p.lossSum, p.accSum, p.n = f.lossSum, f.accSum, f.n
		partial = f.lines
		if t := parseTime(f.first.Time); !t.IsZero() {
			p.started = t
		}
	}
	if p.pb == nil {
		p.newBar(cur)
	}
	if l, ok := lines[upTo]; ok {
		p.lastLR = l.LR
	}
	p.lastStep = max(p.lastStep, upTo)
	if len(p.hist.Epochs) > 0 && (fromHistory > 0 || rebuilt > 0) {
		if err := p.hist.Write(p.outputDir); err != nil {
			p.log.Warn("history not written", zap.Error(err))
		}
	}
	if p.onEvent != nil {
		p.onEvent("resume", fmt.Sprintf("resumed at step %d (epoch %d, %d of its steps before the resume counted); %d earlier epochs from history.json, %d rebuilt from steps.jsonl and checkpoints",
			upTo, cur+1, partial, fromHistory, rebuilt))
	}
	p.log.Info("resuming the job's record", zap.Int64("step", upTo), zap.Int("epochs_from_history", fromHistory),
		zap.Int("epochs_rebuilt_from_steps", rebuilt), zap.Int64("epoch", cur+1), zap.Int("steps_of_epoch_so_far", partial))
}

// readCheckpointMeta reads the meta.json of the checkpoint of step.
func readCheckpointMeta(outputDir string, step int64) (manifest.Meta, bool) {
	m, err := manifest.ReadMeta(filepath.Join(outputDir, "checkpoints"), step)
	return m, err == nil
}

// firstStepTime is when the job's first step recorded in steps.jsonl ran
// (the zero time when there is none).
func (p *progress) firstStepTime() time.Time {
	f, err := os.Open(filepath.Join(p.outputDir, StepsFile))
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l stepLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			return parseTime(l.Time)
		}
	}
	return time.Time{}
}

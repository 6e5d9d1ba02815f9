// Package report writes what a user reads after (and during) a training
// run: the per-epoch history as JSON and CSV, and PNG plots of the loss
// and accuracy curves (what the tutorial draws with matplotlib).
package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/ringtrain/ringtrain/internal/atomicfile"
)

// Epoch is one epoch's figures.
type Epoch struct {
	Epoch        int     `json:"epoch"` // 1-based
	Steps        int64   `json:"steps"` // optimizer steps done at its end
	TrainLoss    float64 `json:"train_loss"`
	TrainAcc     float64 `json:"train_acc"`
	ValLoss      float64 `json:"val_loss"`
	ValAcc       float64 `json:"val_acc"`
	ImagesPerSec float64 `json:"images_per_sec"`
	Seconds      float64 `json:"seconds"`
	Workers      int     `json:"workers"`
	LR           float64 `json:"lr"`
	// Rebuilt marks an epoch rebuilt from steps.jsonl and checkpoints
	// after the history was lost (validation loss 0 when no checkpoint
	// kept it).
	Rebuilt bool `json:"rebuilt,omitempty"`
}

// History is the run's record.
type History struct {
	Job    string  `json:"job"`
	Epochs []Epoch `json:"epochs"`
}

// Add records e, replacing an earlier record of the same epoch (a re-run
// after a rollback).
func (h *History) Add(e Epoch) {
	for i := range h.Epochs {
		if h.Epochs[i].Epoch == e.Epoch {
			h.Epochs[i] = e
			return
		}
	}
	h.Epochs = append(h.Epochs, e)
}

// Files written by Write.
const (
	JSONFile     = "history.json"
	CSVFile      = "history.csv"
	LossPlotFile = "loss.png"
	AccPlotFile  = "accuracy.png"
)

// Write stores history.json, history.csv, loss.png and accuracy.png in
// dir, each atomically.
func (h *History) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	j, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, JSONFile), append(j, '\n')); err != nil {
		return err
	}
	var c bytes.Buffer
	w := csv.NewWriter(&c)
	w.Write([]string{"epoch", "steps", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec", "seconds", "workers", "lr"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	for _, e := range h.Epochs {
		w.Write([]string{strconv.Itoa(e.Epoch), strconv.FormatInt(e.Steps, 10), f(e.TrainLoss), f(e.TrainAcc),
			f(e.ValLoss), f(e.ValAcc), f(e.ImagesPerSec), f(e.Seconds), strconv.Itoa(e.Workers), f(e.LR)})
	}
	w.Flush()
	if err := writeAtomic(filepath.Join(dir, CSVFile), c.Bytes()); err != nil {
		return err
	}
	if err := h.plot(filepath.Join(dir, LossPlotFile), "Loss", "loss",
		func(e Epoch) float64 { return e.TrainLoss }, func(e Epoch) float64 { return e.ValLoss }); err != nil {
		return err
	}
	return h.plot(filepath.Join(dir, AccPlotFile), "Accuracy", "accuracy (%)",
		func(e Epoch) float64 { return 100 * e.TrainAcc }, func(e Epoch) float64 { return 100 * e.ValAcc })
}

func (h *History) plot(path, title, ylabel string, train, val func(Epoch) float64) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	tr := make(plotter.XYs, len(h.Epochs))
	va := make(plotter.XYs, len(h.Epochs))
	for i, e := range h.Epochs {
		tr[i] = plotter.XY{X: float64(e.Epoch), Y: train(e)}
		va[i] = plotter.XY{X: float64(e.Epoch), Y: val(e)}
	}
	for _, s := range []struct {
		name string
		xy   plotter.XYs
		idx  int
	}{{"train", tr, 0}, {"validation", va, 1}} {
		l, pts, err := plotter.NewLinePoints(s.xy)
		if err != nil {
			return fmt.Errorf("report: %s: %w", path, err)
		}
		l.Color = plotColors[s.idx]
		pts.Color = plotColors[s.idx]
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	// Curves that rise (accuracy) keep the legend top left, falling ones
	// (loss) top right, so it stays clear of the lines.
	p.Legend.Top = true
	p.Legend.Left = strings.HasPrefix(title, "Acc")
	p.Legend.XOffs, p.Legend.YOffs = 0, -2*vg.Millimeter
	wt, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("report: %s: %w", path, err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return fmt.Errorf("report: %s: %w", path, err)
	}
	return writeAtomic(path, b.Bytes())
}

// writeAtomic replaces path with b through the engine's atomic writer
// (temporary file, fsync, rename, fsync of the directory).
func writeAtomic(path string, b []byte) error {
	if err := atomicfile.Write(path, b); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// ReadHistory loads a history.json.
func ReadHistory(path string) (*History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("report: %s: %w", path, err)
	}
	return &h, nil
}

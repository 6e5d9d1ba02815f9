package scale

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Files written by Result.Write.
const (
	JSONFile = "scale.json"
	CSVFile  = "scale.csv"
	PlotFile = "scale.png"
)

// Ratio is a ratio measured over interleaved rounds.
type Ratio struct {
	Rounds []float64 `json:"rounds"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

// NewRatio summarises per-round ratios.
func NewRatio(v []float64) Ratio {
	r := Ratio{Rounds: v, Median: Median(v)}
	for i, x := range v {
		if i == 0 || x < r.Min {
			r.Min = x
		}
		if i == 0 || x > r.Max {
			r.Max = x
		}
	}
	return r
}

// Unstable reports whether the rounds disagree about goal: some above it
// and some below, so one run could give either verdict.
func (r Ratio) Unstable(goal float64) bool { return len(r.Rounds) > 0 && r.Min < goal && r.Max >= goal }

// Setup records what was run.
type Setup struct {
	Model          string  `json:"model"`
	GradientBytes  int64   `json:"gradient_bytes"`
	BucketMB       float64 `json:"bucket_mb"`
	BatchPerWorker int     `json:"batch_per_worker"`
	Warmup         int     `json:"warmup_steps"`
	Steps          int     `json:"timed_steps"`
	Compute        float64 `json:"compute_s"` // emulated; 0 = real compute
	EmulatedHosts  int     `json:"emulated_hosts"`
	LinkBits       float64 `json:"link_bits_per_s"`
	MTU            int     `json:"mtu"`
	Cores          int     `json:"machine_cores"`
}

// Result is a whole bench run.
type Result struct {
	Setup      Setup        `json:"setup"`
	Link       *Link        `json:"link,omitempty"` // measured emulated link
	Points     []Point      `json:"points"`
	Model      *Model       `json:"model,omitempty"`
	ModelError float64      `json:"model_error"`    // worst |predicted-measured|/measured step time
	Ring       []GlooResult `json:"ring,omitempty"` // our all-reduce alone, measured as gloo
	Gloo       []GlooResult `json:"gloo,omitempty"`
	VsGloo     *Ratio       `json:"vs_gloo,omitempty"` // ours / gloo busbw at n=4, per round
	// GlooCeiling is the link rate over gloo's median n=4 busbw: the most
	// any all-reduce could beat gloo by over these links (a ring's busbw
	// cannot exceed the link rate; 0: not measured).
	GlooCeiling float64 `json:"gloo_ceiling,omitempty"`
	// Rounds holds every round of the sweep (Points are the median ones),
	// Efficiency each worker count's efficiency over the rounds, and
	// ModelErrors each round's worst model error.
	Rounds      [][]Point     `json:"rounds,omitempty"`
	Efficiency  map[int]Ratio `json:"efficiency_rounds,omitempty"`
	ModelErrors *Ratio        `json:"model_error_rounds,omitempty"`
	// Cluster is set in cluster mode: the coordinator the sweep ran on.
	Cluster   string       `json:"cluster,omitempty"`
	Predicted []PredictRow `json:"predicted,omitempty"`
	Summary   string       `json:"summary"`
}

// Write stores scale.json, scale.csv and scale.png in dir.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, JSONFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var c bytes.Buffer
	w := csv.NewWriter(&c)
	_ = w.Write([]string{"workers", "hosts", "batch_per_worker", "step_s", "images_per_sec", "images_per_sec_per_worker", "efficiency",
		"data_wait_s", "compute_s", "exposed_allreduce_s", "optimizer_s", "allreduce_s", "allreduce_bytes", "busbw_bytes_per_s",
		"hidden_fraction", "worker_cores", "machine_busy", "predicted_step_s", "predicted_efficiency", "model_error"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	for _, p := range r.Points {
		ps, pe := "", ""
		if p.Predicted != nil {
			ps, pe = f(p.Predicted.StepSeconds), f(p.Predicted.Efficiency)
		}
		_ = w.Write([]string{strconv.Itoa(p.Workers), strconv.Itoa(p.Hosts), strconv.Itoa(p.BatchPerWorker), f(p.StepSeconds), f(p.ImagesPerSec),
			f(p.PerWorker), f(p.Efficiency), f(p.DataWait), f(p.Compute), f(p.ExposedAllReduce), f(p.Optimizer), f(p.AllReduce),
			strconv.FormatInt(p.AllReduceBytes, 10), f(p.BusBW), f(p.HiddenFraction), f(p.WorkerCores), f(p.MachineBusy), ps, pe, f(p.ModelErrorStep)})
	}
	w.Flush()
	if err := os.WriteFile(filepath.Join(dir, CSVFile), c.Bytes(), 0o644); err != nil {
		return err
	}
	if len(r.Points) > 0 {
		return r.plot(filepath.Join(dir, PlotFile))
	}
	return nil
}

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	grey   = color.RGBA{R: 0x80, G: 0x80, B: 0x80, A: 0xff}
)

// plot draws throughput against workers with the linear ideal (and the
// model), and efficiency on a second panel.
func (r *Result) plot(path string) error {
	thr, eff := plot.New(), plot.New()
	thr.Title.Text, thr.X.Label.Text, thr.Y.Label.Text = "Throughput", "workers", "images/s"
	eff.Title.Text, eff.X.Label.Text, eff.Y.Label.Text = "Scaling efficiency", "workers", "efficiency (%)"
	thr.Add(plotter.NewGrid())
	eff.Add(plotter.NewGrid())
	var one float64
	for _, p := range r.Points {
		if p.Workers == 1 {
			one = p.ImagesPerSec
		}
	}
	meas, ideal, model := plotter.XYs{}, plotter.XYs{}, plotter.XYs{}
	em, emod := plotter.XYs{}, plotter.XYs{}
	for _, p := range r.Points {
		n := float64(p.Workers)
		meas = append(meas, plotter.XY{X: n, Y: p.ImagesPerSec})
		em = append(em, plotter.XY{X: n, Y: 100 * p.Efficiency})
		if one > 0 {
			ideal = append(ideal, plotter.XY{X: n, Y: n * one})
		}
		if p.Predicted != nil {
			model = append(model, plotter.XY{X: n, Y: p.Predicted.ImagesPerSec})
			emod = append(emod, plotter.XY{X: n, Y: 100 * p.Predicted.Efficiency})
		}
	}
	add := func(pl *plot.Plot, name string, xy plotter.XYs, c color.Color, dashed bool) error {
		if len(xy) == 0 {
			return nil
		}
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		l.Color, pts.Color = c, c
		if dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		pl.Add(l, pts)
		pl.Legend.Add(name, l, pts)
		return nil
	}
	for _, e := range []error{
		add(thr, "linear ideal", ideal, grey, true), add(thr, "measured", meas, blue, false), add(thr, "model", model, orange, true),
		add(eff, "measured", em, blue, false), add(eff, "model", emod, orange, true),
	} {
		if e != nil {
			return fmt.Errorf("scale: %s: %w", path, e)
		}
	}
	thr.Legend.Top, thr.Legend.Left = true, true
	eff.Y.Min, eff.Y.Max = 0, 110
	eff.Legend.Top = false
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{{thr, eff}}, tiles, dc)
	thr.Draw(canvases[0][0])
	eff.Draw(canvases[0][1])
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&b); err != nil {
		return fmt.Errorf("scale: %s: %w", path, err)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// Markdown is the measured table with the model beside it.
func (r *Result) Markdown() string {
	var s strings.Builder
	s.WriteString("| workers | hosts | images/s | per worker | efficiency | step ms | data | compute | exposed all-reduce | optimizer | busbw | hidden | model step ms | model eff. | error | cpu cores |\n")
	s.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Points {
		ms, me, er := "-", "-", "-"
		if p.Predicted != nil {
			ms = fmt.Sprintf("%.1f", 1e3*p.Predicted.StepSeconds)
			if p.Predicted.Efficiency > 0 { // 0: no one-worker point
				me = fmt.Sprintf("%.1f%%", 100*p.Predicted.Efficiency)
			}
			er = fmt.Sprintf("%+.1f%%", 100*p.ModelErrorStep)
		}
		eff := "-" // no one-worker point to compare with
		if p.Efficiency > 0 {
			eff = fmt.Sprintf("%.1f%%", 100*p.Efficiency)
		}
		cores := "-" // not measured (a cluster's workers)
		if p.MachineCores > 0 {
			cores = fmt.Sprintf("%.2f", p.WorkerCores)
		}
		fmt.Fprintf(&s, "| %d | %d | %.1f | %.1f | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %.0f%% | %s | %s | %s | %s |\n",
			p.Workers, p.Hosts, p.ImagesPerSec, p.PerWorker, eff, 1e3*p.StepSeconds, 1e3*p.DataWait, 1e3*p.Compute,
			1e3*p.ExposedAllReduce, 1e3*p.Optimizer, FormatBW(p.BusBW), 100*p.HiddenFraction, ms, me, er, cores)
	}
	return s.String()
}

// PredictedMarkdown is a predicted table.
func PredictedMarkdown(rows []PredictRow) string {
	var s strings.Builder
	s.WriteString("| link | workers | step ms | exposed all-reduce ms | all-reduce ms | hidden | busbw | images/s | efficiency |\n")
	s.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %d | %.2f | %.2f | %.2f | %.0f%% | %s | %.0f | %.1f%% |\n", FormatRate(r.LinkBits), r.Workers,
			1e3*r.StepSeconds, 1e3*r.Exposed, 1e3*r.AllReduce, 100*r.HiddenFraction, FormatBW(r.BusBW), r.ImagesPerSec, 100*r.Efficiency)
	}
	return s.String()
}

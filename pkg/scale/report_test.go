package scale

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// fakeReports feeds a collector what n workers report for steps 1..total.
func fakeReports(c *collector, n, total int, step time.Duration) {
	t0 := time.Unix(1_700_000_000, 0)
	for s := 1; s <= total; s++ {
		for r := 0; r < n; r++ {
			c.onMetrics(&controlpb.MetricsReport{WorkerId: fmt.Sprintf("w%d", r), Rank: int32(r), Step: int64(s), Phase: "train", Phases: &controlpb.StepPhases{
				StepSeconds: step.Seconds(), DataWaitSeconds: 0.001, ComputeSeconds: 0.08, ExposedAllreduceSeconds: step.Seconds() - 0.091,
				OptimizerSeconds: 0.01, AllreduceSeconds: 0.05, HiddenFraction: 0.5, AllreduceBytes: 1 << 20, BusbwBytesPerSecond: 1,
				Buckets: 2, World: int32(n), EmulatedCompute: true, EndUnixNano: t0.Add(time.Duration(s) * step).UnixNano()}})
		}
		c.onMetrics(&controlpb.MetricsReport{Rank: 0, Step: int64(s), Phase: "eval"}) // ignored
	}
}

// TestResultFilesHaveEveryField builds a result from reported phases and
// checks that scale.json has every field of every point, scale.csv a row
// per point and scale.png exists; and the point arithmetic.
func TestResultFilesHaveEveryField(t *testing.T) {
	var pts []Point
	for _, n := range []int{1, 2, 4} {
		c := newCollector("train", 0)
		step := time.Duration(100+10*n) * time.Millisecond
		fakeReports(c, n, 5, step)
		p, err := c.point(n, 2, 5, 16)
		if err != nil {
			t.Fatal(err)
		}
		if p.RingWorld != n || len(p.Reporters) != n || p.Reporters[n-1] != fmt.Sprintf("w%d", n-1) {
			t.Fatalf("n=%d: ring world %d, reporters %v", n, p.RingWorld, p.Reporters)
		}
		if d := p.StepSeconds - step.Seconds(); d > 1e-9 || d < -1e-9 {
			t.Fatalf("n=%d: step %g, want %g", n, p.StepSeconds, step.Seconds())
		}
		if n > 1 {
			want := float64(1<<20) / 0.05 * 2 * float64(n-1) / float64(n)
			if p.BusBW < want*0.999 || p.BusBW > want*1.001 {
				t.Fatalf("n=%d: busbw %g, want %g", n, p.BusBW, want)
			}
		}
		p.Hosts, p.WorkerCores, p.MachineBusy, p.MachineCores = n, 0.5, 0.6, 2
		pts = append(pts, p)
	}
	SetEfficiency(pts)
	if e := pts[2].Efficiency; e < 110.0/140*0.999 || e > 110.0/140*1.001 {
		t.Fatalf("efficiency n=4 %g, want %g", e, 110.0/140)
	}
	m := Model{Buckets: []Bucket{{Bytes: 1 << 19, Ready: 0.5}, {Bytes: 1 << 19, Ready: 1}}, Compute: 0.08, Bandwidth: 50e6, Latency: 1e-5, BatchPerWorker: 16}
	res := &Result{Points: pts, Model: &m, ModelError: Compare(m, pts), Summary: "x"}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Points []map[string]any `json:"points"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	rt := reflect.TypeOf(Point{})
	for i := 0; i < rt.NumField(); i++ {
		keys = append(keys, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
	}
	if len(raw.Points) != 3 {
		t.Fatalf("%d points in scale.json", len(raw.Points))
	}
	for i, p := range raw.Points {
		for _, k := range keys {
			if _, ok := p[k]; !ok {
				t.Errorf("point %d lacks %q", i, k)
			}
		}
		pr, _ := p["predicted"].(map[string]any)
		for _, k := range []string{"step_s", "exposed_allreduce_s", "efficiency", "busbw_bytes_per_s"} {
			if _, ok := pr[k]; !ok {
				t.Errorf("point %d's prediction lacks %q", i, k)
			}
		}
	}
	f, _ := os.Open(filepath.Join(dir, CSVFile))
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 4 {
		t.Fatalf("scale.csv: %d rows, %v", len(rows), err)
	}
	if st, err := os.Stat(filepath.Join(dir, PlotFile)); err != nil || st.Size() < 1000 {
		t.Fatalf("scale.png: %v", err)
	}
	if !strings.Contains(res.Markdown(), "| 4 | 4 |") {
		t.Fatalf("markdown:\n%s", res.Markdown())
	}
}

func TestRatioUnstable(t *testing.T) {
	r := NewRatio([]float64{1.3, 1.1, 1.25})
	if r.Median != 1.25 || r.Min != 1.1 || r.Max != 1.3 || !r.Unstable(1.2) || r.Unstable(1.0) {
		t.Fatalf("%+v", r)
	}
}

func TestRatioJudge(t *testing.T) {
	for _, c := range []struct {
		v       []float64
		goal    float64
		atLeast bool
		want    Verdict
		noisy   bool
	}{
		{[]float64{0.97, 0.95, 0.96}, 0.9, true, Met, false},
		{[]float64{0.97, 0.89, 0.96}, 0.9, true, Inconclusive, true},
		{[]float64{0.85, 0.88, 0.80}, 0.9, true, Missed, true},
		{[]float64{1.03, 0.96, 1.11}, 1.2, true, Missed, false},
		{[]float64{0.014, 0.04, 0.088}, 0.1, false, Met, true},
		{[]float64{0.014, 0.12, 0.088}, 0.1, false, Inconclusive, true},
		{[]float64{0.11, 0.12}, 0.1, false, Missed, false},
		{nil, 0.1, false, Inconclusive, false},
	} {
		r := NewRatio(c.v)
		if got := r.Judge(c.goal, c.atLeast); got != c.want {
			t.Errorf("%v against %g (at least %v): %s, want %s", c.v, c.goal, c.atLeast, got, c.want)
		}
		if got := r.Noisy(c.goal); got != c.noisy {
			t.Errorf("%v against %g: noisy %v, want %v", c.v, c.goal, got, c.noisy)
		}
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/scale"
)

// TestBenchClusterMode is coordinator bench's cluster mode with real
// processes: a coordinator (embedded etcd, raft) whose job waits for five
// workers, four real workers registered with it, and scalebench
// --coordinator sweeping 1, 2 and 4 of them. It checks that scale.json has
// every field of every point, that each point's ring had N members by the
// workers' own step reports (ring_world, reporters), that the four are
// still registered afterwards with no round left, and that they are still
// usable: a fifth worker lets the job run, and all five train it to the end.
func TestBenchClusterMode(t *testing.T) {
	if testing.Short() {
		t.Skip("a coordinator, five workers and a three-point sweep (~30 s)")
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	jobOut := filepath.Join(dir, "job")
	co := start(t, dir, "coordinator", nil, jobArgs(jobOut, "--listen", addr, "--min-workers", "5", "--max-steps", "4", "--checkpoint-every", "2")...)
	ids := []string{"w0", "w1", "w2", "w3"}
	for _, id := range ids {
		startBin(t, dir, "worker-"+id, bin("worker"), nil, "run", "--coordinator", addr, "--id", id, "--threads", "1")
	}
	cl, err := control.NewClient([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	live := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		js, err := cl.GetJob(ctx)
		if err != nil {
			return nil
		}
		var out []string
		for _, w := range js.GetLive() {
			out = append(out, w.GetId())
		}
		slices.Sort(out)
		return out
	}
	waitFor(t, time.Minute, "four registered workers", func() bool { return slices.Equal(live(), ids) })

	out := filepath.Join(dir, "bench")
	b := startBin(t, dir, "scalebench", bin("scalebench"), nil, "--coordinator", addr, "--workers", "1,2,4", "--warmup", "1", "--steps", "2",
		"--width", "0.125", "--batch", "4", "--threads", "1", "--output", out)
	mustFinish(t, b, 2*time.Minute)
	t.Logf("scalebench: %s", lastLine(b.log()))

	raw, err := os.ReadFile(filepath.Join(out, scale.JSONFile))
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(b.log(), 3000))
	}
	var res struct {
		Cluster string           `json:"cluster"`
		Points  []map[string]any `json:"points"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if res.Cluster != addr || len(res.Points) != 3 {
		t.Fatalf("cluster %q, %d points:\n%s", res.Cluster, len(res.Points), raw)
	}
	var keys []string
	rt := reflect.TypeOf(scale.Point{})
	for i := 0; i < rt.NumField(); i++ {
		if k, opts, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); !strings.Contains(opts, "omitempty") {
			keys = append(keys, k)
		}
	}
	for i, p := range res.Points {
		n := []int{1, 2, 4}[i]
		for _, k := range keys {
			if _, ok := p[k]; !ok {
				t.Errorf("point %d lacks %q", i, k)
			}
		}
		if int(p["workers"].(float64)) != n || int(p["ring_world"].(float64)) != n {
			t.Errorf("point %d: workers %v, ring world (the workers' own reports) %v, want %d", i, p["workers"], p["ring_world"], n)
		}
		rep, _ := p["reporters"].([]any)
		if len(rep) != n {
			t.Errorf("point %d: %d workers reported the timed steps (%v), want %d", i, len(rep), rep, n)
		}
		for _, r := range rep {
			if !slices.Contains(ids, r.(string)) {
				t.Errorf("point %d: reporter %v is not a registered worker", i, r)
			}
		}
		for _, k := range []string{"images_per_sec", "images_per_sec_per_worker", "efficiency", "step_s", "compute_s", "optimizer_s"} {
			if v, _ := p[k].(float64); v <= 0 {
				t.Errorf("point %d: %s = %v", i, k, p[k])
			}
		}
		if n > 1 {
			if v, _ := p["busbw_bytes_per_s"].(float64); v <= 0 {
				t.Errorf("point %d: busbw %v", i, p["busbw_bytes_per_s"])
			}
		}
	}
	for _, f := range []string{scale.CSVFile, scale.PlotFile} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(b.log(), "| 4 |") || !strings.Contains(b.log(), "scale: efficiency n=2 ") {
		t.Errorf("no table or summary line:\n%s", tail(b.log(), 3000))
	}

	// As found: the same four registered, no round running, the job waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	js, err := cl.GetJob(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if got := live(); !slices.Equal(got, ids) || js.GetPlan().GetBench() != nil || js.GetPlan().GetState().String() != "JOB_STATE_WAITING" {
		t.Fatalf("after the bench: live %v, bench %v, state %s", got, js.GetPlan().GetBench(), js.GetPlan().GetState())
	}
	// And usable: a fifth worker makes the job run; all five train it to the end.
	startBin(t, dir, "worker-w4", bin("worker"), nil, "run", "--coordinator", addr, "--id", "w4", "--threads", "1")
	mustFinish(t, co, 2*time.Minute)
	for _, id := range ids {
		var world float64
		for _, l := range logLines(t, filepath.Join(dir, "worker-"+id+"-*.log"), "training") {
			world, _ = l["world"].(float64)
		}
		if world != 5 {
			t.Errorf("worker %s: trained the job in a ring of %v, want 5", id, world)
		}
	}
	if n := len(readSteps(t, jobOut)); n != 4 {
		t.Errorf("the job after the bench: %d steps in steps.jsonl, want 4", n)
	}
}

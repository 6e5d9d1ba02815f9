package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/deploy/cluster"
)

// copyChart copies the chart to a temporary directory with one textual
// change to one template (which must occur exactly once).
func copyChart(t *testing.T, file, from, to string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ringtrain")
	err := filepath.WalkDir(chartDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == file {
			if n := strings.Count(string(b), from); n != 1 {
				t.Fatalf("%s: %q occurs %d times, want once (the chart changed: update the test)", file, from, n)
			}
			b = []byte(strings.Replace(string(b), from, to, 1))
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// brokenChart installs copies of the chart with one mistake each, the kind
// a first `helm install` would reveal, and wants a worker to give up
// (exit non-zero) without a training step (the intact chart trains after
// about 10 s here): a misspelt flag,
// a control port the coordinator does not listen on, a Service name that
// does not match the stable names the pods are given.
func brokenChart(t *testing.T, e *env) {
	// The control: the same copy without a change trains.
	t.Run("intact", func(t *testing.T) {
		dir := copyChart(t, "templates/worker.yaml", "- --coordinator=", "- --coordinator=")
		_, m := e.installChart(t, dir, "testdata/small.yaml", "rt-broken", 79)
		coordSet, _ := component(t, m, "coordinator")
		workerSet, _ := component(t, m, "worker")
		stepsPath := filepath.Join(e.sharedOnHost(t, m, workerSet, arg(t, m, coordSet, "output")), "steps.jsonl")
		at := time.Now()
		if waitFor(t, 2*time.Minute, "the intact copy to train", func() bool { n, _ := steps(stepsPath); return n > 0 }) {
			t.Logf("BROKEN control: the unchanged copy of the chart trains after %.1f s", time.Since(at).Seconds())
		}
	})
	for i, c := range []struct {
		name, file, from, to string
	}{
		{"flag", "templates/worker.yaml", "- --coordinator=", "- --coordinators="},
		{"port", "templates/coordinator.yaml", "- --listen=:{{ $c.port }}", "- --listen=:{{ add $c.port 1 }}"},
		{"service-name", "templates/coordinator.yaml", "kind: Service\nmetadata:\n  name: {{ $name }}", "kind: Service\nmetadata:\n  name: {{ $name }}-svc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := copyChart(t, c.file, c.from, c.to)
			cl, m := e.installChart(t, dir, "testdata/small.yaml", "rt-broken", 80+i)
			coordSet, _ := component(t, m, "coordinator")
			workerSet, _ := component(t, m, "worker")
			stepsPath := filepath.Join(e.sharedOnHost(t, m, workerSet, arg(t, m, coordSet, "output")), "steps.jsonl")
			// The mistake shows as a worker that gives up: it exits non-zero
			// (at once for a bad flag, after its 20 s --join-timeout for an
			// unreachable coordinator). Wait for that event, failing at once
			// on a training step; 3 min without either also never trained.
			at := time.Now()
			var gaveUp *cluster.Event
			for deadline := at.Add(3 * time.Minute); gaveUp == nil; time.Sleep(time.Second) {
				if n, _ := steps(stepsPath); n > 0 {
					t.Fatalf("the chart with a broken %s trained (%s: %q -> %q)", c.name, c.file, c.from, c.to)
				}
				for _, ev := range cl.Events() {
					if ev.What == "exited" && strings.HasPrefix(ev.Pod, workerSet) && !strings.HasSuffix(ev.Note, "exit code 0") {
						gaveUp = &ev
						break
					}
				}
				if time.Now().After(deadline) {
					t.Logf("BROKEN %s: no training step and no worker exit within 3 min", c.name)
					break
				}
			}
			if n, _ := steps(stepsPath); n > 0 {
				t.Fatalf("the chart with a broken %s trained (%s: %q -> %q)", c.name, c.file, c.from, c.to)
			}
			what := "no worker exit"
			if gaveUp != nil {
				what = fmt.Sprintf("%s %s after %.1f s", gaveUp.Pod, gaveUp.Note, gaveUp.At.Sub(at).Seconds())
			}
			t.Logf("BROKEN %s (%s: %q -> %q): no training step; %s; worker log: %s", c.name, c.file,
				c.from, c.to, what, lastLine(cl.Log(t.Context(), workerSet+"-0")))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return tail(lines[len(lines)-1], 300)
}

// Package e2e runs ringtrain's binaries as real processes (coordinator,
// workers, embedded or external etcd, raft) and checks what a user would:
// outputs, numerics across world sizes, failover, kills and resumes.
//
// TestMain builds bin/coordinator and bin/worker once into a temporary
// directory. Long runs are skipped under -short; the chaos run needs
// RINGTRAIN_CHAOS=1 (make chaos).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// binDir holds the coordinator and worker binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ringtrain-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/coordinator", "../cmd/worker", "../cmd/scalebench")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	baselines.mu.Lock()
	for _, d := range baselines.dirs {
		os.RemoveAll(filepath.Dir(d))
	}
	baselines.mu.Unlock()
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// proc is a started process (in its own process group, so that a
// coordinator and the local workers it started can be killed together).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done
}

// start runs name (a binary of binDir) with args; its stdout and stderr go
// to a log file in dir. The process group is killed at the end of the test.
func start(t *testing.T, dir, name string, env []string, args ...string) *proc {
	t.Helper()
	return startBin(t, dir, name, bin(name), env, args...)
}

func startBin(t *testing.T, dir, label, path string, env []string, args ...string) *proc {
	t.Helper()
	return startIn(t, dir, "", label, path, env, args...)
}

// startIn is startBin with the working directory cwd ("": this one).
func startIn(t *testing.T, dir, cwd, label, path string, env []string, args ...string) *proc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, label+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = cwd
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), "RINGTRAIN_LOG=json"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", label, err)
	}
	p := &proc{name: label, cmd: cmd, logPath: f.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.killGroup()
		<-p.done
	})
	return p
}

// killGroup sends SIGKILL to the process group (the process and its
// children, e.g. local workers).
func (p *proc) killGroup() {
	select {
	case <-p.done:
		// The leader is gone; children may survive it.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// wait waits for the process to exit, at most d.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %s", p.name, d)
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// mustFinish waits for p to exit successfully.
func mustFinish(t *testing.T, p *proc, d time.Duration) {
	t.Helper()
	if err := p.wait(d); err != nil {
		t.Fatalf("%s: %v\n--- log (tail) ---\n%s", p.name, err, tail(p.log(), 4000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// flags are the flags of a small, fast job (without --output): synthetic
// data, a ResNet-18 at 1/8 width, 32 steps an epoch of 32 images, a
// checkpoint every 5 steps, two epochs.
func flags(extra ...string) []string {
	return append([]string{"--dataset", "synthetic", "--synthetic-size", "1024", "--epochs", "2", "--batch", "32",
		"--width", "0.125", "--threads", "1", "--no-progress", "--checkpoint-every", "5"}, extra...)
}

// jobArgs is flags plus --output out.
func jobArgs(out string, extra ...string) []string {
	return append(flags(extra...), "--output", out)
}

// stepLine is a line of <output>/steps.jsonl.
type stepLine struct {
	Step       int64   `json:"step"`
	Epoch      int64   `json:"epoch"`
	Loss       float64 `json:"loss"`
	Accuracy   float64 `json:"accuracy"`
	LR         float64 `json:"lr"`
	Generation uint64  `json:"generation"`
	Phases     struct {
		World int `json:"world"` // workers in the ring that trained it
	} `json:"phases"`
}

// readSteps returns the last line of every step in steps.jsonl.
func readSteps(t *testing.T, out string) map[int64]stepLine {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "steps.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[int64]stepLine{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l stepLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			m[l.Step] = l
		}
	}
	return m
}

// countSteps counts the lines of steps.jsonl (0 when it does not exist).
func countSteps(out string) int {
	b, err := os.ReadFile(filepath.Join(out, "steps.jsonl"))
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// sameTensors compares two safetensors files tensor by tensor and returns
// the names that differ (and an error when one cannot be read).
func sameTensors(a, b string) (differ []string, err error) {
	x, err := nn.ReadSafetensorsFile(a)
	if err != nil {
		return nil, err
	}
	y, err := nn.ReadSafetensorsFile(b)
	if err != nil {
		return nil, err
	}
	if len(x.Tensors) != len(y.Tensors) {
		return nil, fmt.Errorf("%d tensors vs %d", len(x.Tensors), len(y.Tensors))
	}
	for _, tx := range x.Tensors {
		ty, err := y.Get(tx.Name)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(tx.Data, ty.Data) {
			differ = append(differ, tx.Name)
		}
	}
	return differ, nil
}

// requireIdenticalModels fails unless the two model files hold the same
// tensors bit for bit.
func requireIdenticalModels(t *testing.T, a, b string) {
	t.Helper()
	d, err := sameTensors(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) > 0 {
		da, db := filepath.Dir(a), filepath.Dir(b)
		t.Fatalf("%d tensors differ between %s and %s, e.g. %v\n%s\n--- %s\n%s\n--- %s\n%s", len(d), a, b, d[:min(5, len(d))],
			firstDifferentStep(da, db), da, runSummary(da), db, runSummary(db))
	}
}

// stepLines returns the lines of out/steps.jsonl in order (a step trained
// again after a rollback appears again).
func stepLines(out string) ([]stepLine, error) {
	b, err := os.ReadFile(filepath.Join(out, "steps.jsonl"))
	if err != nil {
		return nil, err
	}
	var ls []stepLine
	for _, line := range bytes.Split(b, []byte("\n")) {
		var l stepLine
		if json.Unmarshal(line, &l) == nil {
			ls = append(ls, l)
		}
	}
	return ls, nil
}

// runSummary describes a run from its steps.jsonl: the steps and world
// size of each generation in order (a membership change starts a
// generation; a step range that starts again is a rollback), so that a
// failed comparison of two runs explains itself.
func runSummary(out string) string {
	ls, err := stepLines(out)
	if err != nil {
		return err.Error()
	}
	var sb strings.Builder
	for i := 0; i < len(ls); {
		j := i
		for j+1 < len(ls) && ls[j+1].Generation == ls[i].Generation && ls[j+1].Phases.World == ls[i].Phases.World {
			j++
		}
		fmt.Fprintf(&sb, "generation %d, world %d: steps %d..%d (%d lines)\n", ls[i].Generation, ls[i].Phases.World, ls[i].Step, ls[j].Step, j-i+1)
		i = j + 1
	}
	return sb.String()
}

// firstDifferentStep names the first step whose last line differs in loss
// between two runs' steps.jsonl.
func firstDifferentStep(a, b string) string {
	last := func(out string) (map[int64]stepLine, int64, error) {
		ls, err := stepLines(out)
		m := map[int64]stepLine{}
		var top int64
		for _, l := range ls {
			m[l.Step] = l
			top = max(top, l.Step)
		}
		return m, top, err
	}
	x, nx, err := last(a)
	if err != nil {
		return err.Error()
	}
	y, ny, err := last(b)
	if err != nil {
		return err.Error()
	}
	for s := int64(1); s <= max(nx, ny); s++ {
		if x[s].Loss != y[s].Loss {
			return fmt.Sprintf("first step whose loss differs: %d (%v, world %d vs %v, world %d)", s, x[s].Loss, x[s].Phases.World, y[s].Loss, y[s].Phases.World)
		}
	}
	return "every step's loss is the same in both steps.jsonl"
}

// logLines returns the JSON log lines of the files matching glob whose
// "msg" is msg, decoded.
func logLines(t *testing.T, glob, msg string) []map[string]any {
	t.Helper()
	paths, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, msg) {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
				m["_file"] = filepath.Base(p)
				out = append(out, m)
			}
		}
	}
	return out
}

// logTime is the "ts" of a JSON log line.
func logTime(m map[string]any) time.Time {
	s, _ := m["ts"].(string)
	for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", time.RFC3339Nano} {
		if ts, err := time.Parse(layout, s); err == nil {
			return ts
		}
	}
	return time.Time{}
}

// baselines caches uninterrupted runs by configuration, so that several
// tests compare against one run.
var baselines struct {
	mu   sync.Mutex
	dirs map[string]string
}

// baseline returns the output directory of an uninterrupted run of the
// one-machine job with these coordinator flags (minus --output).
func baseline(t *testing.T, args ...string) string {
	t.Helper()
	key := strings.Join(args, " ")
	baselines.mu.Lock()
	defer baselines.mu.Unlock()
	if d, ok := baselines.dirs[key]; ok {
		return d
	}
	dir, err := os.MkdirTemp("", "ringtrain-e2e-baseline-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	p := startBin(t, dir, "baseline", bin("coordinator"), nil, append(args, "--output", out)...)
	mustFinish(t, p, 3*time.Minute)
	if baselines.dirs == nil {
		baselines.dirs = map[string]string{}
	}
	baselines.dirs[key] = out
	return out
}

// runCtx is a context for a test step.
func runCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

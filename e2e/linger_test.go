package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLinger runs the coordinator and workers as the Helm chart does
// (--linger): at the end of the job they stay up and idle, serving their
// probes and the job's status, until SIGTERM; a Kubernetes StatefulSet
// would otherwise restart them forever.
func TestLinger(t *testing.T) {
	t.Run("done", lingerDone)
	t.Run("bad input", lingerBadInput)
}

func lingerDone(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 4)
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	chttp, whttp := fmt.Sprintf("http://127.0.0.1:%d", ports[1]), fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	co := start(t, dir, "coordinator", nil, "--listen", addr, "--http", strings.TrimPrefix(chttp, "http://"), "--linger",
		"--dataset", "synthetic", "--synthetic-size", "256", "--epochs", "1", "--batch", "32", "--width", "0.125",
		"--threads", "1", "--no-progress", "--output", filepath.Join(dir, "out"))
	w0 := start(t, dir, "worker", nil, "run", "--coordinator", addr, "--id", "w0", "--threads", "1", "--linger",
		"--http", strings.TrimPrefix(whttp, "http://"))
	waitLog(t, co, 2*time.Minute, "done: 8 steps", "the job has ended (done); lingering until stopped")
	waitLog(t, w0, 30*time.Second, "the job is done; lingering until stopped")

	// A worker started while the job is done (a pod restarted): it
	// lingers too, without training.
	w1 := start(t, dir, "worker", nil, "run", "--coordinator", addr, "--id", "w1", "--threads", "1", "--linger")
	waitLog(t, w1, 30*time.Second, "the job is done; lingering until stopped")
	if strings.Contains(w1.log(), `"msg":"training"`) {
		t.Errorf("a worker started on a done job trained:\n%s", tail(w1.log(), 2000))
	}

	requireIdle(t, co, w0, w1)
	wantHTTP(t, chttp+"/healthz", 200, "ok")
	wantHTTP(t, chttp+"/readyz", 200, "")
	wantHTTP(t, whttp+"/healthz", 200, "ok")
	wantHTTP(t, whttp+"/readyz", 503, "lingering")
	if out, err := exec.Command(bin("coordinator"), "status", "--coordinator", addr).CombinedOutput(); err != nil || !strings.Contains(string(out), ": done,") {
		t.Errorf("coordinator status while lingering: %v\n%s", err, out)
	}
	for _, p := range []*proc{co, w0, w1} {
		requireExitOnTerm(t, p, 0)
	}
}

// A worker-side input error stops the job: the coordinator prints the
// message once and lingers (exit 1 at SIGTERM), the worker lingers; a
// coordinator started again after the input was fixed retries the job,
// which the lingering worker joins and finishes.
func lingerBadInput(t *testing.T) {
	dir := t.TempDir()
	cdir, wdir := filepath.Join(dir, "coord"), filepath.Join(dir, "worker")
	imageFolder(t, filepath.Join(cdir, "imgs"), 2, 8)
	imageFolder(t, filepath.Join(wdir, "imgs"), 2, 8)
	good := pngFile(16, 16)
	bad := filepath.Join(wdir, "imgs", "c1", "7.png")
	if err := os.WriteFile(bad, good[:len(good)-20], 0o644); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 2)
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	chttp := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	coordinator := func() *proc {
		return startIn(t, dir, cdir, "coordinator", bin("coordinator"), nil, "--listen", addr, "--http", strings.TrimPrefix(chttp, "http://"),
			"--linger", "--dataset", "folder", "--folder", "imgs", "--classes", "2", "--image-size", "16", "--batch", "4", "--epochs", "2",
			"--width", "0.125", "--no-progress", "--output", filepath.Join(cdir, "out"), "--shuffle=false")
	}
	co := coordinator()
	w := startIn(t, dir, wdir, "worker", bin("worker"), nil, "run", "--coordinator", addr, "--id", "w0", "--threads", "1", "--linger")
	waitLog(t, co, badInputLimit, "coordinator: job stopped: worker w0", "corrupt data file", "the job has ended (stopped); lingering until stopped")
	waitLog(t, w, badInputLimit, "the job stopped; lingering until stopped")
	requireIdle(t, co, w)
	wantHTTP(t, chttp+"/healthz", 200, "ok")
	if out, err := exec.Command(bin("coordinator"), "status", "--coordinator", addr).CombinedOutput(); err != nil || !strings.Contains(string(out), "stopped by bad input") {
		t.Errorf("coordinator status while lingering: %v\n%s", err, out)
	}
	requireExitOnTerm(t, co, 1)
	if n := strings.Count(co.log(), "coordinator: job stopped"); n != 1 {
		t.Errorf("the failure printed %d times, want once:\n%s", n, tail(co.log(), 3000))
	}

	if err := os.WriteFile(bad, good, 0o644); err != nil {
		t.Fatal(err)
	}
	co = coordinator()
	waitLog(t, w, time.Minute, "the coordinator retries the job: joining it again", "the job is done; lingering until stopped")
	waitLog(t, co, time.Minute, "done: 8 steps", "the job has ended (done); lingering until stopped")
	requireExitOnTerm(t, co, 0)
	requireExitOnTerm(t, w, 0)
}

// waitLog waits until p's output holds every one of want, failing at
// once when p exits first.
func waitLog(t *testing.T, p *proc, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		log, missing := p.log(), ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, missing, tail(p.log(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q after %s:\n%s", p.name, missing, d, tail(log, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	// Fields after the command name (in parentheses): state is field 3,
	// utime and stime are fields 14 and 15, in clock ticks (100 a second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// requireIdle wants the processes alive and using at most a tenth of a
// core over 2 s.
func requireIdle(t *testing.T, ps ...*proc) {
	t.Helper()
	before := make([]time.Duration, len(ps))
	for i, p := range ps {
		before[i] = cpuTime(t, p.cmd.Process.Pid)
	}
	const window = 2 * time.Second
	time.Sleep(window) // a measurement window, not a wait for an event
	for i, p := range ps {
		select {
		case <-p.done:
			t.Fatalf("%s exited while it should linger: %v\n%s", p.name, p.err, tail(p.log(), 3000))
		default:
		}
		used := cpuTime(t, p.cmd.Process.Pid) - before[i]
		t.Logf("%s lingering: %s of CPU in %s", p.name, used, window)
		if used > window/10 {
			t.Errorf("%s used %s of CPU in %s while lingering: not idle", p.name, used, window)
		}
	}
}

func wantHTTP(t *testing.T, url string, code int, body string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != code || !strings.Contains(string(b), body) {
		t.Errorf("GET %s: %d %q, want %d with %q", url, r.StatusCode, b, code, body)
	}
}

// requireExitOnTerm sends SIGTERM and wants p to exit within 15 s with
// status code.
func requireExitOnTerm(t *testing.T, p *proc, code int) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	err := p.wait(15 * time.Second)
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s after SIGTERM: %v\n%s", p.name, err, tail(p.log(), 3000))
	}
	if got != code {
		t.Errorf("%s exited %d after SIGTERM, want %d:\n%s", p.name, got, code, tail(p.log(), 3000))
	}
}

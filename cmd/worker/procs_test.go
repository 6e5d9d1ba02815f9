package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/worker"
)

// The children of runProcs are this test binary again (os.Executable):
// TestMain hands them to procsTestChild when procsChildMode is set.
const (
	procsChildMode = "RINGTRAIN_TEST_PROCS_CHILD" // fail1 | stubborn-fail1 | wait
	procsChildDir  = "RINGTRAIN_TEST_PROCS_DIR"
)

// procsTestChild plays one `worker run --procs 1 --id <id>-<i>` child: it
// writes <dir>/<i>.pid once its signal handling is set up, then either
// fails (index 1 of fail1 modes, once all siblings are up) or waits for
// SIGTERM and exits 0; stubborn children ignore SIGTERM and wait to be
// killed.
func procsTestChild(mode string) int {
	dir := os.Getenv(procsChildDir)
	id := ""
	for i, a := range os.Args {
		if a == "--id" && i+1 < len(os.Args) {
			id = os.Args[i+1]
		}
	}
	idx, _ := strconv.Atoi(id[strings.LastIndex(id, "-")+1:])
	term := make(chan os.Signal, 1)
	if strings.HasPrefix(mode, "stubborn") {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.pid", idx)), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return 2
	}
	if strings.HasSuffix(mode, "fail1") && idx == 1 {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if m, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(m) == 3 {
				return 3
			}
		}
		return 4
	}
	<-term // stubborn: never; killed
	return 0
}

// runChildren runs runProcs with three children in mode and returns how
// long it took, the children's pids, and its error.
func runChildren(t *testing.T, ctx context.Context, mode string, grace time.Duration) (time.Duration, []int, error) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(procsChildMode, mode)
	t.Setenv(procsChildDir, dir)
	start := time.Now()
	err := runProcs(ctx, procsOptions{cfg: worker.Config{ID: "w", ListenAddr: "127.0.0.1:0", Device: "cpu",
		Coordinators: []string{"127.0.0.1:1"}}, procs: 3, grace: grace})
	took := time.Since(start)
	var pids []int
	for i := 0; i < 3; i++ {
		b, rerr := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.pid", i)))
		if rerr != nil {
			t.Fatalf("child %d never started: %v", i, rerr)
		}
		pid, _ := strconv.Atoi(string(b))
		pids = append(pids, pid)
	}
	return took, pids, err
}

// noneAlive fails the test when one of pids still exists: runProcs reaps
// every child before it returns.
func noneAlive(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d still exists after runProcs returned (kill 0: %v)", pid, err)
		}
	}
}

// One child failing stops the others (SIGTERM), and runProcs returns once
// all have exited, without waiting out the grace period.
func TestProcsOneFailsOthersStop(t *testing.T) {
	took, pids, err := runChildren(t, context.Background(), "fail1", time.Minute)
	if !errors.Is(err, errProc) || !strings.Contains(err.Error(), "process 1 (id w-1)") {
		t.Fatalf("runProcs = %v, want errProc naming process 1", err)
	}
	if took >= time.Minute {
		t.Fatalf("runProcs took %s: it waited out the grace period", took)
	}
	noneAlive(t, pids)
}

// Children that ignore SIGTERM are killed after the grace period.
func TestProcsStubbornChildrenKilled(t *testing.T) {
	took, pids, err := runChildren(t, context.Background(), "stubborn-fail1", 300*time.Millisecond)
	if !errors.Is(err, errProc) {
		t.Fatalf("runProcs = %v, want errProc", err)
	}
	t.Logf("returned %s after start", took.Round(time.Millisecond))
	noneAlive(t, pids)
}

// Cancelling ctx stops every child and is a clean stop.
func TestProcsCancelled(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(procsChildMode, "wait")
	t.Setenv(procsChildDir, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		res <- runProcs(ctx, procsOptions{cfg: worker.Config{ID: "w", ListenAddr: "127.0.0.1:0", Device: "cpu",
			Coordinators: []string{"127.0.0.1:1"}}, procs: 3, grace: time.Minute})
	}()
	// Cancel once every child is up (their pid files are written after
	// their SIGTERM handler).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(m) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the children did not start within 30 s")
		}
	}
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("runProcs after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runProcs still running 30 s after cancel")
	}
}

// The options of every child: --linger (the chart's) among them.
func TestChildArgs(t *testing.T) {
	o := procsOptions{cfg: worker.Config{ID: "w", ListenAddr: "10.0.0.1:7080", HTTPAddr: ":9090", Coordinators: []string{"c0:7070", "c1:7070"}, Linger: true}, procs: 2}
	args, err := o.childArgs(1)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{"--id w-1", "--listen 10.0.0.1:7081", "--http :9091", "--coordinator c0:7070,c1:7070", "--linger"} {
		if !strings.Contains(got, want) {
			t.Errorf("child 1: %s lacks %q", got, want)
		}
	}
	o.cfg.Linger = false
	if args, _ := o.childArgs(0); slices.Contains(args, "--linger") {
		t.Errorf("--linger passed on without it: %v", args)
	}
}

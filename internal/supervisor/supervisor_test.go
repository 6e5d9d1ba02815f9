package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary act as a worker process: with
// SUPERVISOR_TEST_MODE set it prints a line and exits as told.
func TestMain(m *testing.M) {
	switch os.Getenv("SUPERVISOR_TEST_MODE") {
	case "":
		os.Exit(m.Run())
	case "input":
		fmt.Println(`{"level":"info","msg":"joined"}`)
		fmt.Fprintln(os.Stderr, "worker: data: corrupt data file: x.png: unexpected EOF")
		os.Exit(ExitInputError)
	case "crash":
		fmt.Println(`{"level":"error","msg":"step failed","error":"boom"}`)
		os.Exit(1)
	case "clean":
		os.Exit(0)
	}
}

func cfg(t *testing.T, mode string, ids ...string) Config {
	t.Helper()
	return Config{
		Bin:        os.Args[0],
		Args:       func(string) []string { return []string{"-test.run=^$"} },
		Env:        append(os.Environ(), "SUPERVISOR_TEST_MODE="+mode),
		IDs:        ids,
		LogDir:     t.TempDir(),
		Restart:    true,
		Limit:      2,
		Backoff:    10 * time.Millisecond,
		MaxBackoff: 40 * time.Millisecond,
	}
}

func waitFailed(t *testing.T, s *Supervisor) error {
	t.Helper()
	select {
	case <-s.Failed():
		return s.Err()
	case <-time.After(20 * time.Second):
		t.Fatal("supervisor did not stop the job")
		return nil
	}
}

func TestInputErrorStopsAtOnceWithTheWorkersLastLine(t *testing.T) {
	c := cfg(t, "input", "w0")
	var restarts atomic.Int32
	c.BeforeRestart = func(context.Context, string, int) { restarts.Add(1) }
	s, err := Start(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	err = waitFailed(t, s)
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("error %v does not wrap ErrStopped", err)
	}
	for _, want := range []string{"worker w0", "input is bad", "corrupt data file: x.png", filepath.Join(c.LogDir, "w0.log")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "joined") {
		t.Errorf("info lines are not error lines:\n%v", err)
	}
	<-s.AllExited()
	if n := restarts.Load(); n != 0 {
		t.Fatalf("an input error was restarted %d times", n)
	}
}

func TestCrashesRestartWithBackoffUpToTheLimit(t *testing.T) {
	c := cfg(t, "crash", "w0")
	var restarts atomic.Int32
	c.BeforeRestart = func(context.Context, string, int) { restarts.Add(1) }
	start := time.Now()
	s, err := Start(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	err = waitFailed(t, s)
	if n := restarts.Load(); n != int32(c.Limit) {
		t.Fatalf("%d restarts, want the limit %d", n, c.Limit)
	}
	// Restart 1 is immediate, restart 2 waits Backoff.
	if d := time.Since(start); d < c.Backoff {
		t.Fatalf("stopped after %s, before any backoff", d)
	}
	for _, want := range []string{"crashed 3 times in a row", "exit status 1", "error step failed: boom", "--restart-limit 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestProgressResetsTheCrashCount(t *testing.T) {
	c := cfg(t, "crash", "w0")
	// The job advances while the worker runs, for its first runs: the
	// step seen grows with every look until it stops at 8.
	var looks atomic.Int64
	c.Progress = func() int64 { return min(looks.Add(1), 8) }
	var restarts atomic.Int32
	c.BeforeRestart = func(context.Context, string, int) { restarts.Add(1) }
	s, err := Start(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	err = waitFailed(t, s)
	if n := restarts.Load(); n <= int32(c.Limit) {
		t.Fatalf("%d restarts: progress did not reset the count (limit %d)", n, c.Limit)
	}
	if !strings.Contains(err.Error(), "crashed 3 times in a row") {
		t.Fatalf("after progress stopped, the limit did not apply: %v", err)
	}
}

func TestCleanExitAndNoRestartEndWithoutFailure(t *testing.T) {
	for _, mode := range []string{"clean", "crash"} {
		c := cfg(t, mode, "w0", "w1")
		c.Restart = false
		s, err := Start(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.AllExited():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: workers did not exit", mode)
		}
		if err := s.Err(); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		s.Stop()
	}
}

func TestLastErrorLinesCutsLongLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.log")
	long := strings.Repeat("x", 5000)
	os.WriteFile(p, []byte("{\"level\":\"info\",\"msg\":\"a\"}\nfirst\n"+long+"\n{\"level\":\"warn\",\"msg\":\"m\",\"error\":\"e\"}\n"), 0o644)
	got := LastErrorLines(p, 2)
	if len(got) != 2 || !strings.HasSuffix(got[0], "(4600 bytes more)") || got[1] != "warn m: e" {
		t.Fatalf("got %q", got)
	}
}

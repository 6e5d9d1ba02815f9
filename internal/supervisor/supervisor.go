// Package supervisor runs the local worker processes of the coordinator's
// one-machine mode (--workers N): it starts them, restarts one that
// crashes, and stops the job when a failure will repeat.
//
// Promises:
//   - A worker that exits with ExitInputError (its input is bad: a damaged
//     weights file, an undecodable image, a label outside the model's
//     classes ...) is never restarted: the supervisor fails at once with
//     the worker's last error lines, and Failed is closed.
//   - A worker that crashes otherwise (a non-zero exit, a signal) is
//     restarted under the same id after a backoff that doubles with each
//     restart the job made no progress in between (Config.Backoff, at most
//     Config.MaxBackoff); after Config.Limit such restarts in a row the
//     supervisor fails the same way. Nothing restarts forever.
//   - A clean exit (status 0) is never restarted.
//   - Stop ends every process (SIGINT, then SIGKILL after 5 s) and
//     returns when all have exited.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/internal/cli"
)

// ExitInputError is the exit status of a worker whose input is bad: the
// same error would come back after a restart (see cli.ExitInputError).
const ExitInputError = cli.ExitInputError

// ErrStopped is wrapped by the error of a supervisor that stopped the job.
var ErrStopped = errors.New("job stopped")

// Config configures a Supervisor.
type Config struct {
	// Bin is the worker executable; Args(id) its arguments for worker id.
	Bin  string
	Args func(id string) []string
	// Env is the environment of every worker (nil: this process's).
	Env []string
	// IDs are the workers to run, one process each.
	IDs []string
	// LogDir receives <id>.log per worker (appended across restarts).
	LogDir string
	// Restart enables restarts of crashed workers.
	Restart bool
	// Limit is the most restarts of one worker in a row without the job
	// making progress in between (default 5).
	Limit int
	// Backoff is the delay before a restart after which the job made no
	// progress; it doubles with each further one, up to MaxBackoff
	// (defaults 1 s and 30 s). A worker restarted after the job made
	// progress (Progress advanced) starts again at once.
	Backoff, MaxBackoff time.Duration
	// Progress returns a number that grows while the job makes progress
	// (the committed step); nil: never.
	Progress func() int64
	// Done reports whether the job has finished: a worker exiting then is
	// not restarted. nil: never.
	Done func() bool
	// BeforeRestart is called with the id and pid of a crashed worker
	// before its replacement starts (the coordinator deletes its
	// registration there). Optional.
	BeforeRestart func(ctx context.Context, id string, pid int)
	// SysProcAttr of every worker process (e.g. a parent-death signal).
	SysProcAttr *syscall.SysProcAttr
	// Log (default: none).
	Log *zap.Logger
}

// Supervisor is a running set of worker processes. It is safe for
// concurrent use.
type Supervisor struct {
	cfg Config
	ctx context.Context
	log *zap.Logger

	mu       sync.Mutex // guards procs, stopping, crashes, failure
	procs    map[string]*exec.Cmd
	stopping bool
	crashes  map[string]*crashes
	failure  error

	wg        sync.WaitGroup
	allExited chan struct{}
	failed    chan struct{}
	stop      chan struct{} // closed by Stop: ends restart backoffs
	stopOnce  sync.Once
}

// crashes counts the restarts of one worker since the job last made
// progress.
type crashes struct {
	n        int
	progress int64 // Progress() when the worker last started
}

// Start launches every worker. On error the ones already started are
// stopped.
func Start(ctx context.Context, cfg Config) (*Supervisor, error) {
	if cfg.Bin == "" || cfg.Args == nil || cfg.LogDir == "" {
		return nil, fmt.Errorf("supervisor: Bin, Args and LogDir are required")
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(cfg.Backoff, 30*time.Second)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("supervisor: log directory: %w", err)
	}
	s := &Supervisor{cfg: cfg, ctx: ctx, log: cfg.Log, procs: map[string]*exec.Cmd{}, crashes: map[string]*crashes{},
		allExited: make(chan struct{}), failed: make(chan struct{}), stop: make(chan struct{})}
	for _, id := range cfg.IDs {
		s.crashes[id] = &crashes{progress: s.progress()}
	}
	var err error
	for _, id := range cfg.IDs {
		s.wg.Add(1)
		if err = s.start(id); err != nil {
			s.wg.Done()
			break
		}
	}
	go func() { s.wg.Wait(); close(s.allExited) }()
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// LogPath is the log file of worker id.
func (s *Supervisor) LogPath(id string) string { return filepath.Join(s.cfg.LogDir, id+".log") }

// LogDir is the directory of the workers' logs.
func (s *Supervisor) LogDir() string { return s.cfg.LogDir }

// AllExited is closed when every worker has exited for good.
func (s *Supervisor) AllExited() <-chan struct{} { return s.allExited }

// Failed is closed when the supervisor stopped the job; Err says why.
func (s *Supervisor) Failed() <-chan struct{} { return s.failed }

// Err is the reason the supervisor stopped the job (wrapping ErrStopped),
// or nil.
func (s *Supervisor) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

func (s *Supervisor) progress() int64 {
	if s.cfg.Progress == nil {
		return 0
	}
	return s.cfg.Progress()
}

// start launches worker id; s.wg must already count it.
func (s *Supervisor) start(id string) error {
	path := s.LogPath(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("supervisor: log of worker %s: %w", id, err)
	}
	cmd := exec.Command(s.cfg.Bin, s.cfg.Args(id)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = s.cfg.Env
	cmd.SysProcAttr = s.cfg.SysProcAttr
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		f.Close()
		return fmt.Errorf("supervisor: start worker %s: stopping", id)
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		f.Close()
		return fmt.Errorf("supervisor: start worker %s: %w", id, err)
	}
	s.procs[id] = cmd
	s.mu.Unlock()
	s.log.Info("started worker", zap.String("id", id), zap.Int("pid", cmd.Process.Pid), zap.String("log", path))
	started := time.Now()
	go func() {
		err := cmd.Wait()
		f.Close()
		delay, ok := s.afterExit(id, cmd.Process.Pid, err, time.Since(started))
		if ok && delay > 0 {
			s.log.Info("restarting worker after a backoff", zap.String("id", id), zap.Duration("backoff", delay))
			t := time.NewTimer(delay)
			select {
			case <-s.ctx.Done():
				ok = false
			case <-s.stop:
				ok = false
			case <-t.C:
			}
			t.Stop()
		}
		if !ok || !s.stillRunning() {
			s.wg.Done()
			return
		}
		if s.cfg.BeforeRestart != nil {
			s.cfg.BeforeRestart(s.ctx, id, cmd.Process.Pid)
		}
		s.mu.Lock()
		s.crashes[id].progress = s.progress()
		s.mu.Unlock()
		s.log.Info("restarting worker", zap.String("id", id))
		// The wg count carries over to the replacement.
		if err := s.start(id); err != nil {
			s.log.Error("worker not restarted", zap.String("id", id), zap.Error(err))
			s.wg.Done()
		}
	}()
	return nil
}

func (s *Supervisor) stillRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopping && s.failure == nil && s.ctx.Err() == nil
}

// afterExit decides what follows the exit of worker id (err nil: status
// 0) after running for d: a restart after delay (ok), or none. It records
// the failure that stops the job.
func (s *Supervisor) afterExit(id string, pid int, err error, d time.Duration) (delay time.Duration, ok bool) {
	if err == nil || !s.stillRunning() {
		return 0, false
	}
	log := s.LogPath(id)
	s.log.Warn("worker exited", zap.String("id", id), zap.Error(err), zap.Duration("after", d.Round(time.Millisecond)), zap.String("log", log))
	if s.cfg.Done != nil && s.cfg.Done() {
		return 0, false
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == ExitInputError {
		s.fail(fmt.Errorf("%w: worker %s exited because its input is bad (a restart would fail the same way); last lines of %s:\n%s",
			ErrStopped, id, log, indent(LastErrorLines(log, 6))))
		return 0, false
	}
	if !s.cfg.Restart {
		return 0, false
	}
	s.mu.Lock()
	c := s.crashes[id]
	if p := s.progress(); p > c.progress {
		c.n = 0 // the job moved on since this worker started
	}
	c.n++
	n := c.n
	s.mu.Unlock()
	if n > s.cfg.Limit {
		s.fail(fmt.Errorf("%w: worker %s crashed %d times in a row without the job making progress (%v; --restart-limit %d); last lines of %s:\n%s",
			ErrStopped, id, n, err, s.cfg.Limit, log, indent(LastErrorLines(log, 6))))
		return 0, false
	}
	if n == 1 {
		return 0, true
	}
	delay = s.cfg.Backoff
	for i := 2; i < n && delay < s.cfg.MaxBackoff; i++ {
		delay *= 2
	}
	return min(delay, s.cfg.MaxBackoff), true
}

func (s *Supervisor) fail(err error) {
	s.mu.Lock()
	first := s.failure == nil
	if first {
		s.failure = err
	}
	s.mu.Unlock()
	if first {
		s.log.Error("stopping the job", zap.Error(err))
		close(s.failed)
	}
}

// Wait gives the workers d to exit on their own, then stops them.
func (s *Supervisor) Wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.allExited:
	case <-t.C:
		s.Stop()
	}
}

// Stop interrupts every worker, kills those still running after 5 s, and
// waits for them. It is idempotent.
func (s *Supervisor) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.stopping = true
	procs := make([]*exec.Cmd, 0, len(s.procs))
	for _, c := range s.procs {
		procs = append(procs, c)
	}
	s.mu.Unlock()
	for _, c := range procs {
		if c.Process != nil {
			_ = c.Process.Signal(os.Interrupt)
		}
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.allExited:
		return
	case <-t.C:
	}
	for _, c := range procs {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	<-s.allExited
}

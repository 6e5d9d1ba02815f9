// Package podman runs podman and buildah as root against a private store:
// its own image and container storage, its own network configuration and
// its own containers.conf, all under one directory, so that nothing touches
// the machine's image store, networks or /etc.
//
// The containers.conf it writes carries the two settings measured on the
// build machines (Debian bookworm, podman 4.3, a hybrid cgroup v1 layout):
//
//   - runtime = "runc": crun refuses the hybrid cgroup layout;
//   - default_ulimits within the caller's hard limits (nofile = the hard
//     RLIMIT_NOFILE, nproc = 32768): podman's defaults exceed them there and
//     every container start fails.
//
// Promises: every command runs with --root, --runroot and CONTAINERS_CONF of
// the Store; Close removes every container, pod, volume, network and image
// of the store and then the directory, and may be called more than once.
package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// ErrMissing is returned when podman or buildah is not installed.
var ErrMissing = errors.New("podman: podman, buildah or runc not installed (Debian: apt-get install podman buildah runc)")

// Store is a private podman/buildah store under Dir.
type Store struct {
	Dir     string // everything lives under it, except the run root
	runroot string // podman wants at most 50 characters: a short temporary directory

	mu     sync.Mutex // guards closed
	closed bool
}

// Available reports ErrMissing unless podman, buildah and runc are on PATH.
func Available() error {
	for _, b := range []string{"podman", "buildah", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMissing, b, err)
		}
	}
	return nil
}

// Open creates dir (a new, empty directory is best) and the store in it.
func Open(dir string) (*Store, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	for _, d := range []string{"root", "networks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	runroot, err := os.MkdirTemp("", "rtp-")
	if err != nil {
		return nil, err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		os.RemoveAll(runroot)
		return nil, fmt.Errorf("podman: read RLIMIT_NOFILE: %w", err)
	}
	conf := fmt.Sprintf(`# written by ringtrain's deploy/podman for a private store
[containers]
default_ulimits = ["nofile=%d:%d", "nproc=32768:32768"]

[engine]
runtime = "runc"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q

[network]
network_config_dir = %q
`, lim.Max, lim.Max, filepath.Join(dir, "events.log"), filepath.Join(dir, "tmp"), filepath.Join(dir, "networks"))
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o600); err != nil {
		os.RemoveAll(runroot)
		return nil, err
	}
	return &Store{Dir: dir, runroot: runroot}, nil
}

// env is the environment of podman command c: the inherited one plus the
// store's configuration.
func (s *Store) env(c *exec.Cmd) []string {
	return append(c.Environ(), "CONTAINERS_CONF="+filepath.Join(s.Dir, "containers.conf"), "TMPDIR="+filepath.Join(s.Dir, "tmp"))
}

func (s *Store) global() []string {
	return []string{"--root", filepath.Join(s.Dir, "root"), "--runroot", s.runroot}
}

// Cmd returns the command for podman (or buildah) with args, bound to the
// store; its output is not captured.
func (s *Store) Cmd(ctx context.Context, tool string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, tool, append(s.global(), args...)...)
	c.Env = s.env(c)
	return c
}

// Error is a failed podman or buildah command with what it printed.
type Error struct {
	Args   []string
	Err    error
	Output string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Output))
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the command's exit status (-1 when it did not run).
func (e *Error) ExitCode() int {
	var x *exec.ExitError
	if errors.As(e.Err, &x) {
		return x.ExitCode()
	}
	return -1
}

// Run runs tool (podman or buildah) with args and returns its standard
// output, trimmed; on failure an *Error with stdout and stderr.
func (s *Store) Run(ctx context.Context, tool string, args ...string) (string, error) {
	c := s.Cmd(ctx, tool, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return "", &Error{Args: append([]string{tool}, args...), Err: err, Output: out.String() + errb.String()}
	}
	return strings.TrimSpace(out.String()), nil
}

// Podman is Run("podman", args...).
func (s *Store) Podman(ctx context.Context, args ...string) (string, error) {
	return s.Run(ctx, "podman", args...)
}

// Buildah is Run("buildah", args...).
func (s *Store) Buildah(ctx context.Context, args ...string) (string, error) {
	return s.Run(ctx, "buildah", args...)
}

// Leftovers lists what the store still holds: containers, pods, volumes,
// networks other than podman's default, and (with images) images.
func (s *Store) Leftovers(ctx context.Context, images bool) ([]string, error) {
	lists := [][]string{
		{"ps", "-a", "--format", "container {{.Names}}"},
		{"pod", "ps", "--format", "pod {{.Name}}"},
		{"volume", "ls", "--format", "volume {{.Name}}"},
		{"network", "ls", "--format", "network {{.Name}}"},
	}
	if images {
		lists = append(lists, []string{"images", "--format", "image {{.Repository}}:{{.Tag}}"})
	}
	var out []string
	for _, args := range lists {
		o, err := s.Podman(ctx, args...)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(o, "\n") {
			if l = strings.TrimSpace(l); l != "" && l != "network podman" {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// Clean removes every container, pod, volume and network (not images).
func (s *Store) Clean(ctx context.Context) error {
	var errs []error
	for _, args := range [][]string{
		{"pod", "rm", "-a", "-f", "-t", "0"},
		{"rm", "-a", "-f", "-t", "0"},
		{"volume", "rm", "-a", "-f"},
		{"network", "prune", "-f"},
	} {
		if _, err := s.Podman(ctx, args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close removes everything in the store (containers, volumes, networks,
// buildah's working containers and images), then the directory.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ctx := context.Background()
	errs := []error{s.Clean(ctx)}
	if _, err := s.Buildah(ctx, "rm", "-a"); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.Podman(ctx, "rmi", "-a", "-f"); err != nil {
		errs = append(errs, err)
	}
	// Anything still mounted under the store (an overlay of a container
	// that podman lost track of) would make the removal fail.
	if _, err := s.Podman(ctx, "system", "reset", "-f"); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []string{s.Dir, s.runroot} {
		unmountUnder(d)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountUnder lazily unmounts every mount point below dir.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// errProc is returned when one of the processes of `worker run --procs`
// fails; the others have been stopped.
var errProc = errors.New("worker: a process of this host failed")

// procsOptions is what `worker run --procs K` passes on to its children.
type procsOptions struct {
	cfg   worker.Config
	tls   tlsconf.Files
	shm   bool
	procs int
	// grace is how long a stopped process has to exit before it is
	// killed (0: stopGrace).
	grace time.Duration

	cudaLibDir, convSearch string // --cuda-lib-dir, --gpu-conv-search
}

// childArgs returns the `worker run` arguments of child i: the parent's
// flags with id <id>-<i>, ring and HTTP ports +i (listen, advertise,
// --http) and --procs 1.
func (o procsOptions) childArgs(i int) ([]string, error) {
	id := o.cfg.ID
	if id == "" {
		id, _ = os.Hostname()
	}
	listen, err := shiftPort(o.cfg.ListenAddr, i)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	args := []string{"run", "--procs", "1", "--id", fmt.Sprintf("%s-%d", id, i), "--listen", listen,
		"--coordinator", strings.Join(o.cfg.Coordinators, ","), "--shared-memory=" + strconv.FormatBool(o.shm)}
	if o.cfg.Advertise != "" {
		adv, err := shiftPort(o.cfg.Advertise, i)
		if err != nil {
			return nil, fmt.Errorf("--advertise: %w", err)
		}
		args = append(args, "--advertise", adv)
	}
	if o.cfg.Device != "" {
		args = append(args, "--device", o.cfg.Device)
	}
	if o.cfg.Threads > 0 {
		args = append(args, "--threads", strconv.Itoa(o.cfg.Threads))
	}
	if o.cfg.HTTPAddr != "" {
		h, err := shiftPort(o.cfg.HTTPAddr, i)
		if err != nil {
			return nil, fmt.Errorf("--http: %w", err)
		}
		args = append(args, "--http", h)
	}
	if o.cfg.HTTPToken != "" {
		args = append(args, "--http-token", o.cfg.HTTPToken)
	}
	if o.cfg.JoinTimeout > 0 {
		args = append(args, "--join-timeout", o.cfg.JoinTimeout.String())
	}
	if o.cfg.SampleLog != "" {
		args = append(args, "--sample-log", o.cfg.SampleLog)
	}
	if o.cfg.Linger {
		args = append(args, "--linger")
	}
	if o.cfg.GPUOverlap {
		args = append(args, "--gpu-overlap")
	}
	if o.cudaLibDir != "" {
		args = append(args, "--cuda-lib-dir", o.cudaLibDir)
	}
	if o.convSearch != "" {
		args = append(args, "--gpu-conv-search", o.convSearch)
	}
	if o.cfg.NoDeviceRing {
		args = append(args, "--gpu-ipc=false")
	}
	if o.cfg.NoGPUPrefetch {
		args = append(args, "--gpu-prefetch=false")
	}
	return append(args, o.tls.Args()...), nil
}

// shiftPort adds i to the port of host:port; port 0 stays 0.
func shiftPort(addr string, i int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("port %q: %w", port, err)
	}
	if p == 0 {
		return addr, nil
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i)), nil
}

// childEnv is the environment of child i: the parent's, with one GPU each
// for a GPU device (the i-th of CUDA_VISIBLE_DEVICES, or GPU i).
func (o procsOptions) childEnv(i int) []string {
	env := os.Environ()
	if o.cfg.Device == "cpu" {
		return env
	}
	gpu := strconv.Itoa(i)
	if v := os.Getenv("CUDA_VISIBLE_DEVICES"); v != "" {
		list := strings.Split(v, ",")
		if i >= len(list) {
			return env // fewer GPUs than processes: leave the choice to the process
		}
		gpu = list[i]
	}
	return append(env, "CUDA_VISIBLE_DEVICES="+gpu)
}

// runProcs is `worker run --procs K`: K worker processes on this host, as
// torchrun's --nproc-per-node starts them. They share the host's name and
// /dev/shm, so ring neighbours among them exchange tensors through shared
// memory (the coordinator places workers of one host next to each other
// in the ring). When one fails the others are stopped and the error is
// returned, so that the whole pod restarts with the same ids; when all
// finish cleanly it returns nil. Cancelling ctx stops them (SIGTERM).
func runProcs(ctx context.Context, o procsOptions) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type exit struct {
		i   int
		err error
	}
	exits := make(chan exit, o.procs)
	var cmds []*exec.Cmd
	var kill *time.Timer // set by stop
	// stop asks every started process to stop (SIGTERM) and kills those
	// still running after the grace period; only the first call counts.
	stop := func() {
		if kill != nil {
			return
		}
		started := slices.Clone(cmds)
		for _, c := range started {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		grace := o.grace
		if grace == 0 {
			grace = stopGrace
		}
		kill = time.AfterFunc(grace, func() {
			for _, c := range started {
				_ = c.Process.Kill() // ErrProcessDone for one already reaped
			}
		})
	}
	var first error
	for i := 0; i < o.procs && first == nil; i++ {
		args, err := o.childArgs(i)
		if err != nil {
			first = err
			break
		}
		c := exec.Command(self, args...)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		c.Env = o.childEnv(i)
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive this process
		if err := c.Start(); err != nil {
			first = fmt.Errorf("worker: start process %d: %w", i, err)
			break
		}
		cmds = append(cmds, c)
		go func(i int) { exits <- exit{i, c.Wait()} }(i)
	}
	if first != nil {
		stop()
	}
	// Wait for every process started, whatever happens: none is left
	// behind when this returns.
	for left := len(cmds); left > 0; left-- {
		var e exit
		select {
		case e = <-exits:
		case <-ctx.Done():
			stop()
			e = <-exits
		}
		if e.err != nil && first == nil && ctx.Err() == nil {
			first = fmt.Errorf("%w: process %d (id %s-%d): %w", errProc, e.i, o.cfg.ID, e.i, e.err)
			stop()
		}
	}
	if kill != nil {
		kill.Stop() // all have exited
	}
	return first
}

// stopGrace is how long a stopped process has to exit before it is killed.
const stopGrace = 10 * time.Second

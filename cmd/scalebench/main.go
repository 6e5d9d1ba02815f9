// Command scalebench measures how a job scales with the number of workers
// (pkg/scale; make bench-scale, make scale-predict; see docs/scale.md).
// It is a binary of its own: it starts a coordinator's etcd and links the
// training engine to time the real model, which neither the coordinator
// nor the worker binary should carry for it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	root := benchCmd()
	root.AddCommand(ringRankCmd()) // one rank of the all-reduce measurement
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

// workerBinary is explicit, else 'worker' next to this binary, else the
// one on PATH.
func workerBinary(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "worker")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("worker")
	if err != nil {
		return "", fmt.Errorf("worker binary not found next to scalebench or on PATH (build it with 'make build', or pass --worker-bin)")
	}
	return p, nil
}

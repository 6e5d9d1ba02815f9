// Command coordinator runs ringtrain's control plane for a training job:
// the raft-replicated job state, the Control service workers join, and (in
// one-machine mode, --workers N) an embedded etcd and N local worker
// processes. It shows a progress bar per epoch and writes the history,
// the loss/accuracy plots and (through rank 0) the final model.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	root := rootCmd()
	root.AddCommand(checkpointsCmd(), certsCmd(), statusCmd(), benchCmd())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		var shown errShown
		if !errors.As(err, &shown) {
			fmt.Fprintln(os.Stderr, "coordinator:", err)
		}
		os.Exit(1)
	}
}

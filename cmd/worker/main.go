// Command worker is ringtrain's compute process: it joins a job through
// the coordinator and trains; it also holds the user tools (summary,
// evaluate).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

func main() {
	root := &cobra.Command{
		Use:           "worker",
		Short:         "ringtrain worker: trains its shard of a job, plus model tools",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), prepareCmd(), summaryCmd(), evaluateCmd(), predictCmd(), explainCmd(), exportCmd())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// RINGTRAIN_CPUPROFILE=PREFIX writes this process's CPU profile to
	// PREFIX.<pid> (go tool pprof reads it): where a job's workers spend
	// their time, for performance work.
	if prefix := os.Getenv("RINGTRAIN_CPUPROFILE"); prefix != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", prefix, os.Getpid())); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	err := root.ExecuteContext(ctx)
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "worker:") {
			msg = "worker: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		pprof.StopCPUProfile()
		if inputError(err) {
			// Bad input, or no GPU here as the job asks: a supervisor
			// must not restart this worker (the error would repeat).
			os.Exit(cli.ExitInputError)
		}
		os.Exit(1)
	}
}

// inputError reports whether err would repeat after a restart: bad input,
// or no GPU here as the job asks (exit status 65; worker run --linger
// idles on it).
func inputError(err error) bool { return worker.IsInputError(err) || gpu.Unavailable(err) }

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/scale"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// clusterBench is cluster mode (--coordinator): the sweep runs as
// benchmark rounds on subsets of the workers registered with a running
// cluster (scale.Cluster), and writes the same files as a local sweep.
func clusterBench(ctx context.Context, spec job.Spec, o benchOptions) error {
	log := cli.NewLogger("bench", env.Log())
	defer log.Sync()
	out := os.Stdout
	if o.hosts > 0 || o.predict {
		return errors.New("bench: --coordinator (a running cluster) cannot be combined with --emulate-hosts or --predict")
	}
	if o.warmup < 1 || o.steps < 1 {
		return fmt.Errorf("bench: --warmup %d and --steps %d must be at least 1", o.warmup, o.steps)
	}
	tc, err := o.tls.Load()
	if err != nil {
		return err
	}
	cl, err := control.NewClient(o.coordinators, tc.DialOption())
	if err != nil {
		return err
	}
	defer cl.Close()
	c := &scale.Cluster{Client: cl, Spec: spec, BatchPerWorker: spec.GlobalBatch, Warmup: o.warmup, Steps: o.steps, Timeout: o.timeout, Log: log}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if o.endRound {
		id, err := c.EndRound(cctx)
		if err != nil {
			return fmt.Errorf("bench: end the running round: %w", err)
		}
		if id == 0 {
			fmt.Fprintln(out, "bench: no benchmark round was running")
		} else {
			fmt.Fprintf(out, "bench: ended round %d\n", id)
		}
		return nil
	}
	live, err := c.Live(cctx)
	if err != nil {
		return fmt.Errorf("bench: coordinator %s: %w", strings.Join(o.coordinators, ","), err)
	}
	k := len(live)
	if k == 0 {
		return fmt.Errorf("bench: no workers are registered with %s", strings.Join(o.coordinators, ","))
	}
	counts := o.workers
	if !o.workersChanged { // 1, 2, 4, ... up to all of them
		counts = nil
		for n := 1; n < k; n *= 2 {
			counts = append(counts, n)
		}
		counts = append(counts, k)
	}
	for _, n := range counts {
		if n < 1 || n > k {
			return fmt.Errorf("bench: --workers %v: %d workers asked, %d registered", counts, n, k)
		}
	}
	fmt.Fprintf(out, "bench: cluster %s: %d workers registered; sweeping %v\n", strings.Join(o.coordinators, ","), k, counts)

	batch := spec.GlobalBatch
	var gradBytes int64
	if o.compute > 0 {
		fmt.Fprintf(out, "bench: measuring the real %s/%s backward (batch %d) here for the bucket timing ...\n", spec.Model.Arch, spec.Model.Stem, o.profileBatch)
		prof, err := worker.MeasureCompute(ctx, spec, nn.NewCPU(max(1, runtime.NumCPU())), o.profileBatch, 3)
		if err != nil {
			return fmt.Errorf("bench: compute profile: %w", err)
		}
		spec.EmulateCompute = prof.Emulation(o.compute)
		c.Spec = spec
		for _, b := range prof.Buckets {
			gradBytes += 4 * int64(b.Elements)
		}
	}
	res := &scale.Result{Cluster: strings.Join(o.coordinators, ","), Setup: scale.Setup{Model: spec.Model.Arch + "/" + spec.Model.Stem,
		GradientBytes: gradBytes, BucketMB: spec.BucketMB, BatchPerWorker: batch, Warmup: o.warmup, Steps: o.steps, Compute: o.compute.Seconds()}}
	sw, err := scale.Sweep(ctx, scale.SweepConfig{Spec: spec, BatchPerWorker: batch, Workers: counts, Warmup: o.warmup, Steps: o.steps,
		Rounds: o.sweepRounds, Progress: out, RunPoint: c.RunPoint})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	res.Points, res.Rounds, res.Efficiency = sw.Points, sw.Rounds, sw.Efficiency
	if len(res.Points) > 0 && res.Setup.GradientBytes == 0 {
		res.Setup.GradientBytes = res.Points[len(res.Points)-1].AllReduceBytes
	}

	// The cluster as it was: the same workers registered, no round left.
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	js, err := cl.GetJob(actx)
	if err != nil {
		return fmt.Errorf("bench: coordinator after the sweep: %w", err)
	}
	var before, after []string
	for _, w := range live {
		before = append(before, w.GetId())
	}
	for _, w := range js.GetLive() {
		after = append(after, w.GetId())
	}
	slices.Sort(before)
	slices.Sort(after)
	if js.GetPlan().GetBench() != nil {
		return fmt.Errorf("bench: a benchmark round is still running after the sweep (end it with --end-round)")
	}
	fmt.Fprintf(out, "bench: after the sweep: %d workers registered (%d before), job %s, plan generation %d\n",
		len(after), len(before), strings.ToLower(strings.TrimPrefix(js.GetPlan().GetState().String(), "JOB_STATE_")), js.GetPlan().GetGeneration())
	if !slices.Equal(before, after) {
		fmt.Fprintf(out, "warning: the registered workers changed during the sweep: before %v, after %v\n", before, after)
	}

	fmt.Fprintf(out, "\n%s", res.Markdown())
	res.Summary = summary(res, out)
	if err := res.Write(spec.OutputDir); err != nil {
		return err
	}
	fmt.Fprintf(out, "bench: wrote %s, %s and %s in %s\n", scale.JSONFile, scale.CSVFile, scale.PlotFile, spec.OutputDir)
	fmt.Fprintln(out, res.Summary)
	return nil
}

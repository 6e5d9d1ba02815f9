package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/scale"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

type benchOptions struct {
	config       string
	workers      []int
	warmup       int
	steps        int
	compute      time.Duration
	hosts        int
	links        []string
	mtu          int
	predict      bool
	latency      time.Duration
	linkEff      float64
	optimizer    time.Duration
	rounds       int
	sweepRounds  int
	glooIters    int
	python       string
	glooScript   string
	workerBin    string
	threads      int
	profileBatch int
	timeout      time.Duration
	sndbuf       int
	// Cluster mode: the coordinator replicas of a running cluster.
	coordinators   []string
	tls            tlsconf.Files
	endRound       bool
	workersChanged bool
}

// Goals of bench-scale (issue #14).
const (
	goalBusBW      = 0.90
	goalVsGloo     = 1.2
	goalModelError = 0.10
	goalEff8       = 0.90
)

func benchCmd() *cobra.Command {
	var o benchOptions
	spec := job.Default()
	spec.Name = "bench"
	spec.Model.Stem = "cifar"
	spec.Data.Dataset = "synthetic"
	spec.Data.Augment = false
	spec.GlobalBatch = 32
	spec.OutputDir = "runs/bench"
	spec.Device = "cpu"
	cmd := &cobra.Command{
		Use:   "scalebench",
		Short: "Measure (and predict) how a job scales with the number of workers",
		Long: `Runs a sweep of real jobs over worker counts (each a few warm-up steps, then
timed steps) and reports images/s, scaling efficiency, where the step time goes
(data wait, compute, exposed all-reduce, optimizer), the all-reduce's busbw and
hidden fraction, next to a calibrated ring alpha-beta model. Writes scale.json,
scale.csv and scale.png in --output. --batch is per worker here (weak scaling).

  # 1, 2, 4, 8 local workers on this machine's loopback
  scalebench
  # 8 emulated hosts (network namespaces, 1 Gbit/s tbf links; needs root),
  # forward+backward replaced by a 9.7 ms wait with the real bucket timing
  scalebench --emulate-hosts 8 --link 1gbit --compute 9.7ms
  # the model alone: 8 to 512 workers on 25 and 100 Gbit/s links
  scalebench --predict --workers 8,64,512 --link 25gbit,100gbit --compute 9.7ms
  # a running cluster: subsets of its registered workers (same --tls-* flags
  # as the coordinator)
  scalebench --coordinator c0:7070,c1:7070,c2:7070 --steps 10

See docs/scale.md.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := job.Resolve(cmd.Flags(), &spec, o.config)
			if err != nil {
				return err
			}
			o.workersChanged = cmd.Flags().Changed("workers")
			if len(o.coordinators) > 0 {
				return clusterBench(cmd.Context(), s, o)
			}
			return bench(cmd.Context(), s, o)
		},
	}
	job.BindFlags(cmd.Flags(), &spec)
	f := cmd.Flags()
	f.Lookup("batch").Usage = "batch per worker (weak scaling: the global batch is workers x batch) [yaml: global_batch]"
	f.StringVar(&o.config, "config", "", "YAML job file (flags override it)")
	f.IntSliceVar(&o.workers, "workers", []int{1, 2, 4, 8}, "worker counts to run (or predict)")
	f.IntVar(&o.warmup, "warmup", 2, "untimed steps per point")
	f.IntVar(&o.steps, "steps", 5, "timed steps per point")
	f.DurationVar(&o.compute, "compute", 0, "emulated forward+backward time per step, e.g. 9.7ms (0: the real model computes)")
	f.IntVar(&o.hosts, "emulate-hosts", 0, "put the workers on this many emulated hosts (network namespaces; needs root, ip and tc)")
	f.StringSliceVar(&o.links, "link", nil, "link rate of emulated hosts, e.g. 1gbit (with --predict: a list, e.g. 25gbit,100gbit)")
	f.IntVar(&o.mtu, "mtu", 9000, "MTU of the emulated links")
	f.BoolVar(&o.predict, "predict", false, "print the model's predicted table for --workers and --link; run nothing")
	f.DurationVar(&o.latency, "latency", 10*time.Microsecond, "with --predict: per-message link latency (alpha)")
	f.Float64Var(&o.linkEff, "link-efficiency", 0.95, "with --predict: TCP payload share of the link rate (measured 95-97.5% on emulated links)")
	f.DurationVar(&o.optimizer, "optimizer-time", 0, "with --predict: optimizer time per step (0: included in --compute)")
	f.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of ours and gloo at n=4 and n=8 (emulated hosts)")
	f.IntVar(&o.sweepRounds, "sweep-rounds", 1, "run the whole sweep this many times, interleaved (1,2,4,8, then again); verdicts use every round")
	f.IntVar(&o.glooIters, "gloo-iters", 5, "timed all-reduces per gloo run")
	f.StringVar(&o.python, "python", "/usr/bin/python3", "python with torch for the gloo peer (empty: skip gloo)")
	f.StringVar(&o.glooScript, "gloo-script", "", "gloo rank script (default scripts/bench/gloo_rank.py here or next to the binary)")
	f.StringVar(&o.workerBin, "worker-bin", "", "worker binary the sweep starts (default: 'worker' next to this binary, then PATH)")
	f.IntVar(&o.threads, "worker-threads", 1, "compute threads per worker")
	f.IntVar(&o.profileBatch, "profile-batch", 8, "batch of the real forward+backward that measures the bucket timing")
	f.DurationVar(&o.timeout, "point-timeout", 10*time.Minute, "give up on a point after this long")
	f.StringSliceVar(&o.coordinators, "coordinator", nil, "cluster mode: the control addresses of a running cluster's coordinator replicas; the sweep runs on subsets of its registered workers (default --workers: 1, 2, 4, ... up to all of them)")
	f.BoolVar(&o.endRound, "end-round", false, "cluster mode: end a benchmark round left running by a bench that was killed, and exit")
	o.tls.Bind(f)
	f.IntVar(&o.sndbuf, "ring-sndbuf", 0, "SO_SNDBUF of the all-reduce measurement's frame connections (0: the transport's default 512 KiB, -1: kernel autotuning)")
	return cmd
}

// ringRankCmd is one rank of the bench's all-reduce measurement on an
// emulated host (started by bench itself through ip netns exec).
func ringRankCmd() *cobra.Command {
	var c scale.RingRankConfig
	var peers string
	cmd := &cobra.Command{
		Use:    "bench-ring-rank",
		Short:  "internal: one rank of scalebench's all-reduce measurement",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Peers = strings.Split(peers, ",")
			if c.World != len(c.Peers) || c.Rank < 0 || c.Rank >= c.World || c.Bytes < 4 {
				return fmt.Errorf("bench-ring-rank: rank %d, world %d, %d peers, %d bytes", c.Rank, c.World, len(c.Peers), c.Bytes)
			}
			return scale.RingRank(cmd.Context(), c, os.Stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Rank, "rank", 0, "")
	f.IntVar(&c.World, "world", 2, "")
	f.StringVar(&peers, "peers", "", "")
	f.StringVar(&c.HostID, "host-id", "", "")
	f.Int64Var(&c.Bytes, "bytes", 4*11_173_962, "")
	f.IntVar(&c.Iters, "iters", 5, "")
	f.IntVar(&c.TCPSendBuffer, "sndbuf", 0, "")
	return cmd
}

func bench(ctx context.Context, spec job.Spec, o benchOptions) error {
	log := cli.NewLogger("bench", env.Log())
	defer log.Sync()
	out := os.Stdout
	if o.warmup < 1 || o.steps < 1 {
		return fmt.Errorf("bench: --warmup %d and --steps %d must be at least 1", o.warmup, o.steps)
	}
	var rates []float64
	for _, l := range o.links {
		r, err := scale.ParseRate(l)
		if err != nil {
			return err
		}
		rates = append(rates, r)
	}
	if !o.predict && o.hosts > 0 {
		if len(rates) != 1 {
			return errors.New("bench: --emulate-hosts needs one --link rate, e.g. --link 1gbit")
		}
		if err := scale.CheckRoot(); err != nil {
			return err
		}
	}
	if o.predict && len(rates) == 0 {
		return errors.New("bench: --predict needs --link, e.g. --link 25gbit,100gbit")
	}
	batch := spec.GlobalBatch

	// The real model's bucket timing, measured once.
	fmt.Fprintf(out, "bench: measuring the real %s/%s backward (batch %d) for the bucket timing ...\n", spec.Model.Arch, spec.Model.Stem, o.profileBatch)
	prof, err := worker.MeasureCompute(ctx, spec, nn.NewCPU(max(1, runtime.NumCPU())), o.profileBatch, 3)
	if err != nil {
		return fmt.Errorf("bench: compute profile: %w", err)
	}
	var gradBytes int64
	for _, b := range prof.Buckets {
		gradBytes += 4 * int64(b.Elements)
	}
	fmt.Fprintf(out, "bench: forward %s, backward %s; %d buckets, %.1f MB all-reduced per step\n",
		prof.Forward.Round(time.Millisecond), prof.Backward.Round(time.Millisecond), len(prof.Buckets), float64(gradBytes)/1e6)
	compute := o.compute.Seconds()
	if o.compute > 0 {
		spec.EmulateCompute = prof.Emulation(o.compute)
	}
	model := scale.Model{Buckets: scale.ModelFromProfile(prof), Compute: compute, Latency: o.latency.Seconds(), BatchPerWorker: batch}

	if o.predict {
		if compute <= 0 {
			return errors.New("bench: --predict needs --compute (the forward+backward time of one step on the target device)")
		}
		model.Optimizer = o.optimizer.Seconds()
		rows := scale.PredictTable(model, o.workers, rates, o.linkEff)
		fmt.Fprintf(out, "\npredicted: %s/%s (%.1f MB per all-reduce), compute %s, optimizer %s, alpha %s, beta = %.0f%% of the link\n\n",
			spec.Model.Arch, spec.Model.Stem, float64(gradBytes)/1e6, o.compute, o.optimizer, o.latency, 100*o.linkEff)
		fmt.Fprint(out, scale.PredictedMarkdown(rows))
		return nil
	}

	bin, err := workerBinary(o.workerBin)
	if err != nil {
		return err
	}
	res := &scale.Result{Setup: scale.Setup{Model: spec.Model.Arch + "/" + spec.Model.Stem, GradientBytes: gradBytes, BucketMB: spec.BucketMB,
		BatchPerWorker: batch, Warmup: o.warmup, Steps: o.steps, Compute: compute, EmulatedHosts: o.hosts, MTU: o.mtu, Cores: runtime.NumCPU()}}
	cfg := scale.SweepConfig{Spec: spec, BatchPerWorker: batch, Workers: o.workers, Warmup: o.warmup, Steps: o.steps,
		WorkerBin: bin, Threads: o.threads, OutputDir: spec.OutputDir, Timeout: o.timeout, Log: log, Progress: out, Rounds: o.sweepRounds}
	var glooCfg *scale.GlooConfig
	if o.hosts > 0 {
		hosts, err := scale.NewHosts(ctx, scale.HostsConfig{Hosts: o.hosts, Rate: o.links[0], MTU: o.mtu})
		if err != nil {
			return err
		}
		defer func() {
			if err := hosts.Close(); err != nil {
				log.Error("emulated hosts not fully removed", zap.Error(err))
			}
		}()
		cfg.Hosts = hosts
		res.Setup.LinkBits = hosts.RateBits
		fmt.Fprintf(out, "bench: %d emulated hosts (network namespaces %s..), links %s (tbf both ways), MTU %d\n",
			o.hosts, hosts.Names[0], scale.FormatRate(hosts.RateBits), hosts.MTU)
		if o.hosts >= 2 {
			l, err := hosts.MeasureLink(ctx, 0, 1, time.Second)
			if err != nil {
				return fmt.Errorf("bench: link probe: %w", err)
			}
			res.Link = &l
			model.Bandwidth, model.Latency = l.Goodput, l.Latency.Seconds()
			fmt.Fprintf(out, "bench: link measured: TCP goodput %.1f Mbit/s (%.1f%% of the rate), latency %s\n",
				l.Goodput*8/1e6, 100*l.Goodput*8/hosts.RateBits, l.Latency.Round(time.Microsecond))
		}
		if g, err := glooConfig(o, hosts); err != nil {
			fmt.Fprintf(out, "bench: gloo peer skipped: %v\n", err)
		} else {
			glooCfg = g
		}
	}

	// The sweep of training jobs (a progress line per point).
	sw, err := scale.Sweep(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	res.Points, res.Rounds, res.Efficiency = sw.Points, sw.Rounds, sw.Efficiency
	// Our ring and gloo all-reducing the job's gradient bytes over the
	// same links, the same way (a barrier, then the median of timed
	// all-reduces), interleaved round by round: ours n, gloo n.
	if cfg.Hosts != nil && len(res.Points) > 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		bytes := res.Points[len(res.Points)-1].AllReduceBytes
		rc := scale.RingConfig{Exe: exe, Args: []string{"bench-ring-rank"}, Hosts: cfg.Hosts, Bytes: bytes, Iters: o.glooIters, TCPSendBuffer: o.sndbuf}
		var vs []float64
		for round := 1; round <= max(o.rounds, 1); round++ {
			for _, n := range []int{4, 8, 2} {
				if n > o.hosts || (round > 1 && n == 2) {
					continue // n=4 and n=8 every round, n=2 once
				}
				ours, err := scale.RunRing(ctx, rc, n)
				if err != nil {
					return fmt.Errorf("bench: our all-reduce, n=%d: %w", n, err)
				}
				ours.Interleaved = round
				res.Ring = append(res.Ring, ours)
				line := fmt.Sprintf("scale: all-reduce n=%d round %d  ours %.1f MB in %.1f ms, busbw %s (%.1f%% of the link)",
					n, round, float64(ours.Bytes)/1e6, 1e3*ours.MedianTime, scale.FormatBW(ours.BusBW), 100*ours.BusBW*8/res.Setup.LinkBits)
				if glooCfg != nil {
					g, err := glooRun(ctx, glooCfg, n, bytes, round)
					if err != nil {
						fmt.Fprintf(out, "%s; gloo failed: %v\n", line, err)
						continue
					}
					res.Gloo = append(res.Gloo, g)
					line += fmt.Sprintf("; gloo %.1f ms, busbw %s: %.2fx", 1e3*g.MedianTime, scale.FormatBW(g.BusBW), ours.BusBW/g.BusBW)
					if n == 4 {
						vs = append(vs, ours.BusBW/g.BusBW)
					}
				}
				fmt.Fprintln(out, line)
			}
		}
		if len(vs) > 0 {
			r := scale.NewRatio(vs)
			res.VsGloo = &r
			var g4 []float64
			for _, g := range res.Gloo {
				if g.Workers == 4 {
					g4 = append(g4, g.BusBW)
				}
			}
			if m := scale.Median(g4); m > 0 {
				res.GlooCeiling = res.Setup.LinkBits / 8 / m
			}
		}
	}
	if model.Bandwidth > 0 {
		if compute <= 0 { // real compute: the one-worker point's
			for _, p := range res.Points {
				if p.Workers == 1 {
					model.Compute = p.Compute
				}
			}
		}
		res.Model = &model
		res.ModelError = scale.Compare(model, res.Points)
		// The worst error of every round, for the verdict.
		var errs []float64
		for _, pts := range res.Rounds {
			errs = append(errs, scale.Compare(model, slices.Clone(pts)))
		}
		r := scale.NewRatio(errs)
		res.ModelErrors = &r
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

func glooRun(ctx context.Context, g *scale.GlooConfig, n int, bytes int64, round int) (scale.GlooResult, error) {
	g.Bytes = bytes
	r, err := scale.RunGloo(ctx, *g, n)
	r.Interleaved = round
	return r, err
}

// glooConfig finds python with torch and the rank script.
func glooConfig(o benchOptions, hosts *scale.Hosts) (*scale.GlooConfig, error) {
	if o.python == "" {
		return nil, errors.New("--python is empty")
	}
	if err := exec.Command(o.python, "-c", "import torch.distributed").Run(); err != nil {
		return nil, fmt.Errorf("%s cannot import torch (apt-get install python3-torch): %v", o.python, err)
	}
	script := o.glooScript
	if script == "" {
		cands := []string{filepath.Join("scripts", "bench", "gloo_rank.py")}
		if exe, err := os.Executable(); err == nil {
			cands = append(cands, filepath.Join(filepath.Dir(exe), "..", "scripts", "bench", "gloo_rank.py"))
		}
		for _, c := range cands {
			if _, err := os.Stat(c); err == nil {
				script = c
				break
			}
		}
		if script == "" {
			return nil, errors.New("scripts/bench/gloo_rank.py not found (run from the repository root or pass --gloo-script)")
		}
	}
	abs, err := filepath.Abs(script)
	if err != nil {
		return nil, err
	}
	return &scale.GlooConfig{Python: o.python, Script: abs, Hosts: hosts, Iters: o.glooIters}, nil
}

// summary prints the goal verdicts and returns the final line. Each goal
// is judged over its rounds (scale.Ratio.Judge): met or MISSED only when
// every round agrees, inconclusive otherwise, with a warning when the
// rounds spread wider than the median's margin to the goal.
func summary(res *scale.Result, out *os.File) string {
	eff := map[int]string{2: "-", 4: "-", 8: "-"}
	var b8 []float64 // the 8-worker all-reduce (RunRing, as gloo is measured), per round
	for _, r := range res.Ring {
		if r.Workers == 8 {
			b8 = append(b8, r.BusBW)
		}
	}
	for _, p := range res.Points {
		if _, ok := eff[p.Workers]; ok && p.Efficiency > 0 { // 0: no one-worker point
			eff[p.Workers] = fmt.Sprintf("%.1f%%", 100*p.Efficiency)
		}
		if p.Workers == 8 && res.Setup.Compute > 0 {
			r, ok := res.Efficiency[8]
			if !ok {
				r = scale.NewRatio([]float64{p.Efficiency})
			}
			judge(out, "efficiency at n=8", r, goalEff8, true, ">= 90%", percent)
		}
	}
	busVsLink, vsGloo, modelErr := "-", "n/a", "-"
	if res.Setup.LinkBits > 0 && len(b8) > 0 {
		link := make([]float64, len(b8))
		for i, b := range b8 {
			link[i] = b * 8 / res.Setup.LinkBits
		}
		r := scale.NewRatio(link)
		busVsLink = fmt.Sprintf("%.1f%%", 100*r.Median)
		judge(out, "busbw n=8 of the link", r, goalBusBW, true, ">= 90%", percent)
	}
	if r := res.VsGloo; r != nil {
		vsGloo = fmt.Sprintf("%.2f", r.Median)
		judge(out, "vs gloo busbw n=4", *r, goalVsGloo, true, ">= 1.2x", times)
		if res.GlooCeiling > 0 {
			fmt.Fprintf(out, "note: gloo's n=4 busbw is %.1f%% of the link: no all-reduce over these links can exceed %.2fx gloo (link rate / gloo's busbw)\n",
				100/res.GlooCeiling, res.GlooCeiling)
		}
	}
	if res.Model != nil {
		// M: the worst error over every measured point, of every round.
		r := scale.NewRatio([]float64{res.ModelError})
		if res.ModelErrors != nil {
			r = *res.ModelErrors
		}
		modelErr = fmt.Sprintf("%.1f%%", 100*max(r.Max, res.ModelError))
		judge(out, "worst model error", r, goalModelError, false, "<= 10%", percent)
	}
	return fmt.Sprintf("scale: efficiency n=2 %s n=4 %s n=8 %s, busbw vs link %s, vs gloo %s x, model error %s",
		eff[2], eff[4], eff[8], busVsLink, vsGloo, modelErr)
}

// Formats of a goal's values.
func percent(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }
func times(v float64) string   { return fmt.Sprintf("%.2fx", v) }

// judge prints a goal's verdict over its rounds ("median M (min, max over
// R rounds)"), and a warning when the rounds spread wider than the
// median's margin to the goal.
func judge(out *os.File, what string, r scale.Ratio, goal float64, atLeast bool, goalText string, f func(float64) string) {
	v := r.Judge(goal, atLeast)
	value := f(r.Median) + " (one round)"
	if len(r.Rounds) > 1 {
		value = fmt.Sprintf("median %s (min %s, max %s over %d rounds)", f(r.Median), f(r.Min), f(r.Max), len(r.Rounds))
	}
	lean := ""
	if v == scale.Inconclusive && len(r.Rounds) > 0 {
		lean = ": rounds on both sides, the median misses it"
		if (atLeast && r.Median >= goal) || (!atLeast && r.Median <= goal) {
			lean = ": rounds on both sides, the median meets it"
		}
	}
	fmt.Fprintf(out, "goal %s: %s %s (%s%s)\n", goalText, what, value, v, lean)
	if r.Noisy(goal) {
		fmt.Fprintf(out, "warning: %s: the rounds spread over %s, wider than the median's margin to the goal (%s): one round more could land on the other side\n",
			what, f(r.Max-r.Min), f(math.Abs(r.Median-goal)))
	}
}

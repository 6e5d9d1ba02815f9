package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

type options struct {
	config        string
	workers       int
	stateDir      string
	listen        string
	advertise     string
	etcdEndpoints []string
	id            string
	raftBind      string
	raftPeers     []string
	workerBin     string
	noProgress    bool
	timeout       time.Duration
	memberTTL     time.Duration
}

func rootCmd() *cobra.Command {
	spec := job.Default()
	var o options
	cmd := &cobra.Command{
		Use:   "coordinator [flags]",
		Short: "ringtrain coordinator: runs a distributed ResNet training job",
		Long: `Runs the control plane of a training job. With --workers N it is the whole job on
one machine: an embedded etcd, a one-voter raft, and N local worker processes.
Without it, it waits for workers started elsewhere with 'worker run --coordinator ADDR'.
Every job flag also has a YAML key (shown in brackets); --config reads a YAML job
file and flags given on the command line override it.`,
		Example: `  # the tutorial on one machine: ResNet-18 on CIFAR-10 (downloaded if missing), 2 workers
  coordinator --workers 2
  # offline demo on procedurally drawn images
  coordinator --workers 2 --dataset synthetic --epochs 2
  # the full tutorial schedule, from a YAML job file with one flag overridden
  coordinator --workers 4 --config job.yaml --epochs 30
  # transfer learning: a pretrained backbone, frozen, with a new 10-class head
  coordinator --workers 2 --weights resnet18.safetensors --freeze-backbone
  # three replicas for a cluster (run once per replica), external etcd
  coordinator --id c0 --listen :7070 --raft-bind c0:7071 --raft-peers c0=c0:7071,c1=c1:7071,c2=c2:7071 --etcd-endpoints http://etcd:2379`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := job.Resolve(cmd.Flags(), &spec, o.config)
			if err != nil {
				return err
			}
			return run(cmd.Context(), s, o)
		},
	}
	job.BindFlags(cmd.Flags(), &spec)
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "YAML job file (flags override it)")
	f.IntVar(&o.workers, "workers", 0, "launch N local worker processes (one-machine mode)")
	f.StringVar(&o.stateDir, "state-dir", "", "raft and embedded etcd state (default <output>/state)")
	f.StringVar(&o.listen, "listen", "", "control address (default 127.0.0.1:0 with --workers, else :7070)")
	f.StringVar(&o.advertise, "advertise", "", "control address announced to workers (default: the listener's)")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "use this etcd cluster instead of the embedded one")
	f.StringVar(&o.id, "id", "c0", "raft replica id")
	f.StringVar(&o.raftBind, "raft-bind", "127.0.0.1:0", "raft transport address")
	f.StringSliceVar(&o.raftPeers, "raft-peers", nil, "all raft voters as id=host:port (empty: one voter)")
	f.StringVar(&o.workerBin, "worker-bin", "", "worker binary for --workers (default: 'worker' next to this binary, then PATH)")
	f.BoolVar(&o.noProgress, "no-progress", false, "no progress bar (logs only)")
	f.DurationVar(&o.timeout, "timeout", 0, "give up after this long (0 = no limit)")
	f.DurationVar(&o.memberTTL, "member-ttl", 10*time.Second, "etcd lease TTL of worker registrations (a killed worker is usually noticed sooner, by its broken ring streams)")
	return cmd
}

func run(ctx context.Context, spec job.Spec, o options) error {
	log := cli.NewLogger("coordinator")
	defer log.Sync()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	if o.stateDir == "" {
		o.stateDir = filepath.Join(spec.OutputDir, "state")
	}
	if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
		return err
	}
	if o.listen == "" {
		o.listen = ":7070"
		if o.workers > 0 {
			o.listen = "127.0.0.1:0"
		}
	}
	// The data first: one download for all local workers, and an early,
	// clear error when it cannot be had.
	n, err := trainSetSize(ctx, spec)
	if err != nil {
		if errors.Is(err, data.ErrUnavailable) {
			return fmt.Errorf("%w\n(or train offline on procedurally drawn images: --dataset synthetic)", err)
		}
		return err
	}
	sampler, err := data.NewSampler(n, data.SamplerConfig{Seed: uint64(spec.Seed), Shuffle: spec.Data.Shuffle, DropLast: spec.Data.DropLast})
	if err != nil {
		return err
	}
	spe := sampler.StepsPerEpoch(spec.GlobalBatch)

	cl, err := cluster.Open(ctx, cluster.Options{Endpoints: o.etcdEndpoints, Dir: o.stateDir, Logger: cli.Quiet(log.Named("etcd"))})
	if err != nil {
		return err
	}
	defer cl.Close()
	ej, err := cl.Job(spec.Name)
	if err != nil {
		return err
	}
	specJSON, err := spec.Marshal()
	if err != nil {
		return err
	}
	peers, err := parsePeers(o.raftPeers)
	if err != nil {
		return err
	}
	bar := !o.noProgress && term.IsTerminal(int(os.Stderr.Fd()))
	prog := newProgress(os.Stderr, log, spec.OutputDir, spe, bar)
	co, err := coordinator.Start(coordinator.Config{
		ListenAddr: o.listen, AdvertiseAddr: o.advertise,
		Node: coordinator.NodeConfig{ID: o.id, Dir: o.stateDir, BindAddr: o.raftBind, Bootstrap: true, Peers: peers,
			Logger: cli.Quiet(log.Named("raft"))},
		Service: coordinator.ServiceConfig{Job: spec.Name, EtcdEndpoints: cl.Endpoints(), Members: ej, MemberTTL: o.memberTTL,
			Spec:      &coordinator.SpecInput{Spec: specJSON, ConfigHash: spec.Hash(), MinWorkers: spec.MinWorkers, MaxWorkers: spec.MaxWorkers},
			OnMetrics: prog.onMetrics, Logger: log.Named("control")},
	})
	if err != nil {
		return err
	}
	defer co.Close()
	log.Info("coordinator ready", zap.String("control", co.Addr()), zap.String("job", spec.Name),
		zap.String("model", spec.Model.Arch+"/"+spec.Model.Stem), zap.String("dataset", spec.Data.Dataset),
		zap.Int("train_samples", n), zap.Int("steps_per_epoch", spe), zap.Int("epochs", spec.Epochs),
		zap.Strings("etcd", cl.Endpoints()))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var procs *localWorkers
	if o.workers > 0 {
		threads := spec.Threads
		if threads == 0 {
			threads = max(1, runtime.NumCPU()/o.workers)
		}
		procs, err = startWorkers(ctx, log, o, co.Addr(), spec.OutputDir, threads)
		if err != nil {
			return err
		}
		defer procs.stop()
	} else {
		log.Info("waiting for workers: start them with 'worker run --coordinator " + co.Addr() + "'")
	}

	start := time.Now()
	err = waitDone(ctx, co, procs)
	if ferr := prog.finish(); ferr != nil {
		log.Error("history not written", zap.Error(ferr))
	}
	if err != nil {
		return err
	}
	if procs != nil {
		procs.wait(30 * time.Second)
	}
	h := prog.history()
	st := co.Node().State()
	fmt.Fprintf(os.Stderr, "\ndone: %d steps in %s; output in %s (history.json, history.csv, loss.png, accuracy.png, %s, checkpoints/)\n",
		st.Committed.Step, time.Since(start).Round(time.Second), spec.OutputDir, worker.ModelFile)
	if len(h.Epochs) > 0 {
		e := h.Epochs[len(h.Epochs)-1]
		fmt.Fprintf(os.Stderr, "final: epoch %d, train loss %.4f, train acc %.2f%%, test loss %.4f, test acc %.2f%%\n",
			e.Epoch, e.TrainLoss, 100*e.TrainAcc, e.ValLoss, 100*e.ValAcc)
	}
	return nil
}

// waitDone returns when the job state is done, ctx ends, or every local
// worker process has exited.
func waitDone(ctx context.Context, co *coordinator.Coordinator, procs *localWorkers) error {
	var exited <-chan struct{}
	if procs != nil {
		exited = procs.allExited
	}
	for {
		st, changed := co.Node().Watch()
		if st.Status == coordinator.StatusDone {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before the job finished (step %d): %w", st.Committed.Step, ctx.Err())
		case <-exited:
			if s := co.Node().State(); s.Status == coordinator.StatusDone {
				return nil
			}
			return fmt.Errorf("all local workers exited before the job finished; see %s", procs.logDir)
		case <-changed:
		}
	}
}

func trainSetSize(ctx context.Context, spec job.Spec) (int, error) {
	train, _, err := worker.OpenDatasets(ctx, spec)
	if err != nil {
		return 0, err
	}
	return train.Len(), nil
}

func parsePeers(list []string) ([]coordinator.Peer, error) {
	var out []coordinator.Peer
	for _, s := range list {
		id, addr, ok := strings.Cut(s, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--raft-peers: %q is not id=host:port", s)
		}
		out = append(out, coordinator.Peer{ID: id, RaftAddr: addr})
	}
	return out, nil
}

// localWorkers are the worker processes of one-machine mode.
type localWorkers struct {
	log       *zap.Logger
	logDir    string
	cmds      []*exec.Cmd
	wg        sync.WaitGroup
	allExited chan struct{}
}

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
		return "", fmt.Errorf("worker binary not found next to the coordinator or on PATH (build it with 'make build', or pass --worker-bin)")
	}
	return p, nil
}

func startWorkers(ctx context.Context, log *zap.Logger, o options, addr, outputDir string, threads int) (*localWorkers, error) {
	bin, err := workerBinary(o.workerBin)
	if err != nil {
		return nil, err
	}
	lw := &localWorkers{log: log, logDir: filepath.Join(outputDir, "logs"), allExited: make(chan struct{})}
	if err := os.MkdirAll(lw.logDir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < o.workers; i++ {
		id := fmt.Sprintf("w%d", i)
		path := filepath.Join(lw.logDir, id+".log")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			lw.stop()
			return nil, err
		}
		cmd := exec.Command(bin, "run", "--coordinator", addr, "--id", id, "--threads", fmt.Sprint(threads))
		cmd.Stdout, cmd.Stderr = f, f
		cmd.Env = append(os.Environ(), "RINGTRAIN_LOG=json", fmt.Sprintf("GOMAXPROCS=%d", max(threads, 1)))
		if err := cmd.Start(); err != nil {
			f.Close()
			lw.stop()
			return nil, fmt.Errorf("start worker %s: %w", id, err)
		}
		log.Info("started worker", zap.String("id", id), zap.Int("pid", cmd.Process.Pid), zap.String("log", path))
		lw.cmds = append(lw.cmds, cmd)
		lw.wg.Add(1)
		go func(id string, cmd *exec.Cmd, f *os.File) {
			defer lw.wg.Done()
			err := cmd.Wait()
			f.Close()
			if err != nil && ctx.Err() == nil {
				log.Warn("worker exited", zap.String("id", id), zap.Error(err), zap.String("log", f.Name()))
			}
		}(id, cmd, f)
	}
	go func() { lw.wg.Wait(); close(lw.allExited) }()
	return lw, nil
}

// wait gives the workers d to exit on their own, then stops them.
func (lw *localWorkers) wait(d time.Duration) {
	select {
	case <-lw.allExited:
	case <-time.After(d):
		lw.stop()
	}
}

func (lw *localWorkers) stop() {
	for _, c := range lw.cmds {
		if c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Signal(os.Interrupt)
		}
	}
	select {
	case <-lw.allExited:
	case <-time.After(5 * time.Second):
		for _, c := range lw.cmds {
			if c.Process != nil {
				_ = c.Process.Kill()
			}
		}
	}
}

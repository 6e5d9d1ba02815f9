package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/ringtrain/ringtrain/cmd/internal/env"
	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/internal/supervisor"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/schedule"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

type options struct {
	config         string
	workers        int
	stateDir       string
	listen         string
	advertise      string
	etcdEndpoints  []string
	id             string
	raftBind       string
	raftPeers      []string
	workerBin      string
	noProgress     bool
	timeout        time.Duration
	memberTTL      time.Duration
	restart        bool
	restartLimit   int
	restartBackoff time.Duration
	moveOutput     bool
	linger         bool
	workerArgs     []string
	tls            tlsconf.Files
	http           httpOptions
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
file and flags given on the command line override it.
With --linger (what the Helm chart passes) a coordinator whose job has ended
(done, stopped by a worker's input error, or this replica's settings refused)
stays up, serving its dashboard, /metrics, /healthz, /readyz and the control
API, until SIGTERM, instead of exiting: Kubernetes restarts a StatefulSet's
pods whenever they exit.`,
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
	f.BoolVar(&o.restart, "restart-workers", true, "with --workers: restart a local worker process that dies (a replacement with the same id)")
	f.IntVar(&o.restartLimit, "restart-limit", 5, "with --workers: stop the job after a local worker crashed this many times in a row without the job committing a step in between")
	f.DurationVar(&o.restartBackoff, "restart-backoff", time.Second, "with --workers: delay before restarting a worker that crashed again without progress; doubles each time, at most 30s")
	f.BoolVar(&o.linger, "linger", false, "when the job has ended (done, stopped by an input error, or these settings refused) print the usual summary or error, then stay up, serving the dashboard, /metrics, /healthz, /readyz and the control API, until SIGTERM (exit status as without it); for Kubernetes StatefulSets, which restart a pod that exits; not with --workers")
	f.BoolVar(&o.moveOutput, "move-output", false, "continue a job whose saved state names another output directory in --output (e.g. a copied output directory)")
	f.StringSliceVar(&o.workerArgs, "worker-args", nil, "with --workers: extra arguments for every local 'worker run'")
	o.tls.Bind(f)
	o.http.bind(f)
	f.DurationVar(&o.memberTTL, "member-ttl", 10*time.Second, "etcd lease TTL of worker registrations (a killed worker is usually noticed sooner, by its broken ring streams)")
	return cmd
}

func run(ctx context.Context, spec job.Spec, o options) error {
	if err := checkOptions(spec, &o); err != nil {
		return err
	}
	log := cli.NewLogger("coordinator", env.Log())
	defer log.Sync()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	if o.stateDir == "" {
		o.stateDir = filepath.Join(spec.OutputDir, "state")
	}
	tc, err := o.tls.Load()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
		return err
	}
	release, err := lockState(o.stateDir)
	if err != nil {
		return err
	}
	defer release()
	if err := claimOutput(o.stateDir, spec.OutputDir, o.moveOutput); err != nil {
		return err
	}
	if o.listen == "" {
		o.listen = ":7070"
		if o.workers > 0 {
			o.listen = "127.0.0.1:0"
		}
	}
	warnPlaintext(log, o.listen, tc)
	// The data first: one download for all local workers, and an early,
	// clear error when the input is bad.
	n, err := trainSize(ctx, spec, o)
	if err != nil {
		return err
	}
	spe := spec.StepsPerEpoch(n)
	cl, err := cluster.Open(ctx, cluster.Options{Endpoints: o.etcdEndpoints, Dir: o.stateDir, Start: startEtcd, Logger: cli.Quiet(log.Named("etcd"), env.Log()),
		TLS: tc.EtcdTLS(), ServerTLS: etcdServerTLS(o.tls)})
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
	if err := os.MkdirAll(spec.OutputDir, 0o755); err != nil {
		return err
	}
	prog := newProgress(os.Stderr, log, spec.OutputDir, spe, bar)
	if sch, err := schedule.FromSpec(spec, spe); err == nil && spe > 0 {
		prog.lr = func(step int64) float64 { return sch.LR(int(max(step, 0))) }
	}
	prog.openSteps()
	obs := newObserver(log, ej, spec, spe, tc)
	prog.onEpoch, prog.onEvent, obs.lr = obs.onEpoch, obs.board.AddEvent, prog.lr
	// The start quorum: the job waits for all its local workers, so that
	// none registering late makes it train its first steps on fewer. A lone
	// replica imposes it each time it starts; with several, a replica's
	// first leadership may come in the middle of the job.
	quorum := o.workers
	if len(peers) > 1 {
		quorum = 0
	}
	_, statErr := os.Stat(filepath.Join(o.stateDir, "raft", "raft.db"))
	rejoined := statErr == nil // this replica has raft state from an earlier run
	co, err := coordinator.Start(coordinator.Config{
		ListenAddr: o.listen, AdvertiseAddr: o.advertise, ServerOptions: tc.ServerOptions(),
		Node: coordinator.NodeConfig{ID: o.id, Dir: o.stateDir, BindAddr: o.raftBind, Bootstrap: true, Peers: peers,
			TLSServer: tc.ServerTLS(), TLSClient: tc.ClientTLS(), Logger: cli.Quiet(log.Named("raft"), env.Log())},
		Service: coordinator.ServiceConfig{Job: spec.Name, EtcdEndpoints: cl.Endpoints(), Members: ej, MemberTTL: o.memberTTL,
			Spec: &coordinator.SpecInput{Spec: specJSON, ConfigHash: spec.Hash(), MinWorkers: spec.MinWorkers, MaxWorkers: spec.MaxWorkers,
				StartWorkers: quorum},
			OnMetrics: func(m *controlpb.MetricsReport) { prog.onMetrics(m); obs.onMetrics(m) }, Logger: log.Named("control")},
	})
	if err != nil {
		return err
	}
	defer co.Close()
	obs.attach(co)
	if err := startHTTP(ctx, obs, o, tc, cl, log); err != nil {
		return err
	}
	defer obs.close()
	if obs.srv != nil {
		// Local workers serve their metrics too (on free ports, in their logs).
		o.workerArgs = append([]string{"--http=127.0.0.1:0"}, o.workerArgs...)
	}
	lctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() { defer close(followed); followLeadership(lctx, co, prog, log) }()
	defer func() { stopFollow(); <-followed }()
	log.Info("coordinator ready", zap.String("control", co.Addr()), zap.String("job", spec.Name),
		zap.String("model", spec.Model.Arch+"/"+spec.Model.Stem), zap.String("dataset", spec.Data.Dataset),
		zap.Int("train_samples", n), zap.Int("steps_per_epoch", spe), zap.Int("epochs", spec.Epochs),
		zap.Strings("etcd", cl.Endpoints()), zap.String("output", absPath(spec.OutputDir)))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	imposed := co.Service().SpecImposed()
	if rejoined && len(peers) <= 1 {
		// A job of an earlier run may refuse these settings: say so
		// before any worker starts (a new job cannot refuse them).
		select {
		case err := <-imposed:
			imposed = nil
			if err := specRefused(err, co.Node().State(), spec); err != nil {
				return ended(ctx, log, co, obs, o, err)
			}
		case <-ctx.Done():
			return stoppedEarly(co.Node().State(), ctx.Err())
		}
	}
	var procs *supervisor.Supervisor
	if o.workers > 0 {
		threads := spec.Threads
		if threads == 0 {
			threads = max(1, runtime.NumCPU()/o.workers)
		}
		procs, err = startWorkers(ctx, log, o, co, cl, spec.Name, spec.OutputDir, threads)
		if err != nil {
			return err
		}
		defer procs.Stop()
	} else {
		logWaiting(ctx, log, co, len(peers), rejoined)
	}

	start := time.Now()
	err = waitDone(ctx, co, procs, imposed, spec)
	ferr := prog.finish()
	if ferr != nil {
		log.Error("history not written", zap.Error(ferr))
	}
	if err != nil {
		return ended(ctx, log, co, obs, o, err)
	}
	if procs != nil {
		procs.Wait(30 * time.Second)
	}
	h := prog.history()
	st := co.Node().State()
	fmt.Fprintf(os.Stderr, "\ndone: %d steps in %s; output in %s (history.json, history.csv, loss.png, accuracy.png, %s, checkpoints/)\n",
		st.Committed.Step, jobDuration(prog, start), spec.OutputDir, job.ModelFile)
	if len(h.Epochs) > 0 {
		e := h.Epochs[len(h.Epochs)-1]
		fmt.Fprintf(os.Stderr, "final: epoch %d, train loss %.4f, train acc %.2f%%, test loss %.4f, test acc %.2f%%\n",
			e.Epoch, e.TrainLoss, 100*e.TrainAcc, e.ValLoss, 100*e.ValAcc)
	}
	if n := obs.checkpointFailures(); n > 0 {
		newest := "none was written"
		if st.Checkpoint != nil {
			newest = fmt.Sprintf("the newest is step %d", st.Checkpoint.Step)
		}
		fmt.Fprintf(os.Stderr, "warning: %d checkpoint write(s) failed during the job (see the log); %s\n", n, newest)
	}
	var recErr error
	if ferr != nil {
		recErr = fmt.Errorf("the job is done, but its record (history, plots) could not be written to %s: %w "+
			"(free space or fix the directory, then start the coordinator again with the same --output: it writes the record)", spec.OutputDir, ferr)
	}
	if o.linger {
		if recErr != nil {
			fmt.Fprintln(os.Stderr, "coordinator:", recErr)
		}
		return ended(ctx, log, co, obs, o, nil)
	}
	shutdown(ctx, log, co, len(peers) > 1)
	return recErr
}

// errShown wraps an error whose message was printed when the job ended
// (coordinator --linger): main exits 1 without printing it again.
type errShown struct{ error }

func (e errShown) Unwrap() error { return e.error }

// ended is the end of a run whose job has ended: end is nil when it is
// done (the summary printed), else why it stopped or refused this
// replica's settings. Without --linger, or when ctx has ended (SIGTERM
// before the end: not an end), it returns end. With --linger it prints
// the error, then lingers until ctx ends (see linger).
func ended(ctx context.Context, log *zap.Logger, co *coordinator.Coordinator, obs *observer, o options, end error) error {
	if !o.linger || ctx.Err() != nil {
		return end
	}
	if end != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", end)
	}
	if err := linger(ctx, log, co, obs, end); err != nil {
		return err
	}
	if end != nil {
		return errShown{end}
	}
	return nil
}

// linger keeps a coordinator whose job has ended up until ctx ends
// (SIGTERM): the HTTP server (dashboard, /metrics, /healthz, /readyz: ready
// while this replica knows a leader and etcd answers) and the Control
// service (workers that join learn that the job is done or failed;
// 'coordinator status') go on, and nothing else runs but what waits for
// an event (raft, the observer's 1 s refresh, the 2 s etcd probe). This
// replica no longer imposes its spec when it leads: a failover must not
// retry a failed job with the input it failed on. When another replica
// retries it (one started again, e.g. by a helm upgrade that fixed the
// input), this one returns an error to exit and be started again, to
// follow the retried job afresh.
func linger(ctx context.Context, log *zap.Logger, co *coordinator.Coordinator, obs *observer, end error) error {
	co.Service().StopImposing()
	st := co.Node().State()
	what := "done"
	switch {
	case errors.Is(end, supervisor.ErrStopped):
		what = "stopped"
	case end != nil:
		what = "refused these settings"
	}
	obs.event("linger", fmt.Sprintf("the job has ended (%s); lingering until stopped (SIGTERM): the dashboard, /metrics, /healthz, /readyz and the control API stay up (--linger)", what),
		zap.String("status", string(st.Status)), zap.Int64("committed_step", st.Committed.Step))
	failed := st.Status == coordinator.StatusFailed
	for {
		st, changed := co.Node().Watch()
		if failed && st.Status != coordinator.StatusFailed {
			return fmt.Errorf("the job this replica saw stopped was retried (now %s, generation %d): exiting, to follow it from a fresh start", st.Status, st.Generation)
		}
		select {
		case <-ctx.Done():
			log.Info("stopped while lingering", zap.String("status", string(st.Status)))
			return nil
		case <-changed:
		}
	}
}

// shutdownGrace bounds how long a finished job's coordinator waits for
// what it still serves before it exits.
const shutdownGrace = 10 * time.Second

// shutdown waits, at most shutdownGrace, on what a finished job's
// coordinator still serves. The leader of several replicas waits until the
// others are gone: a follower learns that the final entry is committed
// from the leader's next append, applies it and exits, and the leader's
// heartbeats to it then fail (without the wait the followers would elect
// a new leader first). Then the Control service lets its calls end: a
// worker's plan stream ends when the worker, having read the final plan,
// hangs up.
func shutdown(ctx context.Context, log *zap.Logger, co *coordinator.Coordinator, replicas bool) {
	ctx, cancel := context.WithTimeout(ctx, shutdownGrace)
	defer cancel()
	if replicas && co.Node().IsLeader() {
		start := time.Now()
		left, err := co.Node().WaitPeersGone(ctx)
		if len(left) > 0 || err != nil {
			log.Warn("replicas still running at exit (they elect a new leader and finish on their own)",
				zap.Strings("replicas", left), zap.Error(err))
		} else {
			log.Info("the other replicas have finished", zap.Duration("waited", time.Since(start)))
		}
	}
	if err := co.Shutdown(ctx); err != nil {
		log.Warn("coordinator shutdown", zap.Error(err))
	}
}

// waitDone returns when the job state is done or failed in this run, ctx
// ends, the job refuses this replica's spec (imposed, see specRefused),
// the local workers' supervisor stops the job, or every local worker
// process has exited. A failure of an earlier run (restored from the raft
// log) is not the end: the leader retries the job with its spec.
func waitDone(ctx context.Context, co *coordinator.Coordinator, procs *supervisor.Supervisor, imposed <-chan error, spec job.Spec) error {
	var exited, failed <-chan struct{}
	if procs != nil {
		exited, failed = procs.AllExited(), procs.Failed()
	}
	for {
		st, changed := co.Node().Watch()
		switch {
		case st.Status == coordinator.StatusDone:
			return nil
		case st.Status == coordinator.StatusFailed && !co.Node().StaleFailure(st):
			return jobFailed(st, procs)
		}
		select {
		case <-ctx.Done():
			return stoppedEarly(co.Node().State(), ctx.Err())
		case err := <-imposed:
			imposed = nil
			if err := specRefused(err, co.Node().State(), spec); err != nil {
				return err
			}
		case <-failed:
			if s := co.Node().State(); s.Status == coordinator.StatusFailed {
				return jobFailed(s, procs) // the reported cause, not a worker that exited because of it
			}
			return procs.Err()
		case <-exited:
			if s := co.Node().State(); s.Status == coordinator.StatusDone {
				return nil
			}
			if err := procs.Err(); err != nil {
				return err
			}
			return fmt.Errorf("all local workers exited before the job finished; see %s", procs.LogDir())
		case <-changed:
		}
	}
}

// stoppedEarly is the error of a run stopped (a signal, --timeout) before
// its job ended: where the job is, and how it goes on.
func stoppedEarly(st coordinator.JobState, why error) error {
	how := "interrupted"
	if errors.Is(why, context.DeadlineExceeded) {
		how = "--timeout reached"
	}
	if !st.Ran {
		return fmt.Errorf("%s before the job started: %w", how, why)
	}
	return fmt.Errorf("%s at committed step %d: the same command with the same --output resumes from there (%w)", how, st.Committed.Step, why)
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

// followLeadership continues the history of the job each time this
// replica becomes leader: after a restart (same state directory) or a
// failover, the replicated state knows the committed step.
func followLeadership(ctx context.Context, co *coordinator.Coordinator, prog *progress, log *zap.Logger) {
	lead := false
	for {
		now, changed := co.Node().Leadership()
		if now && !lead {
			st := co.Node().State()
			if st.Committed.Step > 0 {
				prog.resume(st.Committed.Step)
				log.Info("resuming job", zap.Int64("committed_step", st.Committed.Step), zap.Int64("epoch", st.Committed.Epoch),
					zap.String("status", string(st.Status)), zap.Uint64("generation", st.Generation))
			}
		}
		lead = now
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

package main

import (
	"context"
	"encoding/json"
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
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/ringtrain/ringtrain/internal/cli"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
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
	restart       bool
	workerArgs    []string
	tls           tlsconf.Files
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
	f.BoolVar(&o.restart, "restart-workers", true, "with --workers: restart a local worker process that dies (a replacement with the same id)")
	f.StringSliceVar(&o.workerArgs, "worker-args", nil, "with --workers: extra arguments for every local 'worker run'")
	o.tls.Bind(f)
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
	tc, err := o.tls.Load()
	if err != nil {
		return err
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
			return fmt.Errorf("%w\n(a local copy of the archive: --cifar-mirror /path/to/cifar-10-binary.tar.gz; or train offline on procedurally drawn images: --dataset synthetic)", err)
		}
		return err
	}
	sampler, err := worker.NewSampler(spec, n)
	if err != nil {
		return err
	}
	spe := sampler.StepsPerEpoch(spec.GlobalBatch)

	cl, err := cluster.Open(ctx, cluster.Options{Endpoints: o.etcdEndpoints, Dir: o.stateDir, Logger: cli.Quiet(log.Named("etcd")), TLS: tc.EtcdTLS()})
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
	if sch, err := worker.BuildSchedule(spec, spe); err == nil {
		prog.lr = func(step int64) float64 { return sch.LR(int(max(step, 0))) }
	}
	prog.openSteps()
	co, err := coordinator.Start(coordinator.Config{
		ListenAddr: o.listen, AdvertiseAddr: o.advertise, ServerOptions: tc.ServerOptions(),
		Node: coordinator.NodeConfig{ID: o.id, Dir: o.stateDir, BindAddr: o.raftBind, Bootstrap: true, Peers: peers,
			TLSServer: tc.ServerTLS(), TLSClient: tc.ClientTLS(), Logger: cli.Quiet(log.Named("raft"))},
		Service: coordinator.ServiceConfig{Job: spec.Name, EtcdEndpoints: cl.Endpoints(), Members: ej, MemberTTL: o.memberTTL,
			Spec:      &coordinator.SpecInput{Spec: specJSON, ConfigHash: spec.Hash(), MinWorkers: spec.MinWorkers, MaxWorkers: spec.MaxWorkers},
			OnMetrics: prog.onMetrics, Logger: log.Named("control")},
	})
	if err != nil {
		return err
	}
	defer co.Close()
	go followLeadership(ctx, co, prog, log)
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
		procs, err = startWorkers(ctx, log, o, co, cl, spec.Name, spec.OutputDir, threads)
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
	if len(peers) > 1 && co.Node().IsLeader() {
		// Followers learn that the final entry is committed from the
		// leader's next heartbeat: stay that long, so they finish too.
		time.Sleep(2 * coordinator.DefaultTimeout)
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

// followLeadership continues the history of the job each time this
// replica becomes leader: after a restart (same state directory) or a
// failover, the replicated state knows the committed step.
func followLeadership(ctx context.Context, co *coordinator.Coordinator, prog *progress, log *zap.Logger) {
	lead := false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := co.Node().IsLeader()
		if now && !lead {
			st := co.Node().State()
			if st.Committed.Step > 0 {
				prog.resume(st.Committed.Step)
				log.Info("resuming job", zap.Int64("committed_step", st.Committed.Step), zap.Int64("epoch", st.Committed.Epoch),
					zap.String("status", string(st.Status)), zap.Uint64("generation", st.Generation))
			}
		}
		lead = now
	}
}

// localWorkers are the worker processes of one-machine mode. A worker that
// dies is restarted with the same id (unless restarts are off): its etcd
// registration is deleted first, so that the coordinator re-plans at once
// and the replacement can register under the id without waiting for the
// dead process's lease to expire.
type localWorkers struct {
	ctx     context.Context
	log     *zap.Logger
	logDir  string
	bin     string
	args    []string
	tls     tlsconf.Files
	threads int
	restart bool
	co      *coordinator.Coordinator
	etcd    *cluster.Client
	job     string

	mu        sync.Mutex // guards procs and stopping
	procs     map[string]*exec.Cmd
	stopping  bool
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

func startWorkers(ctx context.Context, log *zap.Logger, o options, co *coordinator.Coordinator, etcd *cluster.Client, job string, outputDir string, threads int) (*localWorkers, error) {
	bin, err := workerBinary(o.workerBin)
	if err != nil {
		return nil, err
	}
	lw := &localWorkers{ctx: ctx, log: log, logDir: filepath.Join(outputDir, "logs"), bin: bin, args: o.workerArgs, tls: o.tls,
		threads: threads, restart: o.restart, co: co, etcd: etcd, job: job,
		procs: map[string]*exec.Cmd{}, allExited: make(chan struct{})}
	if err := os.MkdirAll(lw.logDir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < o.workers; i++ {
		// A registration left by a local worker of an earlier run of this
		// job (killed with it) would hold the id until its lease expires.
		id := fmt.Sprintf("w%d", i)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := deleteStaleMember(dctx, etcd, job, id); err != nil {
			log.Warn("stale registration not deleted", zap.String("id", id), zap.Error(err))
		}
		cancel()
		lw.wg.Add(1)
		if err := lw.start(fmt.Sprintf("w%d", i)); err != nil {
			lw.wg.Done()
			lw.stop()
			return nil, err
		}
	}
	go func() { lw.wg.Wait(); close(lw.allExited) }()
	return lw, nil
}

// start launches worker id; lw.wg must already count it.
func (lw *localWorkers) start(id string) error {
	path := filepath.Join(lw.logDir, id+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"run", "--coordinator", lw.co.Addr(), "--id", id, "--threads", fmt.Sprint(lw.threads)}, lw.tls.Args()...)
	args = append(args, lw.args...)
	cmd := exec.Command(lw.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// One Go scheduler slot more than compute threads: the ring, the data
	// loader and the control plane run beside the compute instead of
	// waiting for it to be preempted (2 workers x 1 thread on 2 cores:
	// 843-933 vs 710-814 images/s over six interleaved runs each).
	cmd.Env = append(os.Environ(), "RINGTRAIN_LOG=json", fmt.Sprintf("GOMAXPROCS=%d", max(lw.threads, 1)+1))
	cmd.SysProcAttr = childAttr() // local workers die with the coordinator
	lw.mu.Lock()
	if lw.stopping {
		lw.mu.Unlock()
		f.Close()
		return fmt.Errorf("start worker %s: stopping", id)
	}
	if err := cmd.Start(); err != nil {
		lw.mu.Unlock()
		f.Close()
		return fmt.Errorf("start worker %s: %w", id, err)
	}
	lw.procs[id] = cmd
	lw.mu.Unlock()
	lw.log.Info("started worker", zap.String("id", id), zap.Int("pid", cmd.Process.Pid), zap.String("log", path))
	started := time.Now()
	go func() {
		err := cmd.Wait()
		f.Close()
		if !lw.shouldRestart(id, cmd.Process.Pid, err, time.Since(started)) {
			lw.wg.Done()
			return
		}
		// The wg count carries over to the replacement.
		if err := lw.start(id); err != nil {
			lw.log.Error("worker not restarted", zap.String("id", id), zap.Error(err))
			lw.wg.Done()
		}
	}()
	return nil
}

// shouldRestart decides after worker id exited with err (nil: a clean exit
// at the end of the job) after running for d.
func (lw *localWorkers) shouldRestart(id string, pid int, err error, d time.Duration) bool {
	lw.mu.Lock()
	stopping := lw.stopping
	lw.mu.Unlock()
	if err == nil || stopping || lw.ctx.Err() != nil {
		return false
	}
	lw.log.Warn("worker exited", zap.String("id", id), zap.Error(err), zap.Duration("after", d.Round(time.Millisecond)),
		zap.String("log", filepath.Join(lw.logDir, id+".log")))
	if !lw.restart || lw.co.Node().State().Status == coordinator.StatusDone {
		return false
	}
	// Its registration goes at once: the coordinator re-plans without it
	// and the replacement may register under the same id.
	dctx, cancel := context.WithTimeout(lw.ctx, 5*time.Second)
	if err := deleteMember(dctx, lw.etcd, lw.job, id, pid); err != nil {
		lw.log.Warn("registration of the dead worker not deleted; the replacement waits for its lease", zap.Error(err))
	}
	cancel()
	if d < 2*time.Second {
		// It died at once (a bad flag, no data ...): do not spin.
		sleepCtx(lw.ctx, 2*time.Second)
		if lw.ctx.Err() != nil {
			return false
		}
	}
	lw.log.Info("restarting worker", zap.String("id", id))
	return true
}

// deleteMember deletes the etcd registration of worker id if it is still
// the one of process pid (never a replacement's).
func deleteMember(ctx context.Context, c *cluster.Client, job, id string, pid int) error {
	key := cluster.MemberKey(job, id)
	resp, err := c.Etcd().Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil // already gone
	}
	kv := resp.Kvs[0]
	var m cluster.Member
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	if m.PID != pid {
		return nil
	}
	_, err = c.Etcd().Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// deleteStaleMember deletes the registration of id when it belongs to a
// process of this host that no longer exists.
func deleteStaleMember(ctx context.Context, c *cluster.Client, job, id string) error {
	resp, err := c.Etcd().Get(ctx, cluster.MemberKey(job, id))
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	var m cluster.Member
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return err
	}
	host, _ := os.Hostname()
	if m.HostID != host || m.PID <= 0 || processAlive(m.PID) {
		return nil
	}
	return deleteMember(ctx, c, job, id, m.PID)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
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
	lw.mu.Lock()
	lw.stopping = true
	procs := make([]*exec.Cmd, 0, len(lw.procs))
	for _, c := range lw.procs {
		procs = append(procs, c)
	}
	lw.mu.Unlock()
	for _, c := range procs {
		if c.Process != nil {
			_ = c.Process.Signal(os.Interrupt)
		}
	}
	select {
	case <-lw.allExited:
	case <-time.After(5 * time.Second):
		for _, c := range procs {
			if c.Process != nil {
				_ = c.Process.Kill()
			}
		}
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/observe"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ModelFile is the final model in the output directory (torchvision names).
const ModelFile = job.ModelFile

// Config is a worker process's configuration.
type Config struct {
	ID           string   // unique in the job (default: hostname-pid)
	Coordinators []string // control addresses of the coordinator replicas
	ListenAddr   string   // ring endpoint (default 127.0.0.1:0)
	// Advertise is the ring address other workers dial (default: the
	// listener's address, which must then not be a wildcard like 0.0.0.0).
	Advertise string
	Device    string // overrides the spec's device when set
	Threads   int    // overrides the spec's threads when > 0
	// JoinTimeout bounds reaching the coordinator and etcd (default 15 s):
	// a worker that cannot reach them fails with a clear error.
	JoinTimeout time.Duration
	// SampleLog, when set, is a directory where the worker appends the
	// dataset indices it trains at every step (one JSON line each, see
	// SampleRecord) to samples-<id>-<pid>.jsonl (worker run --sample-log,
	// or RINGTRAIN_SAMPLE_LOG in the environment).
	SampleLog string
	// GPUOverlap overlaps a GPU worker's gradient copies with backward
	// (see Trainer.Overlap; worker run --gpu-overlap, or
	// RINGTRAIN_GPU_OVERLAP=1).
	GPUOverlap bool
	// NoDeviceRing keeps a GPU worker's gradients on the host path even
	// when its ring neighbours are GPU workers of the same host (by
	// default they go device to device, CUDA IPC: see
	// Trainer.DeviceRing; worker run --gpu-ipc=false).
	NoDeviceRing bool
	// GPUGraphs launches a GPU worker's step compute as a captured CUDA
	// graph (see Trainer.Graphs; worker run --gpu-graphs, or
	// RINGTRAIN_GPU_GRAPHS=1). OpenBackend must open the GPU with
	// gpu.Options.Graphs for it (else the capture fails and the steps run
	// eagerly, logged once).
	GPUGraphs bool
	// NoGPUPrefetch makes each GPU step upload its own input on the
	// compute stream instead of the next step's input going up on a copy
	// stream while the step computes (see Trainer.Prefetch; worker run
	// --gpu-prefetch=false, or RINGTRAIN_GPU_PREFETCH=0).
	NoGPUPrefetch bool
	// TLS secures every connection of the worker (control API, ring,
	// probes, etcd endpoints given as https) with mutual TLS; nil is
	// plaintext.
	TLS *tlsconf.Config
	// HostID names this worker's machine (default: the hostname for the
	// coordinator, the boot id for the shared-memory path); workers with
	// equal host ids exchange ring traffic through shared memory. Emulated
	// hosts (scalebench --emulate-hosts) set it per namespace.
	HostID string
	// NoSharedMemory keeps ring traffic between workers on the same host
	// on TCP instead of the shared-memory fast path.
	NoSharedMemory bool
	// HTTPAddr, when set, serves /metrics, /healthz and /readyz there
	// (HTTPS with TLS's certificate when TLS is set); HTTPToken, when
	// set, is required as a bearer token for /metrics.
	HTTPAddr, HTTPToken string
	// OpenBackend opens the compute backend (device, threads, GPU
	// precision); required.
	OpenBackend func(device string, threads int, precision string) (nn.Backend, error)
	Log         *zap.Logger
	// Linger keeps Run from returning when the job has ended: done,
	// stopped by the coordinator (ErrJobFailed) or stopped by this
	// worker's own input error (Permanent). Run then idles, still serving
	// /healthz (and /readyz, not ready), until ctx ends, and returns what
	// it would have returned at once; a failed job that the coordinator
	// retries is joined again. For pods of a StatefulSet, which are
	// restarted whenever they exit (worker run --linger, see linger.go).
	Linger bool
	// Permanent tells the errors that would come back after a restart
	// (default IsInputError); with Linger, Run idles on them instead of
	// returning.
	Permanent func(error) bool
}

// ErrUnreachable is returned when the coordinator or etcd cannot be reached.
var ErrUnreachable = errors.New("worker: cannot reach the control plane")

// Run joins the job and trains until it is done, ctx is cancelled, or an
// unrecoverable error occurs. A broken ring, a lost etcd lease or a
// coordinator failover are not fatal: the worker reports, re-registers or
// reconnects and goes on with the next plan. With cfg.Linger it does not
// return when the job has ended before ctx ends (see linger.go).
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.ID == "" {
		h, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 15 * time.Second
	}
	if cfg.Permanent == nil {
		cfg.Permanent = IsInputError
	}
	if cfg.OpenBackend == nil {
		return fmt.Errorf("%w: worker config without OpenBackend", ErrSpec)
	}
	log = log.With(zap.String("worker", cfg.ID))
	// The HTTP endpoints live as long as the process: /healthz answers
	// while the worker loads its data and while it lingers.
	metrics := observe.NewWorkerMetrics()
	var hs healthState
	if cfg.HTTPAddr != "" {
		srv, err := observe.Start(observe.Options{Addr: cfg.HTTPAddr, TLS: cfg.TLS.ServerTLS(), Token: cfg.HTTPToken,
			Registry: metrics.Registry, Health: &observe.Health{Ready: hs.ready}})
		if err != nil {
			return err
		}
		defer srv.Close()
		log.Info("http", zap.String("url", srv.URL()), zap.String("metrics", srv.URL()+"/metrics"))
	}
	for {
		hs.set(func() error { return errNotPlanned("joining the job") })
		err := runOnce(ctx, cfg, log, metrics, &hs)
		if !cfg.Linger || ctx.Err() != nil {
			return err
		}
		if !lingers(err, cfg.Permanent) {
			return err
		}
		if !linger(ctx, cfg, log, err, &hs) {
			return err
		}
	}
}

// runOnce is one membership of the job: join, load, train until the job
// ends, ctx ends or an error.
func runOnce(ctx context.Context, cfg Config, log *zap.Logger, metrics *observe.WorkerMetrics, hs *healthState) (err error) {

	// The ring endpoint first: its address is part of the registration.
	tr, err := allreduce.NewGRPCTransport(allreduce.GRPCConfig{
		ServerCreds: cfg.TLS.ServerCreds(), ClientCreds: cfg.TLS.ClientCreds(), DisableSharedMemory: cfg.NoSharedMemory, HostID: cfg.HostID})
	if err != nil {
		return err
	}
	defer tr.Close()
	laddr, err := tr.Listen(cfg.ListenAddr)
	if err != nil {
		return err
	}
	addr, err := advertised(laddr, cfg.Advertise)
	if err != nil {
		return err
	}

	cl, err := control.NewClient(cfg.Coordinators, cfg.TLS.DialOption())
	if err != nil {
		return err
	}
	defer cl.Close()
	defer func() { reportFatal(cl, cfg.ID, 0, err, log) }() // an input error stops the job (fatal.go)
	cl.OnLeaderChange(func(c control.LeaderChange) { logLeaderChange(log, c) })
	jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	hostID := cfg.HostID
	if hostID == "" {
		hostID, _ = os.Hostname()
	}
	info := &controlpb.WorkerInfo{Id: cfg.ID, Address: addr.String(), HostId: hostID, Device: cfg.Device, Pid: int64(os.Getpid())}
	jr, err := cl.Join(jctx, info)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: coordinator %v did not answer within %s (is it running, is the address right, and do both sides use the same --tls-* settings?): %w",
			ErrUnreachable, cfg.Coordinators, cfg.JoinTimeout, err)
	}
	// A job that is done needs no data (a failed one may be retried by a
	// leader just elected: the plans say).
	if jr.GetPlan().GetState() == controlpb.JobState_JOB_STATE_DONE {
		log.Info("job done")
		return nil
	}
	spec, err := job.Unmarshal(jr.GetSpec())
	if err != nil {
		return err
	}
	if cfg.Device != "" {
		spec.Device = cfg.Device
	}
	if cfg.Threads > 0 {
		spec.Threads = cfg.Threads
	}

	ectx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	ec, err := cluster.Connect(ectx, cluster.Options{Endpoints: jr.GetEtcdEndpoints(), DialTimeout: cfg.JoinTimeout, TLS: cfg.TLS.EtcdTLS()})
	cancel()
	if err != nil {
		return fmt.Errorf("%w: etcd %v (from the coordinator) did not answer within %s: %w",
			ErrUnreachable, jr.GetEtcdEndpoints(), cfg.JoinTimeout, err)
	}
	defer ec.Close()
	ej, err := ec.Job(jr.GetJob())
	if err != nil {
		return err
	}

	b, err := cfg.OpenBackend(spec.Device, spec.Threads, spec.Precision)
	if err != nil {
		return err
	}
	train, test, err := OpenDatasets(ctx, spec)
	if err != nil {
		return err
	}
	t, err := NewTrainer(spec, b, train, test)
	if err != nil {
		return err
	}
	defer t.Close()
	// Overlapped gradient copies of a GPU worker (see Trainer.Overlap).
	t.Overlap = cfg.GPUOverlap
	t.DeviceRing = !cfg.NoDeviceRing
	t.Graphs = cfg.GPUGraphs
	t.Prefetch = !cfg.NoGPUPrefetch
	t.Logf = func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) }
	store, err := checkpoint.NewStore(filepath.Join(spec.OutputDir, "checkpoints"), spec.Checkpoint.Keep)
	if err != nil {
		return err
	}

	ttl := time.Duration(jr.GetMemberTtlMs()) * time.Millisecond
	d := deps{ID: cfg.ID, Job: jr.GetJob(), Log: log, Spec: spec, Trainer: t, Ring: tr, Control: cl,
		Members: etcdMembership{ej}, MembersName: fmt.Sprintf("etcd %v", jr.GetEtcdEndpoints()), Store: store,
		Member: cluster.Member{ID: cfg.ID, Address: addr.String(), HostID: hostID, Device: b.Name(), PID: os.Getpid()},
		TTL:    ttl,
		// A replacement may find its id still held by the lease of the
		// process it replaces: it retries until that lease has expired.
		Patience: cfg.JoinTimeout + ttl,
		Timing:   DefaultTiming(),
		Metrics:  metrics,
	}
	d.Probe = func(ctx context.Context, addr string) error { return probe(ctx, addr, cfg.TLS) }
	if cfg.SampleLog != "" {
		sl, err := openSampleLog(cfg.SampleLog, cfg.ID)
		if err != nil {
			return err
		}
		defer sl.Close()
		d.Samples = sl
	}
	m := newMachine(d)
	hs.set(m.ready)
	return m.run(ctx)
}

// advertised is the ring address to register: adv when given, else the
// listener's address, refused when it is a wildcard (other workers could
// not dial it).
func advertised(l net.Addr, adv string) (net.Addr, error) {
	if adv != "" {
		a, err := net.ResolveTCPAddr("tcp", adv)
		if err != nil {
			return nil, fmt.Errorf("worker: --advertise %q: %w", adv, err)
		}
		return a, nil
	}
	if t, ok := l.(*net.TCPAddr); ok && t.IP.IsUnspecified() {
		return nil, fmt.Errorf("worker: listening on %s: give the address other workers reach this one at with --advertise HOST:%d", l, t.Port)
	}
	return l, nil
}

// probe checks that the ring endpoint at addr is served by a live process:
// a gRPC connection becomes ready only after the server's HTTP/2 preface,
// which a killed process (connection refused) or a stopped one (SIGSTOP:
// the kernel accepts, nobody answers) never sends.
func probe(ctx context.Context, addr string, tc *tlsconf.Config) error {
	cc, err := grpc.NewClient(addr, tc.DialOption())
	if err != nil {
		return err
	}
	defer cc.Close()
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("worker: ring endpoint %s: %s", addr, s)
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("worker: ring endpoint %s did not answer: %w", addr, ctx.Err())
		}
	}
}

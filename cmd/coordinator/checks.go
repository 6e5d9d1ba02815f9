package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/internal/supervisor"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
)

// errUsage marks a bad coordinator flag (the job's own flags are checked
// by job.Spec.Validate).
var errUsage = errors.New("invalid flags")

// maxLocalWorkers bounds --workers: one machine never runs more worker
// processes than this.
const maxLocalWorkers = 256

// checkOptions checks the coordinator's own flags against each other and
// the spec, before anything starts.
func checkOptions(spec job.Spec, o *options) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...))
	}
	switch {
	case o.workers < 0:
		bad("--workers %d is negative", o.workers)
	case o.workers > maxLocalWorkers:
		bad("--workers %d: at most %d local worker processes", o.workers, maxLocalWorkers)
	case o.workers > spec.MaxWorkers:
		bad("--workers %d: at most --max-workers (%d) workers are ever planned; lower --workers or raise --max-workers", o.workers, spec.MaxWorkers)
	case o.workers > 0 && o.workers < spec.MinWorkers:
		bad("--workers %d is fewer than --min-workers (%d): the job would never start", o.workers, spec.MinWorkers)
	}
	if len(o.raftPeers) > 1 && len(o.etcdEndpoints) == 0 {
		bad("--raft-peers with %d replicas needs a shared etcd (--etcd-endpoints): each replica would otherwise start its own embedded etcd, see other workers, and after a failover the new leader would have none", len(o.raftPeers))
	}
	if o.linger && o.workers > 0 {
		bad("--linger is for a coordinator whose workers run elsewhere (Kubernetes pods); with --workers the run ends with the job")
	}
	if o.timeout < 0 {
		bad("--timeout %s is negative", o.timeout)
	}
	if o.memberTTL < minMemberTTL || o.memberTTL > maxMemberTTL {
		bad("--member-ttl %s must be within [%s, %s]", o.memberTTL, minMemberTTL, maxMemberTTL)
	}
	if o.restartLimit < 0 {
		bad("--restart-limit %d is negative", o.restartLimit)
	}
	if o.restartBackoff < 0 {
		bad("--restart-backoff %s is negative", o.restartBackoff)
	}
	if o.restartLimit == 0 {
		o.restart = false
	}
	return errors.Join(errs...)
}

// The bounds of --member-ttl: etcd leases are whole seconds.
const (
	minMemberTTL = time.Second
	maxMemberTTL = time.Hour
)

// claimOutput ties the state directory to the output directory: the
// state of a job (its spec, replicated through raft) names the output
// directory the workers write to, so a state directory reused with
// another --output (a copied output directory) would silently split the
// job between two directories. The first run records the output
// directory in <state>/output; a later run with another one is refused
// unless move is set, which records the new one.
func claimOutput(stateDir, outputDir string, move bool) error {
	p := filepath.Join(stateDir, "output")
	now := absPath(outputDir)
	if b, err := os.ReadFile(p); err == nil {
		was := strings.TrimSpace(string(b))
		if was != now && !move {
			return fmt.Errorf("%w: --output is %s but the job state in %s was written for the output directory %s: "+
				"continue there with --output %s, continue this job in %s with --move-output (its checkpoints/ must be there), "+
				"or start a new job with an empty --state-dir", errUsage, now, stateDir, was, was, now)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	return os.WriteFile(p, []byte(now+"\n"), 0o644)
}

// absPath is p made absolute (p itself when that fails).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// specRefused turns the job's refusal of this run's spec (see
// coordinator.Service.SpecImposed) into the error the user reads: which
// settings differ from the job's and what to do. A job that is done
// refuses any other spec; that is no error (the run reports the job
// done, and says that nothing was trained).
func specRefused(err error, st coordinator.JobState, spec job.Spec) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, coordinator.ErrJobDone):
		fmt.Fprintf(os.Stderr, "the job in %s had finished (step %d) before this run, with other settings: nothing was trained; "+
			"to train again, start a new job with another --output\n", spec.OutputDir, st.Committed.Step)
		return nil
	case !errors.Is(err, coordinator.ErrSpecMismatch):
		return err
	}
	var changed []string
	if was, uerr := job.Unmarshal(st.Spec); uerr == nil {
		changed = spec.HashDiff(&was)
	}
	what := "other settings"
	if len(changed) > 0 {
		what = "other settings (job's -> this run's): " + strings.Join(changed, ", ")
	}
	return fmt.Errorf("the job in %s has committed step %d with %s. "+
		"To continue it, run again with its settings; to start a new job, use another --output",
		spec.OutputDir, st.Committed.Step, what)
}

// jobFailed is the error of a job a worker stopped with an input error:
// the reported cause, and, for a local worker, the last lines of its log.
func jobFailed(st coordinator.JobState, procs *supervisor.Supervisor) error {
	reason := "a worker reported an error that would repeat"
	id := ""
	if f := st.LastFailure; f != nil {
		reason, id = f.String(), f.WorkerID
	}
	msg := fmt.Sprintf("job stopped: %s", reason)
	if procs != nil && id != "" {
		// The workers exit on seeing the job stopped; their last words
		// come after the report.
		t := time.NewTimer(5 * time.Second)
		select {
		case <-procs.AllExited():
		case <-t.C:
		}
		t.Stop()
		if _, err := os.Stat(procs.LogPath(id)); err == nil {
			msg += fmt.Sprintf("\nlast lines of %s:\n  %s", procs.LogPath(id), strings.Join(supervisor.LastErrorLines(procs.LogPath(id), 6), "\n  "))
		}
	}
	return fmt.Errorf("%w: %s", supervisor.ErrStopped, strings.TrimPrefix(msg, "job stopped: "))
}

// warnPlaintext warns when the control port is reachable from other
// machines without TLS: anyone who can reach it can join the job.
func warnPlaintext(log *zap.Logger, listen string, tc *tlsconf.Config) {
	if tc != nil {
		return
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host != "" && host != "localhost" && (ip == nil || !ip.IsUnspecified()) {
		return
	}
	log.Warn("the control port listens on every interface without TLS: anyone who reaches it can join or disturb the job; " +
		"use --tls-cert/--tls-key/--tls-ca (see 'coordinator certs'), or --listen 127.0.0.1:PORT on one machine")
}

// etcdServerTLS is the mutual TLS of the embedded etcd: the job's own
// certificate and CA whenever the job's TLS is on.
func etcdServerTLS(f tlsconf.Files) *cluster.ServerTLS {
	if !f.Enabled() {
		return nil
	}
	return &cluster.ServerTLS{CertFile: f.Cert, KeyFile: f.Key, CAFile: f.CA}
}

// checkInputMemory refuses a job whose local workers clearly cannot fit
// in this machine's memory: each worker holds two batches of float32
// images (the one in use and the loader's next) plus the activations
// kept for backward, estimated per image as k x H x W x width bytes with
// k from the stem and depth (ResNet-18, imagenet stem: 560 bytes a pixel,
// about 28 MB for a 224x224 image; the cifar stem keeps full resolution
// through layer1: 6,500). Weights, gradients and workspaces come on top,
// so this only refuses what cannot work (measured: ResNet-18 at 32x32,
// batch 256, one worker: 548 MB peak RSS against 153 MB estimated with
// the imagenet stem, 2.06 GB against 1.71 GB with the cifar stem).
// Workers on other machines (no --workers) are not checked; total is this
// machine's memory (0: unknown, not checked).
// imageShape is one input image's shape (channels, height, width), as
// 'worker prepare' reports it.
type imageShape struct{ C, H, W int }

// Len is the number of values of one image.
func (s imageShape) Len() int { return s.C * s.H * s.W }

func checkInputMemory(spec job.Spec, shape imageShape, workers int, total int64) error {
	if workers <= 0 || total <= 0 {
		return nil
	}
	k := 560.0
	if spec.Model.Stem == "cifar" {
		k = 6500
	}
	depth := map[string]float64{"resnet18": 1, "resnet34": 1.8, "resnet50": 3.5, "resnet101": 5.5, "resnet152": 8}[spec.Model.Arch]
	perImage := 2*float64(shape.Len())*4 + k*depth*spec.Model.Width*float64(shape.H*shape.W)
	local := (spec.GlobalBatch + workers - 1) / workers
	need := perImage * float64(local) * float64(workers)
	if need <= float64(total) {
		return nil
	}
	return fmt.Errorf("%w: global_batch (--batch) %d of %v images on %s needs about %.1f GiB for the input batches and activations of %d local worker(s); this machine has %.1f GiB: lower --batch, --image-size or --workers",
		job.ErrInvalid, spec.GlobalBatch, shape, spec.Model.Arch, need/(1<<30), workers, float64(total)/(1<<30))
}

// memTotal is this machine's memory in bytes (MemTotal of /proc/meminfo;
// 0 where unknown).
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

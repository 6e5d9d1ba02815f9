package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/internal/supervisor"
	"github.com/ringtrain/ringtrain/pkg/cluster"
	"github.com/ringtrain/ringtrain/pkg/coordinator"
)

// The local worker processes of one-machine mode run under a
// supervisor.Supervisor: a worker that crashes is restarted with the same
// id (with a backoff and a limit); its etcd registration is deleted first,
// so that the coordinator re-plans at once and the replacement can
// register under the id without waiting for the dead process's lease to
// expire. A worker that exits because its input is bad stops the job.

func workerBinary(explicit string) (string, error) {
	return siblingBinary("worker", explicit, "--worker-bin")
}

// siblingBinary is explicit, else the binary name next to this one, else
// the one on PATH; flag names the option that overrides it.
func siblingBinary(name, explicit, flag string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s binary not found next to the coordinator or on PATH (build it with 'make build', or pass %s)", name, flag)
	}
	return p, nil
}

func startWorkers(ctx context.Context, log *zap.Logger, o options, co *coordinator.Coordinator, etcd *cluster.Client, job string, outputDir string, threads int) (*supervisor.Supervisor, error) {
	bin, err := workerBinary(o.workerBin)
	if err != nil {
		return nil, err
	}
	ids := make([]string, o.workers)
	for i := range ids {
		// A registration left by a local worker of an earlier run of this
		// job (killed with it) would hold the id until its lease expires.
		ids[i] = fmt.Sprintf("w%d", i)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := deleteStaleMember(dctx, etcd, job, ids[i]); err != nil {
			log.Warn("stale registration not deleted", zap.String("id", ids[i]), zap.Error(err))
		}
		cancel()
	}
	return supervisor.Start(ctx, supervisor.Config{
		Bin: bin,
		Args: func(id string) []string {
			args := append([]string{"run", "--coordinator", co.Addr(), "--id", id, "--threads", fmt.Sprint(threads)}, o.tls.Args()...)
			return append(args, o.workerArgs...)
		},
		// One Go scheduler slot more than compute threads: the ring, the data
		// loader and the control plane run beside the compute instead of
		// waiting for it to be preempted (2 workers x 1 thread on 2 cores:
		// 843-933 vs 710-814 images/s over six interleaved runs each).
		Env:         append(os.Environ(), "RINGTRAIN_LOG=json", fmt.Sprintf("GOMAXPROCS=%d", max(threads, 1)+1)),
		IDs:         ids,
		LogDir:      filepath.Join(outputDir, "logs"),
		Restart:     o.restart,
		Limit:       o.restartLimit,
		Backoff:     o.restartBackoff,
		Progress:    func() int64 { return co.Node().State().Committed.Step },
		Done:        func() bool { return co.Node().State().Status == coordinator.StatusDone },
		SysProcAttr: childAttr(), // local workers die with the coordinator
		BeforeRestart: func(ctx context.Context, id string, pid int) {
			// Its registration goes at once: the coordinator re-plans
			// without it and the replacement may register under the id.
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := deleteMember(dctx, etcd, job, id, pid); err != nil {
				log.Warn("registration of the dead worker not deleted; the replacement waits for its lease", zap.Error(err))
			}
		},
		Log: log,
	})
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

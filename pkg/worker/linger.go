package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Lingering (Config.Linger, worker run --linger) is for pods of a
// StatefulSet, which Kubernetes restarts whenever they exit: a worker
// that exited at the end of the job would be restarted, find the job
// done (or fail again on the same input) and exit again, for as long as
// the release is installed. A lingering worker stays up instead, serving
// /healthz (live) and /readyz (not ready: it is in no running plan),
// until it is stopped (SIGTERM: pod deletion, helm upgrade or
// uninstall). What it lingers on:
//   - the job is done;
//   - the coordinator stopped the job (ErrJobFailed: a worker reported an
//     input error);
//   - this worker met an input error (Config.Permanent; reported to the
//     coordinator before lingering).
//
// A failed job may be retried: a coordinator started again (e.g. by a
// helm upgrade that fixed the input) imposes its spec. A worker that
// lingers on a failure therefore follows the job's plans and joins again
// when a plan newer than the failed one runs the job. A crash, a lost
// coordinator or etcd, or any other error is returned at once, as without
// Linger, so that Kubernetes restarts the worker.

// healthState is the worker's readiness, swapped as the process goes
// through joining, training and lingering.
type healthState struct{ f atomic.Pointer[func() error] }

func (h *healthState) set(f func() error) { h.f.Store(&f) }

func (h *healthState) ready() error {
	if f := h.f.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// lingers reports whether a worker with Linger idles after Run's
// membership ended with err (ctx still alive): the job is done (nil),
// stopped, or this worker's input is bad.
func lingers(err error, permanent func(error) bool) bool {
	return err == nil || errors.Is(err, ErrJobFailed) || permanent(err)
}

// linger idles until ctx ends (false) or, after a failure, until the
// coordinator retries the job (true: join again). It never returns true
// for a done job.
func linger(ctx context.Context, cfg Config, log *zap.Logger, end error, hs *healthState) bool {
	why := "the job is done"
	if end != nil {
		why = "the job stopped: " + end.Error()
	}
	hs.set(func() error { return fmt.Errorf("not training: %s; lingering until stopped", why) })
	if end == nil {
		log.Info("the job is done; lingering until stopped (SIGTERM), serving /healthz (--linger)")
		<-ctx.Done()
		return false
	}
	log.Error("the job stopped; lingering until stopped (SIGTERM) or until the coordinator retries the job (--linger)", zap.Error(end))
	cl, err := control.NewClient(cfg.Coordinators, cfg.TLS.DialOption())
	if err != nil {
		log.Warn("cannot follow the job's plans while lingering (a retried job is not joined)", zap.Error(err))
		<-ctx.Done()
		return false
	}
	defer cl.Close()
	var failed uint64 // generation of the failed plan seen, 0 before
	errRetried, errDone := errors.New("retried"), errors.New("done")
	for ctx.Err() == nil {
		err := cl.WatchPlan(ctx, cfg.ID, 0, func(p *controlpb.Plan) error {
			switch p.GetState() {
			case controlpb.JobState_JOB_STATE_FAILED:
				failed = p.GetGeneration()
			case controlpb.JobState_JOB_STATE_DONE:
				return errDone // finished by other workers: never retried
			default:
				if failed != 0 && p.GetGeneration() > failed {
					log.Info("the coordinator retries the job: joining it again", zap.Uint64("generation", p.GetGeneration()))
					return errRetried
				}
			}
			return nil
		})
		switch {
		case errors.Is(err, errRetried):
			return true
		case errors.Is(err, errDone):
			log.Info("the job is done; lingering until stopped (SIGTERM)")
			<-ctx.Done()
			return false
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("following the job's plans while lingering", zap.Error(err))
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	return false
}

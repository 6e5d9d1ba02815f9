package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ErrJobFailed is returned by Run when the coordinator stopped the job
// because a worker (this one or another) reported an error that would
// repeat.
var ErrJobFailed = errors.New("worker: job stopped by the coordinator")

// ErrOutput reports that the job's final output (the model) cannot be
// written: a full disk, a read-only or broken output directory. Retrying
// means training again from the newest checkpoint to fail the same way,
// so it stops the job like an input error.
var ErrOutput = errors.New("worker: the job's output cannot be written")

// IsInputError reports whether err comes from the job's input (its spec,
// data, initial weights, labels, checkpoints) or from training diverging:
// errors that would come back after a restart or under any other plan,
// so that retrying is pointless; and an output directory that refuses the
// final model (ErrOutput). A lost peer, a broken connection or a crash
// are not input errors.
func IsInputError(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{
		ErrSpec, ErrJobFailed, ErrOutput, job.ErrInvalid,
		data.ErrInvalid, data.ErrCorrupt, data.ErrUnavailable, data.ErrChecksum, data.ErrUnsafeArchive,
		nn.ErrLabel, nn.ErrNonFinite, nn.ErrConfig, nn.ErrShape, nn.ErrSafetensors, nn.ErrSTNotFound,
		nn.ErrSTWrongDType, nn.ErrMissingKey, nn.ErrUnexpectedKey, nn.ErrBatchNorm,
		checkpoint.ErrCorrupt, checkpoint.ErrMismatch,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// reportFatal tells the coordinator that this worker stops with an input
// error (see IsInputError), so that it stops the job and shows why
// instead of planning again. It waits at most 5 s; errors are logged.
func reportFatal(cl ControlPlane, id string, gen uint64, err error, log *zap.Logger) {
	if !IsInputError(err) || errors.Is(err, ErrJobFailed) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, rerr := cl.ReportFailure(ctx, &controlpb.FailureReport{WorkerId: id, Generation: gen, Reason: err.Error(), Fatal: true}); rerr != nil {
		log.Warn("input error not reported to the coordinator", zap.Error(rerr))
	}
}

// jobFailed is the error of a plan that says the job was stopped.
func jobFailed(p *controlpb.Plan) error {
	return fmt.Errorf("%w: %s", ErrJobFailed, p.GetFailure())
}

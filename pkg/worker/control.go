package worker

import (
	"context"

	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// ControlPlane is the coordinator as a worker sees it: the plans it
// follows and the reports and commits it sends. A call may fail with
// control.ErrUnreachable (no replica answered; retrying may help),
// control.ErrStaleGeneration (a newer plan exists) or
// control.ErrJobDone. *control.Client is the real one (gRPC, with
// leader failover); MemControlPlane the in-memory twin.
type ControlPlane interface {
	// WatchPlan calls fn with every plan for workerID newer than after,
	// in order, until ctx ends, fn fails or the stream breaks (for
	// example on a leader change); the caller opens it again.
	WatchPlan(ctx context.Context, workerID string, after uint64, fn func(*controlpb.Plan) error) error
	// ReportMetrics sends one step's or evaluation's figures.
	ReportMetrics(ctx context.Context, m *controlpb.MetricsReport) error
	// ReportFailure reports that the ring of a plan failed.
	ReportFailure(ctx context.Context, r *controlpb.FailureReport) (*controlpb.Plan, error)
	// CommitStep commits a durable step (or, with Done, the end of the job).
	CommitStep(ctx context.Context, r *controlpb.CommitStepRequest) (*controlpb.CommitStepResponse, error)
	// RecordCheckpoint records a written checkpoint.
	RecordCheckpoint(ctx context.Context, r *controlpb.RecordCheckpointRequest) (*controlpb.RecordCheckpointResponse, error)
}

var _ ControlPlane = (*control.Client)(nil)

package control

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// errorDomain names this package in google.rpc.ErrorInfo details.
const errorDomain = "ringtrain.coordinator"

// sentinels maps ErrorInfo reasons to sentinel errors and gRPC codes.
var sentinels = []struct {
	reason string
	err    error
	code   codes.Code
}{
	{"INVALID", ErrInvalid, codes.InvalidArgument},
	{"NOT_LEADER", ErrNotLeader, codes.Unavailable},
	{"STALE_GENERATION", ErrStaleGeneration, codes.Aborted},
	{"NOT_RANK_ZERO", ErrNotRankZero, codes.PermissionDenied},
	{"STEP_REGRESSION", ErrStepRegression, codes.OutOfRange},
	{"SPEC_MISMATCH", ErrSpecMismatch, codes.FailedPrecondition},
	{"JOB_DONE", ErrJobDone, codes.FailedPrecondition},
	{"NOT_RUNNING", ErrNotRunning, codes.FailedPrecondition},
	{"BENCH_BUSY", ErrBenchBusy, codes.FailedPrecondition},
	{"CLOSED", ErrClosed, codes.Unavailable},
}

// ToStatus converts an error of this package into a gRPC status that
// carries the sentinel's reason and, for ErrNotLeader, the leader (when
// leader is not nil). The coordinator's service returns it; Client turns
// it back into the sentinel.
func ToStatus(err error, leader *controlpb.NotLeader) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	for _, s := range sentinels {
		if !errors.Is(err, s.err) {
			continue
		}
		st := status.New(s.code, err.Error())
		details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: s.reason, Domain: errorDomain}}
		if s.err == ErrNotLeader && leader != nil {
			details = append(details, leader)
		}
		if withDetails, derr := st.WithDetails(details...); derr == nil {
			st = withDetails
		}
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// FromStatus turns a gRPC error from the Control service back into an
// error that matches this package's sentinels with errors.Is. It also
// returns the NotLeader detail, if any.
func FromStatus(err error) (*controlpb.NotLeader, error) {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return nil, err
	}
	var nl *controlpb.NotLeader
	var sentinel error
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.Domain != errorDomain {
				continue
			}
			for _, s := range sentinels {
				if s.reason == d.Reason {
					sentinel = s.err
				}
			}
		case *controlpb.NotLeader:
			nl = d
		}
	}
	if sentinel == nil {
		return nil, err
	}
	return nl, &remoteError{sentinel: sentinel, status: err}
}

// remoteError is a sentinel error received over gRPC.
type remoteError struct {
	sentinel error
	status   error
}

func (e *remoteError) Error() string { return e.status.Error() }

// Unwrap lets errors.Is match both the sentinel and the gRPC status.
func (e *remoteError) Unwrap() []error { return []error{e.sentinel, e.status} }

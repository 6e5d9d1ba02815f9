package coordinator

import (
	"github.com/ringtrain/ringtrain/pkg/control"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// Sentinel errors, defined in package control (which workers import
// without linking raft); see there.
var (
	ErrInvalid         = control.ErrInvalid
	ErrNotLeader       = control.ErrNotLeader
	ErrStaleGeneration = control.ErrStaleGeneration
	ErrNotRankZero     = control.ErrNotRankZero
	ErrStepRegression  = control.ErrStepRegression
	ErrSpecMismatch    = control.ErrSpecMismatch
	ErrJobDone         = control.ErrJobDone
	ErrNotRunning      = control.ErrNotRunning
	ErrBenchBusy       = control.ErrBenchBusy
	ErrClosed          = control.ErrClosed
	ErrUnreachable     = control.ErrUnreachable
)

// Client is the Control API's client (see control.Client).
type Client = control.Client

// NewClient returns a client for the replicas at addrs (see
// control.NewClient).
var NewClient = control.NewClient

// toStatus converts an error of this package into a gRPC status carrying
// its sentinel and, for ErrNotLeader, the leader.
func toStatus(err error, leader *LeaderInfo) error {
	var nl *controlpb.NotLeader
	if leader != nil {
		nl = &controlpb.NotLeader{LeaderId: leader.ID, LeaderAddress: leader.ControlAddr}
	}
	return control.ToStatus(err, nl)
}

func fromStatus(err error) (*controlpb.NotLeader, error) { return control.FromStatus(err) }

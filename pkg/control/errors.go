// Package control is the coordinator's Control API as its clients use
// it: Client (leader-following gRPC calls) and the sentinel errors that
// cross gRPC intact. It links neither raft nor etcd, so a worker binary
// that imports it carries only what a client needs.
//
// Promises:
//   - An error returned by the service for one of the sentinels below
//     matches it with errors.Is on the client side (ToStatus/FromStatus).
//   - Client is safe for concurrent use; a call fails with ErrUnreachable
//     when no replica answers before its context ends.
package control

import "errors"

// Sentinel errors. Callers test them with errors.Is; the Control service
// carries them across gRPC (see status.go), so a worker's errors.Is works
// on errors returned by Client too. The messages keep the "coordinator:"
// prefix: they are the coordinator's errors.
var (
	// ErrInvalid reports a malformed request or configuration.
	ErrInvalid = errors.New("coordinator: invalid argument")
	// ErrNotLeader reports that this replica is not the raft leader.
	ErrNotLeader = errors.New("coordinator: not the leader")
	// ErrStaleGeneration reports a request made for an older plan.
	ErrStaleGeneration = errors.New("coordinator: stale plan generation")
	// ErrNotRankZero reports a commit from a worker that is not rank 0.
	ErrNotRankZero = errors.New("coordinator: only rank 0 may commit")
	// ErrStepRegression reports a commit older than the last one of the
	// same generation.
	ErrStepRegression = errors.New("coordinator: committed step went back")
	// ErrSpecMismatch reports a job spec (config hash) different from the
	// one the job has committed steps under.
	ErrSpecMismatch = errors.New("coordinator: job spec differs from the running job's")
	// ErrJobDone reports a change to a finished job.
	ErrJobDone = errors.New("coordinator: job is done")
	// ErrNotRunning reports a commit while the job is not running.
	ErrNotRunning = errors.New("coordinator: job is not running")
	// ErrBenchBusy reports a benchmark round started while one runs.
	ErrBenchBusy = errors.New("coordinator: a benchmark round is running")
	// ErrClosed reports use of a closed node, service or client.
	ErrClosed = errors.New("coordinator: closed")
	// ErrUnreachable reports that no coordinator replica answered in time.
	ErrUnreachable = errors.New("coordinator: unreachable")
)

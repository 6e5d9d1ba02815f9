package allreduce

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (test
// with errors.Is); the wrapping message says which values disagreed.
var (
	// ErrConfig: a Config, ReducerConfig or transport option is invalid.
	ErrConfig = errors.New("allreduce: invalid configuration")
	// ErrJob: a peer or frame belongs to another job.
	ErrJob = errors.New("allreduce: job mismatch")
	// ErrGeneration: a peer or frame belongs to another plan generation.
	ErrGeneration = errors.New("allreduce: plan generation mismatch")
	// ErrTag: a frame carries another step, bucket or collective sequence
	// number than the collective in progress.
	ErrTag = errors.New("allreduce: step/bucket/sequence mismatch")
	// ErrMalformed: a frame's round, segment, chunk, offset, count, dtype or
	// payload size is not the expected one, or it cannot be decoded.
	ErrMalformed = errors.New("allreduce: malformed frame")
	// ErrPeer: the peer that connected is not this rank's ring neighbour,
	// or a stream from it is already open.
	ErrPeer = errors.New("allreduce: unexpected peer")
	// ErrNoRing: no ring of that job and generation was opened at the peer
	// within the handshake timeout.
	ErrNoRing = errors.New("allreduce: no such ring at peer")
	// ErrTimeout: a collective or handshake did not finish within its
	// deadline (typically a stalled peer).
	ErrTimeout = errors.New("allreduce: deadline exceeded")
	// ErrClosed: the link or ring was closed, locally or by the peer (a
	// dead peer shows up as this or as a transport error wrapping it).
	ErrClosed = errors.New("allreduce: link closed")
	// ErrBroken: an earlier collective on this Ring failed; the ring must be
	// rebuilt for a new plan. It wraps the first failure.
	ErrBroken = errors.New("allreduce: ring broken by an earlier failure")
	// ErrLength: the vectors given to a collective differ in length across
	// workers, or a Reducer was given inconsistent spans.
	ErrLength = errors.New("allreduce: length mismatch")
)

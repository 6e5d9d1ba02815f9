package allreduce

import (
	"context"
	"fmt"
)

// DType is the element type of a frame's payload.
type DType uint8

const (
	DTypeF32  DType = 1 // little-endian IEEE float32
	DTypeBF16 DType = 2 // little-endian bfloat16 (upper half of a float32)
)

// Size returns the bytes per element of d (0 for an unknown type).
func (d DType) Size() int {
	switch d {
	case DTypeF32:
		return 4
	case DTypeBF16:
		return 2
	}
	return 0
}

// Header tags one frame of a collective. A receiver compares every field
// with what it expects next and refuses the frame on any difference.
type Header struct {
	Job        string
	Generation uint64
	Step       uint64 // training step (Tag.Step)
	Bucket     uint32 // bucket within the step (Tag.Bucket)
	Seq        uint64 // collective sequence number on this ring, from 1
	Round      uint32 // ring round: reduce-scatter rounds, then all-gather
	Segment    uint32 // segment of the vector (small path: origin rank)
	Chunk      uint32 // chunk within the segment
	Offset     uint64 // first element of the chunk
	Count      uint32 // elements in the chunk
	Total      uint64 // elements in the whole vector
	DType      DType
}

// Link is one rank's connection to its two ring neighbours for one plan:
// frames go out to rank+1 and come in from rank-1 (mod World), each in
// order. Send and Recv may be called concurrently with each other (one
// goroutine each); Close may be called at any time from any goroutine.
type Link interface {
	// Send transmits one frame to the right neighbour. It obtains a
	// payload buffer of size bytes, calls fill once to write it, and
	// queues the frame; fill must not keep dst. Send blocks while the
	// transport's window is full. After Close, or once the peer has gone,
	// it returns an error wrapping ErrClosed or the transport's error.
	Send(h *Header, size int, fill func(dst []byte)) error
	// Recv waits for the next frame from the left neighbour and calls fn
	// with its header and payload. The payload may come in pieces (their
	// concatenation is the payload); h and the pieces are valid only
	// during fn. Recv returns fn's error unchanged.
	Recv(fn func(h *Header, payload [][]byte) error) error
	// Close tears the link down, unblocking Send and Recv here and making
	// the neighbours' Send/Recv fail. It is idempotent.
	Close() error
}

// Plan is the ring one Transport.Open call joins: the members of one plan
// generation, in rank order.
type Plan struct {
	Job        string
	Generation uint64
	Rank       int
	// Peers holds every rank's address (for GRPCTransport host:port, for
	// InmemTransport the name it was created with); len(Peers) is the world.
	Peers []string
}

// World returns the number of ranks in p.
func (p Plan) World() int { return len(p.Peers) }

// Right returns the rank this rank sends to.
func (p Plan) Right() int { return (p.Rank + 1) % len(p.Peers) }

// Left returns the rank this rank receives from.
func (p Plan) Left() int { return (p.Rank - 1 + len(p.Peers)) % len(p.Peers) }

// Validate checks p's fields.
func (p Plan) Validate() error {
	switch {
	case p.Job == "":
		return fmt.Errorf("%w: plan without job id", ErrConfig)
	case len(p.Peers) < 1 || len(p.Peers) > MaxWorld:
		return fmt.Errorf("%w: plan with %d peers", ErrConfig, len(p.Peers))
	case p.Rank < 0 || p.Rank >= len(p.Peers):
		return fmt.Errorf("%w: rank %d of %d", ErrConfig, p.Rank, len(p.Peers))
	}
	return nil
}

// Transport connects ring neighbours.
type Transport interface {
	// Open joins the ring of p: it makes this rank accept the stream from
	// its left neighbour and opens the stream to its right neighbour, and
	// returns when both are established. A peer of another job or
	// generation is refused (ErrJob, ErrGeneration), as is one that is not
	// the left neighbour (ErrPeer). With one rank there is nothing to
	// connect and Open returns a nil Link. Open fails with ErrTimeout or
	// ctx's error if the neighbours do not appear in time.
	Open(ctx context.Context, p Plan) (Link, error)
}

// ringKey identifies one ring endpoint at a transport.
type ringKey struct {
	job string
	gen uint64
}

// helloCheck validates a neighbour's hello against the local endpoint
// registered for the same job (any generation). It returns nil if the
// neighbour may connect.
func helloCheck(local Plan, job string, gen uint64, from, world int) error {
	switch {
	case job != local.Job:
		return fmt.Errorf("%w: peer job %q, here %q", ErrJob, job, local.Job)
	case gen != local.Generation:
		return fmt.Errorf("%w: peer generation %d, here %d", ErrGeneration, gen, local.Generation)
	case world != local.World():
		return fmt.Errorf("%w: peer world %d, here %d", ErrPeer, world, local.World())
	case from != local.Left():
		return fmt.Errorf("%w: rank %d connected, left neighbour of rank %d is %d", ErrPeer, from, local.Rank, local.Left())
	}
	return nil
}

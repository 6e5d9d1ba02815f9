package allreduce

// The frame order of the bandwidth path, one per ring (every link of a ring
// must carry the same order: a rank whose input came round-major and whose
// output went lockstep would wait on itself round the ring):
//
//   - round-major (the default): round 0 of the whole segment chunk by
//     chunk, then round 1, ...: a sender can run a whole round ahead of
//     what it has received, which keeps a socket busy.
//   - lockstep, when every link of the ring goes through shared memory
//     (Ring.lockstep decides, the same on every rank): chunk indices are
//     grouped in blocks of orderBlock; block by block, and within a block
//     round by round, chunk by chunk, in chunks of at most
//     lockstepChunkBytes. A rank can then forward each chunk inside its
//     receive (fusedPath) with a bounded number of frames in flight, and
//     what it gathers back is still in cache, as in NCCL's ring.

// orderBlock is the number of chunk indices per block of the lockstep
// order. A link that forwards inside Recv needs room for orderBlock+1
// frames in flight (see fusedPath).
const orderBlock = 4

// lockstepChunkBytes caps the chunk size of a lockstep link (the smaller
// of it and Config.ChunkBytes): small enough that a chunk is still in
// cache when the neighbour reads it and when this rank gathers it back.
const lockstepChunkBytes = 256 << 10

// lockstepLink is a Link that says which of its two directions go
// through shared memory; a ring whose links all do uses the lockstep
// order.
type lockstepLink interface {
	LockstepOut() bool // frames sent to the right
	LockstepIn() bool  // frames received from the left
}

// chunkOrder walks the frames of one direction of a link: segment seg(R)
// of each round R, cut into chunks of ce elements, in the ring's order.
// Within a round, chunks always come in increasing offset.
type chunkOrder struct {
	l, n, ce  int
	lockstep  bool
	maxChunks int // most chunks of any segment
}

func newChunkOrder(l, n, ce int, lockstep bool) chunkOrder {
	o := chunkOrder{l: l, n: n, ce: ce, lockstep: lockstep}
	for s := 0; s < n; s++ {
		lo, hi := segBounds(l, n, s)
		o.maxChunks = max(o.maxChunks, (hi-lo+ce-1)/ce)
	}
	return o
}

// chunk returns chunk c of segment seg; ok is false when seg has no such
// chunk (segment lengths differ by one element, so chunk counts may differ
// by one).
func (o chunkOrder) chunk(seg, c int) (off, cnt int, ok bool) {
	lo, hi := segBounds(o.l, o.n, seg)
	off = lo + c*o.ce
	if off >= hi {
		return 0, 0, false
	}
	return off, min(o.ce, hi-off), true
}

// each calls fn for every frame of rounds 0..rounds-1 in order, where
// round R carries segment seg(R); it stops at fn's first error.
func (o chunkOrder) each(rounds int, seg func(R int) int, fn func(R, s, c, off, cnt int) error) error {
	block := o.maxChunks // round-major: one block of every chunk
	if o.lockstep {
		block = orderBlock
	}
	for c0 := 0; c0 < o.maxChunks; c0 += block {
		for R := 0; R < rounds; R++ {
			s := seg(R)
			for c := c0; c < min(c0+block, o.maxChunks); c++ {
				off, cnt, ok := o.chunk(s, c)
				if !ok {
					break
				}
				if err := fn(R, s, c, off, cnt); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

package allreduce

import "fmt"

// fusedPath is the ring of ringPath run by one goroutine on a forwarder
// link (shared memory), with each chunk passing through memory once per
// hop. Frames go in the lockstep chunkOrder: for each block of chunks, this
// rank sends the block's chunks of its own segment (round 0), then, for
// every round R and chunk c of the block, receives chunk c of round R and,
// still inside the receive, writes chunk c of round R+1 straight into the
// outgoing slot:
//
//	R < N-2 (reduce-scatter):  out = own + in       (own is not touched)
//	R = N-2 (its sum is done): own = own + in; out = own  (Mean: own /= N)
//	N-2 < R < 2N-3 (gather):   own = in; out = in
//	R = 2N-3 (last):           own = in
//
// instead of adding in place and copying out again later. Every element
// gets the same float32 operations in the same operand order as in
// ringPath (own first), so the bits are the same as on every other path,
// and a neighbour running ringPath on a lockstep link sees the same
// frames. A rank sends up
// to orderBlock frames ahead of what it has received and holds one
// incoming slot while it waits for an outgoing one, so the link must have
// room for orderBlock+1 frames in flight; with fewer, every rank of the
// ring could be waiting for a slot its right neighbour holds (forwarder
// says so).
func (r *Ring) fusedPath(op *Op) schedule {
	n, rank := r.cfg.World, r.cfg.Rank
	left, right := mod(rank-1, n), (rank+1)%n
	data := op.data
	rounds := 2 * (n - 1)
	order := newChunkOrder(len(data), n, min(r.cfg.ChunkBytes, lockstepChunkBytes)/4, true)
	chunk := order.chunk
	base := r.header(op, DTypeF32)
	frame := func(R, seg, c, off, cnt int) Header {
		h := base
		h.Round, h.Segment, h.Chunk = uint32(R), uint32(seg), uint32(c)
		h.Offset, h.Count = uint64(off), uint32(cnt)
		return h
	}
	// A large vector's all-gather writes go around the cache (see
	// streamStoreBytes).
	stream := 4*len(data) >= streamStoreBytes
	var (
		out     Header    // the frame being sent
		scratch []float32 // a received payload that is not one aligned piece
		sendErr error     // a Send inside a Recv failed (reported as a send)
	)
	// step applies round R's operation to own and the incoming chunk in,
	// writing the forwarded chunk into fwd (nil in the last round).
	step := func(R int, own, in, fwd []float32) {
		switch {
		case R < n-2:
			addF32To(fwd, own, in)
		case R == n-2:
			if op.red == Mean {
				addF32(own, in)
				inv := float32(n)
				for i := range own {
					own[i] /= inv
				}
				copy(fwd, own)
				return
			}
			addF32Dual(own, fwd, in)
		case fwd == nil && stream:
			copyF32Stream(own, in)
		case fwd == nil:
			copy(own, in)
		case stream:
			copyF32DualStream(own, fwd, in)
		default:
			copyF32Dual(own, fwd, in)
		}
	}
	run := func(<-chan struct{}) error {
		for c0 := 0; c0 < order.maxChunks; c0 += orderBlock {
			c1 := min(c0+orderBlock, order.maxChunks)
			for c := c0; c < c1; c++ {
				off, cnt, ok := chunk(rank, c)
				if !ok {
					continue
				}
				out = frame(0, rank, c, off, cnt)
				src := f32Bytes(data[off : off+cnt])
				if err := r.link.Send(&out, 4*cnt, func(dst []byte) { copy(dst, src) }); err != nil {
					return fmt.Errorf("send to rank %d: %w", right, err)
				}
			}
			for R := 0; R < rounds; R++ {
				for c := c0; c < c1; c++ {
					seg := mod(rank-R-1, n)
					off, cnt, ok := chunk(seg, c)
					if !ok {
						continue
					}
					want := frame(R, seg, c, off, cnt)
					own := data[off : off+cnt]
					err := r.link.Recv(func(h *Header, p [][]byte) error {
						if err := check(h, &want); err != nil {
							return err
						}
						if got := piecesLen(p); got != 4*cnt {
							return fmt.Errorf("%w: payload of %d bytes for %d elements of dtype %d", ErrMalformed, got, cnt, DTypeF32)
						}
						in, ok := onePieceF32(p)
						if !ok {
							if cap(scratch) < cnt {
								scratch = make([]float32, cnt)
							}
							in = scratch[:cnt]
							copyPieces(in, p, DTypeF32)
						}
						if R == rounds-1 {
							step(R, own, in, nil)
							return nil
						}
						out = frame(R+1, seg, c, off, cnt)
						sendErr = r.link.Send(&out, 4*cnt, func(dst []byte) {
							if fwd, ok := alignedF32(dst); ok {
								step(R, own, in, fwd)
								return
							}
							// An unaligned slot: work in own (which the
							// all-gather overwrites unless it is the sum this
							// rank owns) and copy.
							switch {
							case R < n-2:
								addF32(own, in)
							case R == n-2:
								step(R, own, in, make([]float32, cnt))
							default:
								copy(own, in)
							}
							copy(dst, f32Bytes(own))
						})
						return sendErr
					})
					switch {
					case sendErr != nil:
						return fmt.Errorf("send to rank %d: %w", right, sendErr)
					case err != nil:
						return fmt.Errorf("receive from rank %d: %w", left, err)
					}
				}
			}
		}
		return nil
	}
	return schedule{recv: run}
}

// streamStoreBytes is the vector size from which fusedPath writes the
// all-gather's values into the vector with non-temporal stores: a vector
// this large is not in the cache anyway, and an ordinary store would first
// read every line it overwrites (on the 2-core development machine the
// all-gather copy into a 44.7 MB vector ran 25-35 % faster, and the 44.7 MB
// 4-rank collective used about 6 % less CPU). Below it the result stays in
// the cache for whoever reads it next.
const streamStoreBytes = 4 << 20

// onePieceF32 views a payload as float32 when it is one 4-byte aligned
// piece (always so for shared-memory slots).
func onePieceF32(p [][]byte) ([]float32, bool) {
	if len(p) != 1 || len(p[0])%4 != 0 {
		return nil, false
	}
	return alignedF32(p[0])
}

package allreduce

import (
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
)

// The same-host path of GRPCTransport: a single-producer single-consumer
// ring of slots in a shared-memory file mapped by both ends of a link. The
// gRPC stream only carries the handshake and, by ending, a peer's death;
// every frame's header and payload, and the hand-back of slots, go through
// the shared memory:
//
//	control page: head (frames published, written by the sender) and tail
//	(frames consumed, written by the receiver), each with a wake-up word
//	and a "sleeping" flag, on separate cache lines;
//	then slots×(header room + payload, rounded up to 64 bytes): frame k
//	lives in slot k mod slots,
//	its header as uint32 length + ChunkHeader (protobuf), its payload
//	written in place by the sender's fill and read in place by the
//	receiver's add or copy.
//
// A waiting side first polls for up to shmPoll, giving the processor to
// any other runnable thread between polls (sched_yield: on an idle core
// this is a spin that sees the other side's next frame within
// microseconds, a few chunks' worth of work; with more ranks than cores it
// lets the rank that has to produce that frame run; bounded in time, not
// in polls, so that a rank whose neighbour is descheduled does not burn
// its core), and then sleeps on a futex of the shared wake-up word; the
// other side wakes it only when it announced the sleep. Sleeps are bounded
// (shmSleep) so that the local link's Close, the end of the stream and the
// collective's deadline are always seen.

const (
	shmCtrlBytes = 4096 // control page
	shmHdrRoom   = 1024 // per slot: uint32 length + ChunkHeader

	shmOffHead     = 0   // uint64: frames published
	shmOffHeadSeq  = 8   // uint32: bumped with head (futex word)
	shmOffHeadWait = 12  // uint32: 1 while the receiver sleeps
	shmOffTail     = 128 // uint64: frames consumed
	shmOffTailSeq  = 136 // uint32: bumped with tail (futex word)
	shmOffTailWait = 140 // uint32: 1 while the sender sleeps

	shmPoll  = 100 * time.Microsecond // polling (with yields) before a sleep
	shmSleep = 2 * time.Millisecond   // longest single sleep
)

// shmPrefix starts the name of every segment file, so that a receiver maps
// only files this package created.
const shmPrefix = "ringtrain-ar-"

// shmStride is the distance between two slots: header room plus the
// payload rounded up to a cache line, so that every payload starts on a
// 64-byte boundary (the SIMD kernels read and write it in place).
func shmStride(slot int) int { return shmHdrRoom + (slot+63)&^63 }

// shmSize is the file size of a segment of the given geometry.
func shmSize(slots, slot int) int { return shmCtrlBytes + slots*shmStride(slot) }

// shmWait waits until ready reports true, polling stop (which returns a
// non-nil error to give up) between tries.
func shmWait(seg *shmSegment, seqOff, waitOff int, ready func() bool, stop func() error) error {
	start := time.Now()
	for {
		if ready() {
			return nil
		}
		if err := stop(); err != nil {
			return err
		}
		if time.Since(start) < shmPoll {
			shmYield()
			continue
		}
		seg.sleep(seqOff, waitOff, shmSleep, ready)
	}
}

// shmSend writes one frame into the next slot of l.shm, waiting for the
// receiver to free one.
func (l *grpcLink) shmSend(h *Header, size int, fill func(dst []byte)) error {
	seg := l.shm
	if size > seg.slot {
		return fmt.Errorf("%w: payload of %d bytes over the slot size %d", ErrConfig, size, seg.slot)
	}
	toWire(h, &l.shmHdr)
	l.shmHdr.PayloadBytes = uint32(size)
	hb, err := proto.MarshalOptions{}.MarshalAppend(append(l.shmHB[:0], 0, 0, 0, 0), &l.shmHdr)
	if err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	l.shmHB = hb
	if len(hb) > shmHdrRoom {
		return fmt.Errorf("%w: frame header of %d bytes (job id too long for shared memory)", ErrConfig, len(hb))
	}
	binary.LittleEndian.PutUint32(hb, uint32(len(hb)-4))
	var tail uint64
	ready := func() bool {
		t, ok := seg.load64(shmOffTail)
		tail = t
		return !ok || l.sent-t < uint64(seg.slots)
	}
	stop := func() error {
		select {
		case <-l.closed:
			return fmt.Errorf("%w: link closed", ErrClosed)
		case <-l.ackDone:
			return fmt.Errorf("%w: stream to the right ended: %w", ErrClosed, l.ackErr)
		default:
			return nil
		}
	}
	if err := shmWait(seg, shmOffTailSeq, shmOffTailWait, ready, stop); err != nil {
		return err
	}
	if tail > l.sent {
		return fmt.Errorf("%w: shared-memory tail %d ahead of head %d", ErrMalformed, tail, l.sent)
	}
	if err := seg.with(int(l.sent%uint64(seg.slots)), func(hdr, payload []byte) error {
		copy(hdr, hb)
		fill(payload[:size])
		return nil
	}); err != nil {
		return err
	}
	l.sent++
	seg.publish(shmOffHead, l.sent, shmOffHeadSeq, shmOffHeadWait)
	return nil
}

// shmRecv waits for the next frame in the left neighbour's slots and hands
// it to fn in place.
func (l *grpcLink) shmRecv(fn func(h *Header, payload [][]byte) error) error {
	in := l.in
	seg := in.shm
	var head uint64
	avail := func() bool {
		hd, ok := seg.load64(shmOffHead)
		head = hd
		return !ok || hd != in.taken
	}
	stop := func() error {
		select {
		case <-l.closed:
			return fmt.Errorf("%w: link closed", ErrClosed)
		case _, ok := <-in.frames:
			if ok {
				return fmt.Errorf("%w: frame on the stream of a shared-memory link", ErrMalformed)
			}
			if avail() { // published before the stream ended: still readable
				return nil
			}
			return fmt.Errorf("%w: stream from the left ended: %w", ErrClosed, in.err)
		default:
			return nil
		}
	}
	if err := shmWait(seg, shmOffHeadSeq, shmOffHeadWait, avail, stop); err != nil {
		return err
	}
	if head < in.taken || head-in.taken > uint64(seg.slots) {
		return fmt.Errorf("%w: shared-memory head %d with %d frames taken and %d slots", ErrMalformed, head, in.taken, seg.slots)
	}
	h := &l.recvHdr
	err := seg.with(int(in.taken%uint64(seg.slots)), func(hdr, payload []byte) error {
		n := binary.LittleEndian.Uint32(hdr)
		if n > shmHdrRoom-4 {
			return fmt.Errorf("%w: shared-memory frame header of %d bytes", ErrMalformed, n)
		}
		in.shmHdr.Reset()
		if err := proto.Unmarshal(hdr[4:4+n], &in.shmHdr); err != nil {
			return fmt.Errorf("%w: frame header: %w", ErrMalformed, err)
		}
		if err := fromWire(&in.shmHdr, h); err != nil {
			return err
		}
		size := int(in.shmHdr.GetPayloadBytes())
		if size > len(payload) {
			return fmt.Errorf("%w: shared-memory payload of %d bytes in a slot of %d", ErrMalformed, size, len(payload))
		}
		return fn(h, [][]byte{payload[:size]})
	})
	if err != nil {
		return err
	}
	in.taken++
	seg.publish(shmOffTail, in.taken, shmOffTailSeq, shmOffTailWait)
	return nil
}

// shmDrain waits (at most d) until the right neighbour has consumed every
// frame sent, or has gone.
func (l *grpcLink) shmDrain(d time.Duration) {
	deadline := time.Now().Add(d)
	ready := func() bool {
		t, ok := l.shm.load64(shmOffTail)
		return !ok || t >= l.sent
	}
	stop := func() error {
		select {
		case <-l.closed:
			return ErrClosed
		case <-l.ackDone:
			return ErrClosed
		default:
		}
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		return nil
	}
	_ = shmWait(l.shm, shmOffTailSeq, shmOffTailWait, ready, stop)
}

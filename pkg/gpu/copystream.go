package gpu

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// This file: nn.CopyStream, uploads on a second stream (the copy stream)
// that overlap the compute stream's work, ordered against it by fences
// (CUDA events). pkg/worker uploads step s+1's input while step s
// computes.

// streamAPI is what a deviceAPI offers for the copy stream: cudaDevice
// with a second CUDA stream and events (copystream_cuda.go), the kernel
// emulator with a twin that defers its copies until they are waited for.
// A deviceAPI without it (the recording fake) gets the fallback: copies
// on the one stream, fences that order nothing (one stream is in order).
type streamAPI interface {
	// newEvent creates an event (done until first recorded), and the
	// copy stream with the first one.
	newEvent() (int, error)
	// recordEvent records ev on the copy stream (onCopy) or the compute
	// stream.
	recordEvent(ev int, onCopy bool) error
	// waitEvent makes the copy stream (onCopy) or the compute stream
	// wait for ev before the work queued after it.
	waitEvent(ev int, onCopy bool) error
	// syncEvent waits on the host until ev is done.
	syncEvent(ev int) error
	// uploadCopyStream queues a copy from page-locked host memory on the
	// copy stream.
	uploadCopyStream(dst uint64, src unsafe.Pointer, bytes uint64) error
	// syncCopies waits on the host for everything queued on the copy
	// stream (Close).
	syncCopies() error
}

var _ nn.CopyStream = (*Backend)(nil)

// noFence is what NewFence returns when it fails (the sticky error says
// why) or when the device has one stream only.
const noFence nn.Fence = -1

// streamOp starts a copy-stream op: like begin, and it fails the graph
// capture in progress (the copy stream is not captured).
func (b *Backend) streamOp(op string) (streamAPI, bool) {
	if !b.begin() || b.hostDuringCapture(op) {
		return nil, false
	}
	s, ok := b.dev.(streamAPI)
	return s, ok
}

// NewFence implements nn.CopyStream. A device without a copy stream
// (the recording fake) gives fences that order nothing (its one stream
// is in order); a failure to make the copy stream or the event is
// returned, not sticky.
func (b *Backend) NewFence() (nn.Fence, error) {
	defer b.end()
	s, ok := b.streamOp("NewFence")
	switch {
	case b.err != nil || b.cap.on:
		return noFence, firstErr(b.err, b.cap.err)
	case !ok:
		return noFence, nil
	}
	if n := len(b.spareFences); n > 0 {
		// A released fence is done: as good as a new one.
		f := b.spareFences[n-1]
		b.spareFences = b.spareFences[:n-1]
		return f, nil
	}
	ev, err := s.newEvent()
	if err != nil {
		return noFence, fmt.Errorf("gpu: no copy stream: %w", err)
	}
	return nn.Fence(ev), nil
}

// ReleaseFence implements nn.CopyStream: f's event is kept for the next
// NewFence (a trainer made per benchmark round would otherwise make new
// events every round, held until the backend closes).
func (b *Backend) ReleaseFence(f nn.Fence) {
	if f == noFence || f < 0 || b.closed {
		return
	}
	b.spareFences = append(b.spareFences, f)
}

// fenceOp runs one fence op; noFence is a no-op (one stream, or the
// NewFence that made it failed and the error is sticky).
func (b *Backend) fenceOp(op string, f nn.Fence, do func(s streamAPI, ev int) error) {
	defer b.end()
	s, ok := b.streamOp(op)
	if !ok || f == noFence {
		return
	}
	if f < 0 {
		b.fail(fmt.Errorf("%w: %s of fence %d", ErrBadInput, op, f))
		return
	}
	b.ok(do(s, int(f)))
}

// CopyAfter implements nn.CopyStream.
func (b *Backend) CopyAfter(f nn.Fence) {
	b.fenceOp("CopyAfter", f, func(s streamAPI, ev int) error { return s.waitEvent(ev, true) })
}

// RecordCopies implements nn.CopyStream.
func (b *Backend) RecordCopies(f nn.Fence) {
	b.fenceOp("RecordCopies", f, func(s streamAPI, ev int) error { return s.recordEvent(ev, true) })
}

// ComputeAfter implements nn.CopyStream.
func (b *Backend) ComputeAfter(f nn.Fence) {
	b.fenceOp("ComputeAfter", f, func(s streamAPI, ev int) error { return s.waitEvent(ev, false) })
}

// RecordCompute implements nn.CopyStream.
func (b *Backend) RecordCompute(f nn.Fence) {
	b.fenceOp("RecordCompute", f, func(s streamAPI, ev int) error { return s.recordEvent(ev, false) })
}

// SyncFence implements nn.CopyStream. With one stream it waits for the
// stream.
func (b *Backend) SyncFence(f nn.Fence) error {
	defer b.end()
	s, ok := b.streamOp("SyncFence")
	switch {
	case b.err != nil || b.cap.on:
		return firstErr(b.err, b.cap.err)
	case !ok || f == noFence:
		b.ok(b.dev.sync())
	case f < 0:
		b.fail(fmt.Errorf("%w: SyncFence of fence %d", ErrBadInput, f))
	default:
		b.ok(s.syncEvent(int(f)))
	}
	return b.err
}

// CopyPinned implements nn.CopyStream. Without a copy stream the copy
// goes on the one stream (as FromHostPinned).
func (b *Backend) CopyPinned(dst *nn.Tensor, src []float32) {
	defer b.end()
	s, ok := b.streamOp("CopyPinned")
	if b.err != nil || b.cap.on || !b.devs(dst) {
		return
	}
	if len(src) != dst.Numel() {
		b.fail(fmt.Errorf("%w: CopyPinned of %d values into shape %v", nn.ErrShape, len(src), dst.Shape))
		return
	}
	b.setPlain(dst)
	if len(src) == 0 {
		return
	}
	p, n := unsafe.Pointer(&src[0]), uint64(len(src))*4
	switch pu, pinned := b.dev.(pinnedUploader); {
	case ok:
		b.ok(s.uploadCopyStream(ptr(dst), p, n))
	case pinned:
		b.ok(pu.uploadPinned(ptr(dst), p, n))
	default:
		b.ok(b.dev.upload(ptr(dst), p, n))
	}
	runtime.KeepAlive(src)
}

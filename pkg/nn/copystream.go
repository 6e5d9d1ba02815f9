package nn

// Fence marks a point in one of a device backend's two streams (a CUDA
// event), for CopyStream.
type Fence int

// CopyStream is an optional capability of device backends: uploads on a
// second stream (the copy stream) that run while the compute stream
// computes, ordered against it by fences only. A trainer uploads step
// s+1's input batch while step s computes (pkg/worker's prefetch):
//
//	copy stream:    CopyAfter(free) CopyPinned(x) CopyPinned(y) RecordCopies(ready)
//	compute stream: ComputeAfter(ready) ...reads x, y... RecordCompute(free)
//
// Without ComputeAfter the compute stream may read a buffer before (or
// while) its copy lands; without CopyAfter a copy may overwrite a buffer
// the compute stream still reads. Neither is detected by the backend.
// Errors are the backend's sticky errors (Sync, SyncFence report them).
type CopyStream interface {
	// NewFence returns a fence, valid until the backend is closed (or
	// released); it is done until it is first recorded. Fences are driver objects:
	// make them once, not per step. It fails, without a sticky error,
	// when the device cannot give a copy stream (the caller then uploads
	// on the compute stream).
	NewFence() (Fence, error)
	// ReleaseFence gives f back for a later NewFence (which returns it
	// instead of making another driver object). f must be done (SyncFence)
	// and not be used again by the caller.
	ReleaseFence(f Fence)
	// CopyAfter makes the copies queued after it wait until f is done.
	CopyAfter(f Fence)
	// CopyPinned queues a copy of src (page-locked memory from
	// AsyncCopier.PinnedHost) into dst on the copy stream and returns at
	// once. src must not change, and no compute may read dst, until a
	// fence recorded after it by RecordCopies is done.
	CopyPinned(dst *Tensor, src []float32)
	// RecordCopies records f on the copy stream: f is done when every
	// copy queued before it has landed.
	RecordCopies(f Fence)
	// ComputeAfter makes the compute issued after it wait until f is
	// done (without waiting on the host).
	ComputeAfter(f Fence)
	// RecordCompute records f on the compute stream: f is done when the
	// work issued before it is done.
	RecordCompute(f Fence)
	// SyncFence waits on the host until f is done and reports the
	// backend's sticky error.
	SyncFence(f Fence) error
}

package nn

import (
	"errors"
	"fmt"
)

// DeviceCounter is an optional capability of device backends (pkg/gpu):
// the checks and counts of a training step kept on the device, so that a
// trainer reads them back in one small copy per step instead of
// synchronising for each (CountNonFinite, a loss read, Accuracy's logits
// read each wait for the device).
//
// Counts are uint32 values stored in the bits of a float32 tensor's
// element (math.Float32bits of the element read back is the count); they
// are exact up to 2^32-1. Labels are int32 values stored in the bits of a
// tensor's elements (upload them with UploadLabels), so that no call
// needs host data and a sequence of them can be captured in a graph
// (GraphCapturer).
type DeviceCounter interface {
	// CountNonFiniteAdd adds the number of NaN/±Inf elements of t to the
	// count in acc's element i, without waiting for the device.
	CountNonFiniteAdd(acc *Tensor, i int, t *Tensor)
	// Top1Add adds to the count in acc's element i the number of rows of
	// logits (N,K) that Accuracy counts as correct for labels (N device
	// labels): the label's logit is not NaN and no other logit is larger,
	// NaN, or equal at a lower class index.
	Top1Add(acc *Tensor, i int, logits, labels *Tensor)
	// SoftmaxCrossEntropyLabels is SoftmaxCrossEntropy with the labels
	// already on the device (N device labels, each in [0,K): the caller
	// checks them before uploading).
	SoftmaxCrossEntropyLabels(loss, dlogits, probs, logits, labels *Tensor, smoothing, gradScale float32)
	// UploadLabels copies labels into dst (len(labels) elements) as int32
	// bits.
	UploadLabels(dst *Tensor, labels []int32)
}

// GraphCapturer is an optional capability of device backends: the ops
// called between BeginCapture and EndCapture are recorded, not run, and
// the returned Graph runs them again, with the same arguments and
// addresses, each time it is launched (CUDA graphs). Ops that need the
// host during capture (ToHost, CountNonFinite, FromHost, Sync, ...) make
// EndCapture fail; so do allocations. A failed capture leaves the
// backend usable (nothing of the captured ops ran).
type GraphCapturer interface {
	BeginCapture() error
	EndCapture() (Graph, error)
}

// Graph is a captured sequence of ops.
type Graph interface {
	// Launch queues the captured ops behind the work issued so far. It
	// fails with an error wrapping ErrGraphStale when memory was
	// allocated or freed since the capture (an address in the graph may
	// belong to another tensor now): capture again.
	Launch() error
	// Close releases the graph.
	Close() error
}

// ErrGraphStale: a captured graph's addresses may no longer be valid.
var ErrGraphStale = errors.New("nn: graph is stale (memory changed since capture)")

// ComputeLabels is Compute with the labels already on the device (see
// DeviceCounter; the caller checked them) and without reading the loss
// back: it returns the loss as a 1-element device tensor owned by c, so
// no call waits for the device. The backend must implement DeviceCounter.
func (c *CrossEntropy) ComputeLabels(b Backend, logits, labels *Tensor) (loss, dlogits *Tensor, err error) {
	dc, ok := b.(DeviceCounter)
	if !ok {
		return nil, nil, fmt.Errorf("%w: backend %s keeps no labels on the device", ErrConfig, b.Name())
	}
	if logits == nil || len(logits.Shape) != 2 || logits.Shape[0] < 1 || logits.Shape[1] < 1 {
		return nil, nil, fmt.Errorf("%w: logits must be (N,K)", ErrShape)
	}
	if labels == nil || labels.Numel() != logits.Shape[0] {
		return nil, nil, fmt.Errorf("%w: labels for a batch of %d", ErrLabel, logits.Shape[0])
	}
	if !(c.Smoothing >= 0 && c.Smoothing <= 1) {
		return nil, nil, fmt.Errorf("%w: label smoothing %v (want 0 <= s <= 1)", ErrConfig, c.Smoothing)
	}
	if c.b != b {
		if c.b != nil {
			c.free()
		}
		c.b = b
	}
	if c.loss == nil {
		c.loss = b.New(1)
	}
	scale := c.GradScale
	if scale == 0 {
		scale = 1
	}
	dl := c.dlogits.get(b, logits.Shape[0], logits.Shape[1])
	dc.SoftmaxCrossEntropyLabels(c.loss, dl, nil, logits, labels, c.Smoothing, scale)
	return c.loss, dl, nil
}

// CheckLabels returns an error wrapping ErrLabel unless there are n
// labels, each in [0,k).
func CheckLabels(labels []int32, n, k int) error { return checkLabels(labels, n, k) }

// Release frees the tensors c holds on its backend (the loss and
// dlogits buffers); c can be used again afterwards.
func (c *CrossEntropy) Release() {
	if c.b != nil {
		c.free()
		c.b = nil
	}
}

// PinnedUploader is an optional capability of device backends: an upload
// from page-locked host memory (AsyncCopier.PinnedHost) queued as one
// asynchronous copy, without the staging copy FromHost makes.
type PinnedUploader interface {
	// FromHostPinned queues a copy of src into dst behind the work issued
	// so far and returns at once. src must be page-locked memory from
	// PinnedHost and must not change until the work issued after the
	// copy has been waited for (Sync, ToHost, or WaitCopy of a later
	// copy).
	FromHostPinned(dst *Tensor, src []float32)
}

// DeviceMemory is what a device backend holds of its device's memory, in
// bytes.
type DeviceMemory struct {
	Live   uint64 // in tensors and scratch handed out
	Cached uint64 // allocated from the driver and kept for reuse
	Peak   uint64 // the most of Live+Cached so far
	Total  uint64 // the device's memory (0 when unknown)
}

// DeviceMemoryReporter is an optional capability of device backends: their
// device's name and memory use, read between ops from the goroutine that
// issues them.
type DeviceMemoryReporter interface {
	DeviceName() string
	DeviceMemory() DeviceMemory
}

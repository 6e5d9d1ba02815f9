package gpu

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// This file: nn.DeviceCounter, the counts and checks of a training step
// kept on the device (pkg/worker reads them back once per step).

var _ nn.DeviceCounter = (*Backend)(nil)

// countSlot is the device address of acc's element i, checked.
func (b *Backend) countSlot(acc *nn.Tensor, i int) (uint64, bool) {
	if !b.devs(acc) {
		return 0, false
	}
	if i < 0 || i >= acc.Numel() {
		b.fail(fmt.Errorf("%w: count slot %d of a tensor of %d elements", ErrBadInput, i, acc.Numel()))
		return 0, false
	}
	b.setPlain(acc)
	return ptr(acc) + uint64(i)*4, true
}

// CountNonFiniteAdd implements nn.DeviceCounter (no synchronisation).
func (b *Backend) CountNonFiniteAdd(acc *nn.Tensor, i int, t *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(t) {
		return
	}
	slot, ok := b.countSlot(acc, i)
	if !ok {
		return
	}
	b.widen(t)
	b.elem("k_count_nonfinite", t.Numel(), a(t, t.Numel(), slot))
}

// Top1Add implements nn.DeviceCounter.
func (b *Backend) Top1Add(acc *nn.Tensor, i int, logits, labels *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(logits, labels) {
		return
	}
	if len(logits.Shape) != 2 || logits.Shape[0] < 1 || labels.Numel() != logits.Shape[0] {
		b.fail(fmt.Errorf("%w: Top1Add of logits %v with %d labels", nn.ErrShape, logits.Shape, labels.Numel()))
		return
	}
	slot, ok := b.countSlot(acc, i)
	if !ok {
		return
	}
	b.widen(logits)
	N, K := logits.Shape[0], logits.Shape[1]
	b.elem("k_top1_count", N, a(logits, labels, N, K, slot))
}

// SoftmaxCrossEntropyLabels implements nn.DeviceCounter: labels are
// already on the device (the caller checked them), so nothing is uploaded.
func (b *Backend) SoftmaxCrossEntropyLabels(loss, dlogits, probs, logits, labels *nn.Tensor, smoothing, gradScale float32) {
	defer b.end()
	if !b.begin() || !b.devs(loss, dlogits, probs, logits, labels) {
		return
	}
	b.widen(logits)
	b.setPlain(loss, dlogits, probs)
	N := logits.Shape[0]
	K := logits.Numel() / N
	if labels.Numel() != N {
		b.fail(fmt.Errorf("%w: %d labels for %d rows", nn.ErrShape, labels.Numel(), N))
		return
	}
	rows := b.getScratch("rowloss", uint64(N)*4)
	if b.err != nil {
		return
	}
	b.xent(loss, dlogits, probs, logits, ptr(labels), rows, N, K, smoothing, gradScale)
}

// UploadLabels implements nn.DeviceCounter.
func (b *Backend) UploadLabels(dst *nn.Tensor, labels []int32) {
	defer b.end()
	if !b.begin() || !b.devs(dst) {
		return
	}
	if b.hostDuringCapture("UploadLabels") {
		return
	}
	if len(labels) != dst.Numel() {
		b.fail(fmt.Errorf("%w: %d labels into shape %v", nn.ErrShape, len(labels), dst.Shape))
		return
	}
	b.setPlain(dst)
	if len(labels) == 0 {
		return
	}
	b.ok(b.dev.upload(ptr(dst), unsafe.Pointer(&labels[0]), uint64(len(labels))*4))
	runtime.KeepAlive(labels)
}

// pinnedUploader is a deviceAPI that copies from page-locked memory
// without staging (cudaDevice); others stage (upload).
type pinnedUploader interface {
	uploadPinned(dst uint64, src unsafe.Pointer, bytes uint64) error
}

var _ nn.PinnedUploader = (*Backend)(nil)

// FromHostPinned implements nn.PinnedUploader.
func (b *Backend) FromHostPinned(dst *nn.Tensor, src []float32) {
	defer b.end()
	if !b.begin() || !b.devs(dst) {
		return
	}
	if b.hostDuringCapture("FromHostPinned") {
		return
	}
	if len(src) != dst.Numel() {
		b.fail(fmt.Errorf("%w: FromHostPinned of %d values into shape %v", nn.ErrShape, len(src), dst.Shape))
		return
	}
	b.setPlain(dst)
	if len(src) == 0 {
		return
	}
	p, n := unsafe.Pointer(&src[0]), uint64(len(src))*4
	if pu, ok := b.dev.(pinnedUploader); ok {
		b.ok(pu.uploadPinned(ptr(dst), p, n))
	} else {
		b.ok(b.dev.upload(ptr(dst), p, n))
	}
	runtime.KeepAlive(src)
}

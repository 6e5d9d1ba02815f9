package nn

import (
	"errors"
	"fmt"
)

// ErrShape is wrapped by every error about a tensor of the wrong shape.
var ErrShape = errors.New("nn: shape mismatch")

// Tensor is a dense, row-major float32 array. A tensor lives either in host
// memory (Data != nil) or in a device's memory (Ptr != 0, owned by the
// Backend that allocated it), never both. Views share storage with the
// tensor they were cut from: a host view is a sub-slice, a device view is
// Ptr plus a byte offset.
type Tensor struct {
	Shape []int
	Data  []float32 // host storage, len(Data) == Numel(); nil for device tensors
	Ptr   uintptr   // device address of element 0; 0 for host tensors
}

// NewTensor returns a zero-filled host tensor.
func NewTensor(shape ...int) *Tensor {
	n := numel(shape)
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, n)}
}

// FromSlice wraps data (not copied) as a host tensor of the given shape.
func FromSlice(data []float32, shape ...int) (*Tensor, error) {
	if numel(shape) != len(data) {
		return nil, fmt.Errorf("%w: %d values for shape %v", ErrShape, len(data), shape)
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: data}, nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return numel(t.Shape) }

// OnDevice reports whether the tensor's storage is device memory.
func (t *Tensor) OnDevice() bool { return t.Ptr != 0 }

// Dim returns Shape[i]; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// View returns a tensor of the given shape sharing storage with t, starting
// at element off. It panics if the view does not fit: views are cut by the
// engine itself from layouts it computed, so a misfit is a programming error.
func (t *Tensor) View(off int, shape ...int) *Tensor {
	n := numel(shape)
	if off < 0 || off+n > t.Numel() {
		panic(fmt.Sprintf("nn: view [%d,%d) outside tensor of %d elements", off, off+n, t.Numel()))
	}
	v := &Tensor{Shape: append([]int(nil), shape...)}
	if t.Ptr != 0 {
		v.Ptr = t.Ptr + uintptr(off)*4
	} else {
		v.Data = t.Data[off : off+n : off+n]
	}
	return v
}

// Reshape returns a view of the whole tensor with another shape of the same size.
func (t *Tensor) Reshape(shape ...int) (*Tensor, error) {
	if numel(shape) != t.Numel() {
		return nil, fmt.Errorf("%w: cannot reshape %v to %v", ErrShape, t.Shape, shape)
	}
	return t.View(0, shape...), nil
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// CheckShape returns an error naming what when got differs from want.
func CheckShape(what string, got, want []int) error {
	if !SameShape(got, want) {
		return fmt.Errorf("%w: %s has shape %v, want %v", ErrShape, what, got, want)
	}
	return nil
}

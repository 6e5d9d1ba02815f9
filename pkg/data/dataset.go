package data

import (
	"errors"
	"fmt"
)

// Errors wrapped by this package. Test with errors.Is.
var (
	// ErrInvalid is wrapped by every error about a bad argument or option.
	ErrInvalid = errors.New("data: invalid argument")
	// ErrCorrupt is wrapped by every error about a malformed data file.
	ErrCorrupt = errors.New("data: corrupt data file")
	// ErrEndOfEpoch is returned by [Sampler.Step] when no further step fits
	// in the epoch (only possible with drop-last).
	ErrEndOfEpoch = errors.New("data: end of epoch")
	// ErrClosed is returned by a [Loader] used after Close.
	ErrClosed = errors.New("data: loader closed")
)

// Shape is the size of one image: channels, height, width.
type Shape struct {
	C, H, W int
}

// Len is the number of float32 values in one image (C*H*W).
func (s Shape) Len() int { return s.C * s.H * s.W }

func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.C, s.H, s.W) }

// Dataset is a random-access collection of labelled images. CIFAR-10, image
// folders and the synthetic set implement it, and the [Loader] reads any
// implementation.
//
// Implementations must be safe for concurrent Get calls from several
// goroutines, and Get must be deterministic: the same index always yields
// the same image and label.
type Dataset interface {
	// Len is the number of samples; indices run from 0 to Len()-1.
	Len() int
	// Shape is the size of every image Get writes.
	Shape() Shape
	// Classes names the labels: label k is Classes()[k].
	Classes() []string
	// Get writes sample i into dst as float32 values in [0, 1], channel
	// major (C, H, W), and returns its label. len(dst) must be Shape().Len().
	Get(i int, dst []float32) (label int, err error)
}

// checkGet validates the common arguments of Dataset.Get.
func checkGet(i, n int, dst []float32, s Shape) error {
	if i < 0 || i >= n {
		return fmt.Errorf("%w: sample index %d outside [0, %d)", ErrInvalid, i, n)
	}
	if len(dst) != s.Len() {
		return fmt.Errorf("%w: destination holds %d values, an image of %v needs %d", ErrInvalid, len(dst), s, s.Len())
	}
	return nil
}

// byteToUnit[v] is v/255 as float32, exactly as torchvision's ToTensor
// computes it.
var byteToUnit = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()

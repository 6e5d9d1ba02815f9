package gpu

import (
	"errors"
	"fmt"
)

var (
	// ErrLibraryNotFound is wrapped when a CUDA library could not be
	// opened from any searched path; the message lists every path tried.
	ErrLibraryNotFound = errors.New("gpu: library not found")
	// ErrNoDevice is wrapped when the driver loads but reports no usable GPU.
	ErrNoDevice = errors.New("gpu: no CUDA device")
	// ErrCUDA is wrapped by every error returned by the CUDA driver API.
	ErrCUDA = errors.New("gpu: CUDA driver error")
	// ErrNVRTC is wrapped by kernel compilation errors.
	ErrNVRTC = errors.New("gpu: NVRTC error")
	// ErrCUBLAS is wrapped by cuBLAS errors.
	ErrCUBLAS = errors.New("gpu: cuBLAS error")
	// ErrOptions is wrapped when Options are invalid.
	ErrOptions = errors.New("gpu: invalid options")
	// ErrDevice is wrapped by SelectBackend for an unknown device name.
	ErrDevice = errors.New("gpu: unknown device")
	// ErrBadInput is wrapped when an op receives invalid data (a label out
	// of range, a tensor of another backend, a double free).
	ErrBadInput = errors.New("gpu: bad input")
	// ErrClosed is returned by ops after Close.
	ErrClosed = errors.New("gpu: backend closed")
)

// Unavailable reports whether err says that this machine cannot give a
// backend the GPU it was asked for: no CUDA library, no device, or
// options the device refuses. A restart on the same machine meets the
// same error, so a supervisor should not restart for it.
func Unavailable(err error) bool {
	return errors.Is(err, ErrLibraryNotFound) || errors.Is(err, ErrNoDevice) || errors.Is(err, ErrOptions)
}

// cudaError is a failed driver call: its name, code and the driver's text.
type cudaError struct {
	call string
	code int32
	text string
}

func (e *cudaError) Error() string {
	return fmt.Sprintf("%s: %s failed with CUresult %d (%s)", ErrCUDA, e.call, e.code, e.text)
}

func (e *cudaError) Unwrap() error { return ErrCUDA }

// Code returns the CUresult of a CUDA driver error wrapped in err, or 0.
func Code(err error) int32 {
	var ce *cudaError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0
}

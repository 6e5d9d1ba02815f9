package gpu

import (
	"fmt"
	"sync"
	"unsafe"
)

// The copy stream on a CUDA device (streamAPI): a second stream, created
// on first use with CU_STREAM_NON_BLOCKING (so that the synchronous
// copies on the legacy default stream, cuMemcpyDtoH, neither wait for it
// nor make it wait), and events without timing. cuStreamWaitEvent is
// resolved on first use.

// cuStreamNonBlocking is CU_STREAM_NON_BLOCKING.
const cuStreamNonBlocking = 1

var _ streamAPI = (*cudaDevice)(nil)

// copyStream is a cudaDevice's copy stream and its events.
type copyStream struct {
	stream uintptr
	events []uintptr // by fence number
}

var (
	waitEventOnce sync.Once
	waitEventFn   func(s, ev uintptr, flags uint32) int32
	waitEventErr  error
)

// waitEventFunc resolves cuStreamWaitEvent (once per process).
func (d *cudaDevice) waitEventFunc() (func(s, ev uintptr, flags uint32) int32, error) {
	waitEventOnce.Do(func() {
		if err := d.drv.lib.symAny(&waitEventFn, "cuStreamWaitEvent"); err != nil {
			waitEventErr = fmt.Errorf("%w: CUDA driver without cuStreamWaitEvent: %w", ErrCUDA, err)
		}
	})
	return waitEventFn, waitEventErr
}

func (d *cudaDevice) streamWaitEvent(s, ev uintptr) error {
	f, err := d.waitEventFunc()
	if err != nil {
		return err
	}
	return d.drv.check("cuStreamWaitEvent", f(s, ev, 0))
}

// copies returns the copy stream, creating it on first use.
func (d *cudaDevice) copies() (uintptr, error) {
	if d.cs.stream != 0 {
		return d.cs.stream, nil
	}
	var s uintptr
	if err := d.drv.check("cuStreamCreate(copy)", d.drv.cuStreamCreate(&s, cuStreamNonBlocking)); err != nil {
		return 0, err
	}
	d.cs.stream = s
	return s, nil
}

func (d *cudaDevice) event(ev int) (uintptr, error) {
	if ev < 0 || ev >= len(d.cs.events) {
		return 0, fmt.Errorf("%w: fence %d unknown", ErrBadInput, ev)
	}
	return d.cs.events[ev], nil
}

// on returns the copy stream (onCopy) or the compute stream.
func (d *cudaDevice) on(onCopy bool) (uintptr, error) {
	if onCopy {
		return d.copies()
	}
	return d.stream, nil
}

func (d *cudaDevice) newEvent() (int, error) {
	// What the copy stream needs, checked before it is used.
	if _, err := d.copies(); err != nil {
		return -1, err
	}
	if _, err := d.waitEventFunc(); err != nil {
		return -1, err
	}
	var ev uintptr
	if err := d.drv.check("cuEventCreate", d.drv.cuEventCreate(&ev, cuEventDisableTiming)); err != nil {
		return -1, err
	}
	d.cs.events = append(d.cs.events, ev)
	return len(d.cs.events) - 1, nil
}

func (d *cudaDevice) recordEvent(ev int, onCopy bool) error {
	e, err := d.event(ev)
	if err != nil {
		return err
	}
	s, err := d.on(onCopy)
	if err != nil {
		return err
	}
	return d.drv.check("cuEventRecord", d.drv.cuEventRecord(e, s))
}

func (d *cudaDevice) waitEvent(ev int, onCopy bool) error {
	e, err := d.event(ev)
	if err != nil {
		return err
	}
	s, err := d.on(onCopy)
	if err != nil {
		return err
	}
	return d.streamWaitEvent(s, e)
}

func (d *cudaDevice) syncEvent(ev int) error {
	e, err := d.event(ev)
	if err != nil {
		return err
	}
	return d.drv.check("cuEventSynchronize", d.drv.cuEventSynchronize(e))
}

func (d *cudaDevice) uploadCopyStream(dst uint64, src unsafe.Pointer, bytes uint64) error {
	s, err := d.copies()
	if err != nil {
		return err
	}
	return d.drv.check("cuMemcpyHtoDAsync(copy)", d.drv.cuMemcpyHtoDAsync(dst, src, bytes, s))
}

func (d *cudaDevice) syncCopies() error {
	if d.cs.stream == 0 {
		return nil
	}
	return d.drv.check("cuStreamSynchronize(copy)", d.drv.cuStreamSynchronize(d.cs.stream))
}

// closeCopies destroys the copy stream and the events (close).
func (d *cudaDevice) closeCopies() error {
	var errs []error
	if d.cs.stream != 0 {
		errs = append(errs, d.syncCopies())
	}
	for _, ev := range d.cs.events {
		errs = append(errs, d.drv.check("cuEventDestroy", d.drv.cuEventDestroy(ev)))
	}
	d.cs.events = nil
	if d.cs.stream != 0 {
		errs = append(errs, d.drv.check("cuStreamDestroy(copy)", d.drv.cuStreamDestroy(d.cs.stream)))
		d.cs.stream = 0
	}
	return firstErr(errs...)
}

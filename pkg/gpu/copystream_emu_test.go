package gpu

import (
	"fmt"
	"unsafe"
)

// emuStreams is the kernel emulator's twin of the copy stream and its
// events (streamAPI). The emulator runs compute at once, when it is
// issued; the copy stream instead defers every copy until something waits
// for it: a compute-stream wait (waitEvent) or a host wait (syncEvent) of
// an event recorded after it, or the end (syncCopies). So a step that
// reads a buffer whose copy it did not wait for reads what was there
// before (the previous batch, or zeros), and a host buffer changed before
// its copy was waited for is copied with the change: both show up as
// different numbers, which is how the tests catch a missing wait. What it
// cannot show: a copy that overtakes compute it should have waited for
// (compute is never late here).
type emuStreams struct {
	pending  []emuCopy // deferred copies, in queue order
	queued   int       // copies queued so far (pending ones included)
	events   []int     // by event: copies queued before its last record on the copy stream (0: compute, done)
	ran      int       // copies run so far
	waits    int       // compute-stream waits for the copy stream
	copyWait int       // copy-stream waits for compute
	noStream bool      // newEvent fails (a driver that cannot make the copy stream)
}

type emuCopy struct {
	seq   int
	dst   uint64
	src   unsafe.Pointer // read when the copy runs
	bytes uint64
}

var _ streamAPI = (*emuDevice)(nil)

func (d *emuDevice) newEvent() (int, error) {
	if d.streams.noStream {
		return -1, fmt.Errorf("%w: emu: no copy stream", ErrCUDA)
	}
	d.streams.events = append(d.streams.events, 0)
	return len(d.streams.events) - 1, nil
}

func (d *emuDevice) emuEvent(ev int) error {
	if ev < 0 || ev >= len(d.streams.events) {
		return fmt.Errorf("%w: emu: event %d unknown", ErrCUDA, ev)
	}
	return nil
}

func (d *emuDevice) recordEvent(ev int, onCopy bool) error {
	if err := d.emuEvent(ev); err != nil {
		return err
	}
	if onCopy {
		d.streams.events[ev] = d.streams.queued
	} else {
		d.streams.events[ev] = 0 // compute is done when issued
	}
	return nil
}

// runCopies runs the deferred copies queued before the upTo'th.
func (d *emuDevice) runCopies(upTo int) {
	s := &d.streams
	k := 0
	for ; k < len(s.pending) && s.pending[k].seq < upTo; k++ {
		c := s.pending[k]
		copy(d.bytesAt(c.dst, c.bytes), unsafe.Slice((*byte)(c.src), c.bytes))
		s.ran++
	}
	s.pending = append(s.pending[:0], s.pending[k:]...)
}

func (d *emuDevice) waitEvent(ev int, onCopy bool) error {
	if err := d.emuEvent(ev); err != nil {
		return err
	}
	if onCopy {
		d.streams.copyWait++ // compute is already done
		return nil
	}
	d.streams.waits++
	d.runCopies(d.streams.events[ev])
	return nil
}

func (d *emuDevice) syncEvent(ev int) error {
	if err := d.emuEvent(ev); err != nil {
		return err
	}
	d.runCopies(d.streams.events[ev])
	return nil
}

func (d *emuDevice) uploadCopyStream(dst uint64, src unsafe.Pointer, n uint64) error {
	if n == 0 {
		return nil
	}
	d.bytesAt(dst, n) // a bad address fails now, as the driver would
	d.streams.pending = append(d.streams.pending, emuCopy{seq: d.streams.queued, dst: dst, src: src, bytes: n})
	d.streams.queued++
	return nil
}

func (d *emuDevice) syncCopies() error {
	d.runCopies(d.streams.queued)
	return nil
}

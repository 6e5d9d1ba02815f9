package gpu

import (
	"errors"
	"slices"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// nn.CopyStream on the emulator: a copy lands for the compute stream only
// after ComputeAfter of a fence recorded behind it, for the host after
// SyncFence; the source is read when the copy runs; a capture refuses the
// copy stream (not sticky); an unknown fence is a sticky error.
func TestCopyStreamOrdersByFences(t *testing.T) {
	b, d := emuGraphOrSkip(t)
	var cs nn.CopyStream = b
	x := b.New(4)
	src, err := b.PinnedHost(4)
	if err != nil {
		t.Fatal(err)
	}
	copy(src, []float32{1, 2, 3, 4})
	ready, err := cs.NewFence()
	if err != nil {
		t.Fatal(err)
	}
	free, err := cs.NewFence()
	if err != nil {
		t.Fatal(err)
	}
	cs.RecordCompute(free)
	cs.CopyAfter(free)
	cs.CopyPinned(x, src)
	cs.RecordCopies(ready)
	if h := host(t, b, x); !slices.Equal(h, []float32{0, 0, 0, 0}) {
		t.Fatalf("before any wait the compute stream sees %v, want the old zeros (the emulator defers copies)", h)
	}
	cs.ComputeAfter(ready)
	if h := host(t, b, x); !slices.Equal(h, []float32{1, 2, 3, 4}) {
		t.Fatalf("after ComputeAfter: %v", h)
	}
	cs.CopyPinned(x, src)
	cs.RecordCopies(ready)
	copy(src, []float32{5, 6, 7, 8}) // before the copy ran: it copies this
	if err := cs.SyncFence(ready); err != nil {
		t.Fatal(err)
	}
	if h := host(t, b, x); !slices.Equal(h, []float32{5, 6, 7, 8}) {
		t.Fatalf("after SyncFence: %v", h)
	}
	if d.streams.ran != 2 || d.streams.waits != 1 || d.streams.copyWait != 1 {
		t.Fatalf("copy stream twin: %d copies run, %d compute waits, %d copy waits; want 2, 1, 1", d.streams.ran, d.streams.waits, d.streams.copyWait)
	}

	if err := b.BeginCapture(); err != nil {
		t.Fatal(err)
	}
	cs.CopyPinned(x, src)
	if g, err := b.EndCapture(); !errors.Is(err, ErrCapture) || g != nil {
		t.Fatalf("a copy-stream op inside a capture: %v, %v; want ErrCapture", g, err)
	}
	if b.Err() != nil || len(d.streams.pending) != 0 {
		t.Fatalf("the failed capture left error %v and %d queued copies", b.Err(), len(d.streams.pending))
	}

	cs.ComputeAfter(nn.Fence(99))
	if err := cs.SyncFence(ready); err == nil || b.Err() == nil {
		t.Fatalf("an unknown fence: SyncFence %v, sticky %v; want an error", err, b.Err())
	}
}

// A device with one stream (the recording fake) still serves
// nn.CopyStream: copies go on its stream, fences order nothing.
func TestCopyStreamFallsBackToOneStream(t *testing.T) {
	f := newFakeDevice(t)
	b := newBackend(Options{Precision: PrecisionFP32}, f, 4)
	defer b.Close()
	x := b.New(4)
	fe, err := b.NewFence()
	if err != nil {
		t.Fatal(err)
	}
	b.CopyAfter(fe)
	b.CopyPinned(x, []float32{1, 2, 3, 4})
	b.RecordCopies(fe)
	b.ComputeAfter(fe)
	if err := b.SyncFence(fe); err != nil {
		t.Fatal(err)
	}
	b.CopyPinned(x, []float32{1, 2, 3}) // wrong length
	if !errors.Is(b.Err(), nn.ErrShape) || len(f.errs) != 0 {
		t.Fatalf("sticky %v, device errors %v; want ErrShape and none", b.Err(), f.errs)
	}
}

package gpu

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

func emuGraphOrSkip(t *testing.T) (*Backend, *emuGraphDevice) {
	t.Helper()
	b, err := openEmuGraph(PrecisionFP32)
	if errors.Is(err, errNoCompiler) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, b.dev.(*emuGraphDevice)
}

func host(t *testing.T, b *Backend, x *nn.Tensor) []float32 {
	t.Helper()
	h := make([]float32, x.Numel())
	b.ToHost(h, x)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	return h
}

// The captured ops run at each launch, not during the capture, with the
// addresses and arguments of the capture; a block freed inside the
// captured region is not handed out again while the graph lives.
func TestGraphReplaysCapturedOps(t *testing.T) {
	b, d := emuGraphOrSkip(t)
	x, y := b.New(5), b.New(5)
	b.FromHost(x, []float32{1, 2, 3, 4, 5})
	tmp := b.New(5) // freed inside the capture
	if err := b.BeginCapture(); err != nil {
		t.Fatal(err)
	}
	b.Copy(tmp, x)
	b.Axpy(y, 2, tmp) // y += 2x
	b.Free(tmp)
	g, err := b.EndCapture()
	if err != nil {
		t.Fatal(err)
	}
	if h := host(t, b, y); h[4] != 0 {
		t.Fatalf("the capture ran the ops: y = %v", h)
	}
	again := b.New(5) // the same size class as tmp: must not be tmp's block
	if again.Ptr == tmp.Ptr && tmp.Ptr != 0 {
		t.Fatal("a block freed inside the captured region was handed out while the graph lives")
	}
	b.Free(again)
	// That allocation made the graph stale (addresses may have moved).
	if err := g.Launch(); !errors.Is(err, nn.ErrGraphStale) {
		t.Fatalf("launch after pool traffic: %v, want ErrGraphStale", err)
	}
	g.Close()

	tmp = b.New(5)
	if err := b.BeginCapture(); err != nil {
		t.Fatal(err)
	}
	b.Copy(tmp, x)
	b.Axpy(y, 2, tmp)
	g, err = b.EndCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i := 0; i < 3; i++ {
		if err := g.Launch(); err != nil {
			t.Fatal(err)
		}
	}
	b.FromHost(x, []float32{10, 10, 10, 10, 10}) // inputs change between launches
	if err := g.Launch(); err != nil {
		t.Fatal(err)
	}
	want := []float32{2*3*1 + 20, 2*3*2 + 20, 2*3*3 + 20, 2*3*4 + 20, 2*3*5 + 20}
	if h := host(t, b, y); h[0] != want[0] || h[4] != want[4] {
		t.Fatalf("after 4 launches y = %v, want %v", h, want)
	}
	if d.launched != 4 {
		t.Fatalf("%d graph launches reached the device, want 4", d.launched)
	}
}

// A capture fails, and leaves the backend usable with nothing of the
// captured ops run, when an op needs the host or the pool has to
// allocate from the driver.
func TestGraphCaptureFailsCleanly(t *testing.T) {
	b, _ := emuGraphOrSkip(t)
	x := b.New(4)
	b.Fill(x, 1)
	for name, body := range map[string]func(){
		"host read":  func() { b.Scale(x, 3); b.ToHost(make([]float32, 4), x) },
		"count":      func() { b.Scale(x, 3); _ = b.CountNonFinite(x) },
		"upload":     func() { b.Scale(x, 3); b.FromHost(x, []float32{9, 9, 9, 9}) },
		"new tensor": func() { b.Scale(x, 3); _ = b.New(1 << 20) },
		"scratch":    func() { b.Scale(x, 3); _ = b.getScratch("test-growth", 1<<22) },
		"sync":       func() { b.Scale(x, 3); _ = b.Sync() },
	} {
		if err := b.BeginCapture(); err != nil {
			t.Fatal(err)
		}
		body()
		g, err := b.EndCapture()
		if !errors.Is(err, ErrCapture) || g != nil {
			t.Fatalf("%s: EndCapture gave %v, %v; want ErrCapture", name, g, err)
		}
		t.Logf("%s: %v", name, err)
		if b.Err() != nil {
			t.Fatalf("%s: the failed capture left a sticky error: %v", name, b.Err())
		}
		if h := host(t, b, x); h[0] != 1 {
			t.Fatalf("%s: captured ops ran: x = %v", name, h)
		}
	}
	if _, err := b.EndCapture(); !errors.Is(err, ErrCapture) {
		t.Fatalf("EndCapture without a capture: %v", err)
	}
	eager, _ := openEmu(PrecisionFP32)
	defer eager.Close()
	if err := eager.BeginCapture(); !errors.Is(err, ErrCapture) {
		t.Fatalf("BeginCapture with graphs off: %v, want ErrCapture", err)
	}
}

// Graphs that cannot be set up at Open (an old cuBLAS) leave the backend
// working, eagerly: Open logs why, BeginCapture fails saying why, and no
// workspace block is kept.
func TestGraphsUnavailableAtOpen(t *testing.T) {
	d, err := newEmuDevice()
	if errors.Is(err, errNoCompiler) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	o := Options{Precision: PrecisionFP32, Graphs: true, Log: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	b := newBackend(o, &emuGraphDevice{emuDevice: d, graphs: map[uintptr][]func() error{}, noWorkspace: true}, 4)
	defer b.Close()
	b.setupGraphs()
	if len(logs) != 1 || !strings.Contains(logs[0], "cublasSetWorkspace") {
		t.Fatalf("logs %q, want one line naming cublasSetWorkspace", logs)
	}
	if err := b.BeginCapture(); !errors.Is(err, ErrCapture) || !strings.Contains(err.Error(), "cublasSetWorkspace") {
		t.Fatalf("BeginCapture: %v", err)
	}
	if st := b.PoolStats(); st.LiveBytes != 0 || b.Err() != nil {
		t.Fatalf("after the failed setup: %d live bytes, err %v", st.LiveBytes, b.Err())
	}
	x := b.New(3)
	b.Fill(x, 2)
	if h := host(t, b, x); h[2] != 2 {
		t.Fatalf("eager op after the failed setup: %v", h)
	}
}

package gpu

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// CUDA graphs (nn.GraphCapturer): the ops issued between BeginCapture and
// EndCapture are recorded on the stream (cuStreamBeginCapture), not run;
// the instantiated graph runs them again, with the same arguments and
// device addresses, at each Launch: one driver call instead of one per
// kernel, GEMM and copy.
//
// What makes a replay correct:
//   - No op in the captured region needs the host: uploads, downloads,
//     counts read back and syncs fail the capture (ErrCapture), so do New
//     and driver allocations for scratch (the pool's counter is compared;
//     the memory pool guarantees none in a steady-state step, so capture
//     after one eager step of the same shapes).
//   - Blocks freed during capture may be used by the graph after it: the
//     pool holds them (not handed out again) until the graph is closed.
//   - Blocks live at capture are used by every replay: any pool traffic
//     after the capture (an allocation or a free anywhere) makes Launch
//     fail with nn.ErrGraphStale, and the caller captures again.
//   - Kernel arguments are fixed at capture: a caller keeps everything
//     that changes from step to step (learning rate, dropout step) out of
//     the graph, and uploads inputs into the captured buffers before each
//     Launch.
//   - cuBLAS gets a workspace of its own (cublasSetWorkspace, set at Open
//     when Options.Graphs is on, so eager and captured GEMMs choose their
//     algorithms with the same workspace; set after cublasSetStream,
//     which resets it, and nothing calls that again); cuDNN's workspace
//     is already ours (scratch). Neither was verified under capture on a
//     GPU yet.
//
// A failed capture leaves the backend usable (its error is returned, not
// made sticky): nothing of the captured ops ran, so the caller runs them
// eagerly.

// ErrCapture is wrapped when a graph capture fails.
var ErrCapture = errors.New("gpu: graph capture failed")

// graphAPI is what a deviceAPI offers for graphs: cudaDevice with the
// driver's stream capture, the kernel emulator with a recording twin.
type graphAPI interface {
	// beginCapture starts recording the stream's work.
	beginCapture() error
	// endCapture stops recording and instantiates the graph (0 and an
	// error when the capture failed; the stream is out of capture mode
	// either way).
	endCapture() (uintptr, error)
	// launchGraph queues the graph on the stream.
	launchGraph(exec uintptr) error
	// destroyGraph releases it.
	destroyGraph(exec uintptr) error
	// setBlasWorkspace gives cuBLAS a workspace of bytes at ptr.
	setBlasWorkspace(ptr, bytes uint64) error
}

// blasWorkspaceBytes is cuBLAS's workspace with graphs on: 32 MiB, its
// own default on Hopper (CUBLAS_WORKSPACE_CONFIG's largest default).
const blasWorkspaceBytes = 32 << 20

// captureState is the Backend's capture in progress.
type captureState struct {
	on     bool
	err    error // the first failure while capturing (not sticky)
	allocs int   // the pool's driver allocations when the capture began
}

var _ nn.GraphCapturer = (*Backend)(nil)

// setupGraphs prepares graphs when Options.Graphs is on (Open). Failing
// is not fatal: graphs stay off, logged, and BeginCapture says why, so
// every step runs eagerly.
func (b *Backend) setupGraphs() {
	if !b.opts.Graphs {
		return
	}
	if err := b.enableGraphs(); err != nil {
		b.opts.Graphs = false
		b.graphsOff = err
		if b.opts.Log != nil {
			b.opts.Log("gpu: CUDA graphs unavailable: %v", err)
		}
	}
}

// enableGraphs sets cuBLAS's workspace (Open, with Options.Graphs).
func (b *Backend) enableGraphs() error {
	ga, ok := b.dev.(graphAPI)
	if !ok {
		return nil // BeginCapture will say so
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.dev.enter(); err != nil {
		return err
	}
	p, err := b.pool.get(blasWorkspaceBytes)
	if err != nil {
		return err
	}
	if err := ga.setBlasWorkspace(p, blasWorkspaceBytes); err != nil {
		return errors.Join(err, b.pool.put(p))
	}
	b.blasWS = p
	return nil
}

// hostDuringCapture fails the capture in progress, if any, for an op
// that needs the host (a copy to or from host memory, a wait), and
// reports whether one is in progress.
func (b *Backend) hostDuringCapture(op string) bool {
	if !b.cap.on {
		return false
	}
	if b.cap.err == nil {
		b.cap.err = fmt.Errorf("%s needs the host inside a captured region", op)
	}
	return true
}

// BeginCapture implements nn.GraphCapturer. It needs Options.Graphs and
// a device with graphs; it fails (without a sticky error) otherwise.
func (b *Backend) BeginCapture() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	switch {
	case b.closed:
		return ErrClosed
	case b.err != nil:
		return b.err
	case b.graphsOff != nil:
		return fmt.Errorf("%w: graphs unavailable: %w", ErrCapture, b.graphsOff)
	case !b.opts.Graphs:
		return fmt.Errorf("%w: graphs are off (Options.Graphs)", ErrCapture)
	case b.opts.SyncEveryOp:
		return fmt.Errorf("%w: SyncEveryOp synchronises inside the captured region", ErrCapture)
	case b.cap.on:
		return fmt.Errorf("%w: a capture is already in progress", ErrCapture)
	}
	ga, ok := b.dev.(graphAPI)
	if !ok {
		return fmt.Errorf("%w: the device has no graphs", ErrCapture)
	}
	if err := b.dev.enter(); err != nil {
		return err
	}
	if err := ga.beginCapture(); err != nil {
		return fmt.Errorf("%w: %w", ErrCapture, err)
	}
	b.cap = captureState{on: true, allocs: b.pool.stats.DriverAllocs}
	b.pool.capturing = true
	return nil
}

// EndCapture implements nn.GraphCapturer.
func (b *Backend) EndCapture() (nn.Graph, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if !b.cap.on {
		return nil, fmt.Errorf("%w: no capture in progress", ErrCapture)
	}
	ga := b.dev.(graphAPI) // BeginCapture checked
	eerr := b.dev.enter()
	exec, err := ga.endCapture()
	cerr := b.cap.err
	if cerr == nil && b.pool.stats.DriverAllocs != b.cap.allocs {
		cerr = fmt.Errorf("%d driver allocations inside the captured region (capture after a step of the same shapes)",
			b.pool.stats.DriverAllocs-b.cap.allocs)
	}
	b.cap = captureState{}
	b.pool.capturing = false
	held := b.pool.held
	b.pool.held = nil
	if e := firstErr(eerr, cerr, err); e != nil {
		if exec != 0 {
			_ = ga.destroyGraph(exec)
		}
		b.pool.unhold(held)
		return nil, fmt.Errorf("%w: %w", ErrCapture, e)
	}
	return &Graph{b: b, exec: exec, held: held, epoch: b.pool.epoch}, nil
}

// Graph is a captured, instantiated sequence of ops (nn.Graph).
type Graph struct {
	mu    sync.Mutex // guards exec and held
	b     *Backend
	exec  uintptr
	held  []uint64 // pool blocks freed during the capture, kept until Close
	epoch uint64   // the pool's epoch after the capture
}

// Launch implements nn.Graph.
func (g *Graph) Launch() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.b
	defer b.end()
	if !b.begin() {
		return b.err
	}
	if g.exec == 0 {
		return fmt.Errorf("%w: graph closed", ErrBadInput)
	}
	if b.cap.on {
		return fmt.Errorf("%w: launching a graph inside a capture", ErrCapture)
	}
	if b.pool.epoch != g.epoch {
		return nn.ErrGraphStale
	}
	b.ok(b.dev.(graphAPI).launchGraph(g.exec))
	return b.err
}

// Close implements nn.Graph: it waits for queued work, releases the
// graph and returns the blocks it held to the pool.
func (g *Graph) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.b
	if g.exec == 0 || b.closed {
		g.exec, g.held = 0, nil
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err := b.dev.enter()
	if err == nil {
		err = b.dev.sync() // a queued launch may still use the held blocks
	}
	err = firstErr(err, b.dev.(graphAPI).destroyGraph(g.exec))
	g.exec = 0
	b.pool.unhold(g.held)
	g.held = nil
	return err
}

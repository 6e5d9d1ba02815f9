package gpu

import (
	"fmt"
	"sync"
)

// The driver's stream capture and graph entry points, and cuBLAS's
// workspace setter, resolved on first use so that libraries without them
// still run everything else (BeginCapture then fails).

// cuStreamCaptureModeRelaxed: the capture does not forbid the "unsafe"
// driver calls (allocations, synchronous copies) on other streams or
// threads; the Backend itself fails a capture that needs the host or
// allocates (graph.go).
const cuStreamCaptureModeRelaxed = 2

var _ graphAPI = (*cudaDevice)(nil)

type graphDriver struct {
	cuStreamBeginCapture        func(s uintptr, mode int32) int32
	cuStreamEndCapture          func(s uintptr, graph *uintptr) int32
	cuGraphInstantiateWithFlags func(exec *uintptr, graph uintptr, flags uint64) int32
	cuGraphLaunch               func(exec uintptr, s uintptr) int32
	cuGraphExecDestroy          func(exec uintptr) int32
	cuGraphDestroy              func(graph uintptr) int32
	cublasSetWorkspace          func(h uintptr, ws uint64, bytes uint64) int32
}

var (
	graphOnce sync.Once
	graphSyms *graphDriver
	graphErr  error
)

func (d *cudaDevice) graphDrv() (*graphDriver, error) {
	graphOnce.Do(func() {
		s := &graphDriver{}
		for _, sym := range []struct {
			f     any
			names []string
		}{
			{&s.cuStreamBeginCapture, []string{"cuStreamBeginCapture_v2", "cuStreamBeginCapture"}},
			{&s.cuStreamEndCapture, []string{"cuStreamEndCapture"}},
			{&s.cuGraphInstantiateWithFlags, []string{"cuGraphInstantiateWithFlags"}},
			{&s.cuGraphLaunch, []string{"cuGraphLaunch"}},
			{&s.cuGraphExecDestroy, []string{"cuGraphExecDestroy"}},
			{&s.cuGraphDestroy, []string{"cuGraphDestroy"}},
		} {
			if err := d.drv.lib.symAny(sym.f, sym.names...); err != nil {
				graphErr = fmt.Errorf("%w: CUDA driver without graphs: %w", ErrCapture, err)
				return
			}
		}
		if err := d.blas.lib.symAny(&s.cublasSetWorkspace, "cublasSetWorkspace_v2"); err != nil {
			graphErr = fmt.Errorf("%w: cuBLAS without cublasSetWorkspace: %w", ErrCapture, err)
			return
		}
		graphSyms = s
	})
	return graphSyms, graphErr
}

func (d *cudaDevice) beginCapture() error {
	g, err := d.graphDrv()
	if err != nil {
		return err
	}
	return d.drv.check("cuStreamBeginCapture", g.cuStreamBeginCapture(d.stream, cuStreamCaptureModeRelaxed))
}

func (d *cudaDevice) endCapture() (uintptr, error) {
	g, err := d.graphDrv()
	if err != nil {
		return 0, err
	}
	var graph, exec uintptr
	if err := d.drv.check("cuStreamEndCapture", g.cuStreamEndCapture(d.stream, &graph)); err != nil {
		if graph != 0 {
			_ = g.cuGraphDestroy(graph)
		}
		return 0, err
	}
	err = d.drv.check("cuGraphInstantiateWithFlags", g.cuGraphInstantiateWithFlags(&exec, graph, 0))
	// The executable graph is independent of the graph it came from.
	derr := d.drv.check("cuGraphDestroy", g.cuGraphDestroy(graph))
	if err != nil {
		return 0, err
	}
	if derr != nil {
		_ = g.cuGraphExecDestroy(exec)
		return 0, derr
	}
	return exec, nil
}

func (d *cudaDevice) launchGraph(exec uintptr) error {
	g, err := d.graphDrv()
	if err != nil {
		return err
	}
	return d.drv.check("cuGraphLaunch", g.cuGraphLaunch(exec, d.stream))
}

func (d *cudaDevice) destroyGraph(exec uintptr) error {
	g, err := d.graphDrv()
	if err != nil {
		return err
	}
	return d.drv.check("cuGraphExecDestroy", g.cuGraphExecDestroy(exec))
}

func (d *cudaDevice) setBlasWorkspace(ptr, bytes uint64) error {
	g, err := d.graphDrv()
	if err != nil {
		return err
	}
	return d.blas.check("cublasSetWorkspace", g.cublasSetWorkspace(d.handle, ptr, bytes))
}

package gpu

import (
	"fmt"
	"unsafe"
)

// emuGraphDevice is the kernel emulator with the twin of CUDA graphs:
// while capturing, launches, GEMMs, memsets and device copies are
// recorded (with copies of their arguments), not run; a launch of the
// graph runs the records in order. Host copies and waits during capture
// are errors, as the driver makes them (the Backend refuses them before
// they get here).
type emuGraphDevice struct {
	*emuDevice
	capturing bool
	rec       []func() error
	graphs    map[uintptr][]func() error
	next      uintptr
	launched  int    // graph launches
	workspace uint64 // setBlasWorkspace's block

	pinnedUploads int
	noWorkspace   bool // setBlasWorkspace fails (an old cuBLAS)
}

var _ graphAPI = (*emuGraphDevice)(nil)

// openEmuGraph is openEmu with the graph twin and Options.Graphs on.
func openEmuGraph(prec string) (*Backend, error) {
	d, err := newEmuDevice()
	if err != nil {
		return nil, err
	}
	g := &emuGraphDevice{emuDevice: d, graphs: map[uintptr][]func() error{}}
	o := Options{Precision: prec, Graphs: true}
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := newBackend(o, g, 4)
	b.info = DeviceInfo{Name: "emulator with graphs (host C++ build of the kernels)", Arch: "host", SMs: 4, KernelImage: "host"}
	b.setupGraphs()
	return b, nil
}

func (d *emuGraphDevice) record(f func() error) error {
	d.rec = append(d.rec, f)
	return nil
}

func (d *emuGraphDevice) launch(name string, grid, block dim3, args []karg) error {
	if !d.capturing {
		return d.emuDevice.launch(name, grid, block, args)
	}
	if _, ok := d.lib.fns[name]; !ok {
		return fmt.Errorf("%w: emu: kernel %s unknown", ErrCUDA, name)
	}
	cp := append([]karg(nil), args...)
	return d.record(func() error { return d.emuDevice.launch(name, grid, block, cp) })
}

func (d *emuGraphDevice) gemm(g gemmCall) error {
	if !d.capturing {
		return d.emuDevice.gemm(g)
	}
	return d.record(func() error { return d.emuDevice.gemm(g) })
}

func (d *emuGraphDevice) memsetD32(p uint64, v uint32, n uint64) error {
	if !d.capturing {
		return d.emuDevice.memsetD32(p, v, n)
	}
	return d.record(func() error { return d.emuDevice.memsetD32(p, v, n) })
}

func (d *emuGraphDevice) copyDtoD(dst, src, n uint64) error {
	if !d.capturing {
		return d.emuDevice.copyDtoD(dst, src, n)
	}
	return d.record(func() error { return d.emuDevice.copyDtoD(dst, src, n) })
}

var errEmuCaptureHost = fmt.Errorf("%w: emu: host copy or wait on a capturing stream", ErrCUDA)

func (d *emuGraphDevice) upload(dst uint64, src unsafe.Pointer, n uint64) error {
	if d.capturing {
		return errEmuCaptureHost
	}
	return d.emuDevice.upload(dst, src, n)
}

func (d *emuGraphDevice) download(dst unsafe.Pointer, src uint64, n uint64) error {
	if d.capturing {
		return errEmuCaptureHost
	}
	return d.emuDevice.download(dst, src, n)
}

func (d *emuGraphDevice) downloadAsync(dst unsafe.Pointer, src uint64, n uint64) (int, error) {
	if d.capturing {
		return -1, errEmuCaptureHost
	}
	return d.emuDevice.downloadAsync(dst, src, n)
}

func (d *emuGraphDevice) sync() error {
	if d.capturing {
		return errEmuCaptureHost
	}
	return nil
}

func (d *emuGraphDevice) beginCapture() error {
	if d.capturing {
		return fmt.Errorf("%w: emu: already capturing", ErrCUDA)
	}
	d.capturing, d.rec = true, nil
	return nil
}

func (d *emuGraphDevice) endCapture() (uintptr, error) {
	if !d.capturing {
		return 0, fmt.Errorf("%w: emu: not capturing", ErrCUDA)
	}
	d.capturing = false
	d.next++
	d.graphs[d.next], d.rec = d.rec, nil
	return d.next, nil
}

func (d *emuGraphDevice) launchGraph(exec uintptr) error {
	g, ok := d.graphs[exec]
	if !ok {
		return fmt.Errorf("%w: emu: graph %d unknown", ErrCUDA, exec)
	}
	d.launched++
	for _, f := range g {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func (d *emuGraphDevice) destroyGraph(exec uintptr) error {
	if _, ok := d.graphs[exec]; !ok {
		return fmt.Errorf("%w: emu: graph %d unknown", ErrCUDA, exec)
	}
	delete(d.graphs, exec)
	return nil
}

func (d *emuGraphDevice) setBlasWorkspace(p, bytes uint64) error {
	if d.noWorkspace {
		return fmt.Errorf("%w: emu: cuBLAS without cublasSetWorkspace", ErrCapture)
	}
	d.workspace = p
	return nil
}

// uploadPinned is the emulator's pinnedUploader (the copy is done at
// once); pinnedUploads counts them for tests.
func (d *emuGraphDevice) uploadPinned(dst uint64, src unsafe.Pointer, n uint64) error {
	if d.capturing {
		return errEmuCaptureHost
	}
	d.pinnedUploads++
	return d.emuDevice.upload(dst, src, n)
}

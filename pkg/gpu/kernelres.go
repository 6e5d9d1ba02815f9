package gpu

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
)

// KernelResources is what the compiler gave one kernel of the loaded
// module (the driver's function attributes) and how many blocks of
// Block threads a multiprocessor holds at once (the driver's occupancy
// calculator, without dynamic shared memory): the resource report that
// says, without timing anything, whether a kernel spills registers to
// local memory or is held to few threads per multiprocessor.
type KernelResources struct {
	Name        string
	Registers   int // per thread
	LocalBytes  int // per thread: spills and indexed arrays; 0 is the aim
	SharedBytes int // static shared memory per block
	MaxThreads  int // the most threads a block of it may have
	Block       int // the block size BlocksPerSM is for
	BlocksPerSM int
}

// String is one aligned report line.
func (k KernelResources) String() string {
	return fmt.Sprintf("%-28s %4d regs %6d B local %6d B shared %5d max threads %3d blocks/SM of %d",
		k.Name, k.Registers, k.LocalBytes, k.SharedBytes, k.MaxThreads, k.BlocksPerSM, k.Block)
}

// kernelReporter is a device that can report its kernels' resources.
type kernelReporter interface {
	kernelResources(block int) ([]KernelResources, error)
}

// KernelResources reports every kernel of the module, by name, with the
// occupancy of blocks of block threads (the backend's usual 256 when
// block is 0). Only a CUDA device has the report (elsewhere
// errors.ErrUnsupported).
func (b *Backend) KernelResources(block int) ([]KernelResources, error) {
	if block <= 0 {
		block = blockSize
	}
	r, ok := b.dev.(kernelReporter)
	if !ok {
		return nil, fmt.Errorf("gpu: this device has no kernel resource report: %w", errors.ErrUnsupported)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.dev.enter(); err != nil {
		return nil, err
	}
	ks, err := r.kernelResources(block)
	sort.Slice(ks, func(i, j int) bool { return ks[i].Name < ks[j].Name })
	return ks, err
}

// CUfunction_attribute values (cuda.h).
const (
	cuFuncAttrMaxThreadsPerBlock = 0
	cuFuncAttrSharedSizeBytes    = 1
	cuFuncAttrLocalSizeBytes     = 3
	cuFuncAttrNumRegs            = 4
)

var (
	resOnce sync.Once
	resSyms struct {
		cuFuncGetAttribute func(v *int32, attr int32, f uintptr) int32
		cuOccupancy        func(blocks *int32, f uintptr, block int32, dynSmem uint64) int32
	}
	resErr error
)

var _ kernelReporter = (*cudaDevice)(nil)

func (d *cudaDevice) kernelResources(block int) ([]KernelResources, error) {
	resOnce.Do(func() {
		if err := d.drv.lib.symAny(&resSyms.cuFuncGetAttribute, "cuFuncGetAttribute"); err != nil {
			resErr = fmt.Errorf("%w: %w", ErrCUDA, err)
			return
		}
		resErr = d.drv.lib.symAny(&resSyms.cuOccupancy, "cuOccupancyMaxActiveBlocksPerMultiprocessor")
		if resErr != nil {
			resErr = fmt.Errorf("%w: %w", ErrCUDA, resErr)
		}
	})
	if resErr != nil {
		return nil, resErr
	}
	var out []KernelResources
	for name, f := range d.funcs {
		k := KernelResources{Name: name, Block: block}
		for _, a := range []struct {
			v    *int
			attr int32
		}{{&k.Registers, cuFuncAttrNumRegs}, {&k.LocalBytes, cuFuncAttrLocalSizeBytes},
			{&k.SharedBytes, cuFuncAttrSharedSizeBytes}, {&k.MaxThreads, cuFuncAttrMaxThreadsPerBlock}} {
			var v int32
			if err := d.drv.check("cuFuncGetAttribute("+name+")", resSyms.cuFuncGetAttribute(&v, a.attr, f)); err != nil {
				return nil, err
			}
			*a.v = int(v)
		}
		if block <= k.MaxThreads {
			var n int32
			if err := d.drv.check("cuOccupancyMaxActiveBlocksPerMultiprocessor("+name+")",
				resSyms.cuOccupancy(&n, f, int32(block), 0)); err != nil {
				return nil, err
			}
			k.BlocksPerSM = int(n)
		}
		out = append(out, k)
	}
	return out, nil
}

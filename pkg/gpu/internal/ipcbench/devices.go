package main

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

func openDevice() (benchDev, error) {
	switch *device {
	case "cuda":
		ord := (*gpuOrd + *rank) % max(*gpus, 1)
		b, err := gpu.Open(gpu.Options{Device: ord, LibDir: *libDir, Precision: gpu.PrecisionFP32})
		if err != nil {
			return nil, err
		}
		return &cudaDev{Backend: b, ts: map[uint64]*nn.Tensor{}}, nil
	case "file":
		dir, err := os.MkdirTemp(shmDir(), "ipcbench-")
		if err != nil {
			return nil, err
		}
		return &fileDev{dir: dir, maps: map[uint64][]byte{}, own: map[uint64]string{}, noPeer: *noPeer}, nil
	}
	return nil, fmt.Errorf("-device %q: want cuda or file", *device)
}

// cudaDev is the GPU backend with the bench's vectors.
type cudaDev struct {
	*gpu.Backend
	ts map[uint64]*nn.Tensor
}

var _ allreduce.Device = (*gpu.Backend)(nil)

func (d *cudaDev) newVec(n int) (uint64, error) {
	t := d.New(n)
	if err := d.Sync(); err != nil {
		return 0, err
	}
	d.ts[uint64(t.Ptr)] = t
	return uint64(t.Ptr), nil
}

func (d *cudaDev) freeVec(p uint64) error {
	d.Free(d.ts[p])
	delete(d.ts, p)
	return d.Sync()
}

func (d *cudaDev) toHost(dst []float32, p uint64)   { d.ToHost(dst, d.ts[p]) }
func (d *cudaDev) fromHost(p uint64, src []float32) { d.FromHost(d.ts[p], src) }
func (d *cudaDev) sync() error                      { return d.Sync() }
func (d *cudaDev) close()                           { _ = d.Close() }

func (d *cudaDev) hostBuf(n int) []float32 {
	if h, err := d.PinnedHost(n); err == nil {
		return h
	}
	return make([]float32, n)
}

func (d *cudaDev) describe() string {
	i := d.Info()
	return fmt.Sprintf("%s (%s), driver %d", i.Name, d.IPCIdentity(), i.DriverVersion)
}

// fileDev is a Device whose memory is files under /dev/shm mapped by every
// process that opens them: the CPU twin of CUDA IPC for a dry run of the
// two-process device ring (its "kernels" are Go loops). With noPeer it
// stands for GPUs without peer access: a neighbour's memory is opened
// copy-only, at an address (fileCopyOnly set) that its kernels refuse
// (the first such use is the error RingSync returns) and only RingPull
// reads.
type fileDev struct {
	dir    string
	noPeer bool
	mu     sync.Mutex        // guards maps, own and err
	maps   map[uint64][]byte // base -> mapping (own and opened)
	own    map[uint64]string // base -> file (own allocations)
	err    error             // the first error of a Ring* method
}

// fileCopyOnly marks the addresses of copy-only mappings (no host address
// has it).
const fileCopyOnly = 1 << 62

func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

func (d *fileDev) IPCKind() string { return "file" }

func (d *fileDev) IPCIdentity() string {
	if d.noPeer { // each rank its own "GPU"
		return fmt.Sprintf("shared files of rank %d (CPU dry run)", *rank)
	}
	return "shared files (CPU dry run)"
}

func (d *fileDev) mmap(path string, size int) (uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	base := uint64(uintptr(unsafe.Pointer(&m[0])))
	d.mu.Lock()
	d.maps[base] = m
	d.mu.Unlock()
	return base, nil
}

func (d *fileDev) AllocShared(bytes int) (uint64, error) {
	f, err := os.CreateTemp(d.dir, "mem-")
	if err != nil {
		return 0, err
	}
	path := f.Name()
	err = f.Truncate(int64(bytes))
	f.Close()
	if err != nil {
		return 0, err
	}
	base, err := d.mmap(path, bytes)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.own[base] = path
	d.mu.Unlock()
	return base, nil
}

func (d *fileDev) FreeShared(p uint64) error {
	d.mu.Lock()
	path, m := d.own[p], d.maps[p]
	delete(d.own, p)
	delete(d.maps, p)
	d.mu.Unlock()
	if m == nil {
		return fmt.Errorf("free of %#x: not an allocation", p)
	}
	return errorsJoin(syscall.Munmap(m), os.Remove(path))
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (d *fileDev) IPCExport(ptr uint64) ([]byte, uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for base, path := range d.own {
		if ptr >= base && ptr < base+uint64(len(d.maps[base])) {
			return []byte(path), ptr - base, nil
		}
	}
	return nil, 0, fmt.Errorf("export of %#x: not an allocation", ptr)
}

func (d *fileDev) IPCOpen(h []byte, owner string) (uint64, bool, error) {
	st, err := os.Stat(string(h))
	if err != nil {
		return 0, false, err
	}
	base, err := d.mmap(string(h), int(st.Size()))
	if err != nil || !d.noPeer || owner == d.IPCIdentity() {
		return base, false, err
	}
	return base | fileCopyOnly, true, nil
}

func (d *fileDev) IPCClose(base uint64) error {
	base &^= fileCopyOnly
	d.mu.Lock()
	m := d.maps[base]
	delete(d.maps, base)
	d.mu.Unlock()
	if m == nil {
		return fmt.Errorf("close of %#x: not open", base)
	}
	return syscall.Munmap(m)
}

// kernelAt is at for a kernel's operand: nil, with the first error
// recorded, for copy-only memory.
func (d *fileDev) kernelAt(p uint64, n int) []float32 {
	if p&fileCopyOnly != 0 {
		d.mu.Lock()
		if d.err == nil {
			d.err = fmt.Errorf("a kernel read copy-only memory %#x (no peer access)", p&^fileCopyOnly)
		}
		d.mu.Unlock()
		return nil
	}
	return d.at(p, n)
}

// at returns the n float32s at p.
func (d *fileDev) at(p uint64, n int) []float32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for base, m := range d.maps {
		if p >= base && p+4*uint64(n) <= base+uint64(len(m)) {
			return unsafe.Slice((*float32)(unsafe.Pointer(&m[p-base])), n)
		}
	}
	panic(fmt.Sprintf("ipcbench: %#x (+%d) outside every mapping", p, n))
}

func (d *fileDev) RingAdd(dst, src uint64, n int, div float32) {
	if n == 0 {
		return
	}
	a, b := d.kernelAt(dst, n), d.kernelAt(src, n)
	if a == nil || b == nil {
		return
	}
	allreduce.AddDiv(a, b, div)
}

func (d *fileDev) RingCopy(dst, src uint64, n int) {
	if n == 0 {
		return
	}
	if a, b := d.kernelAt(dst, n), d.kernelAt(src, n); a != nil && b != nil {
		copy(a, b)
	}
}

func (d *fileDev) RingPull(dst, src uint64, n int) {
	if n == 0 {
		return
	}
	if a := d.kernelAt(dst, n); a != nil {
		copy(a, d.at(src&^fileCopyOnly, n))
	}
}

func (d *fileDev) RingDiv(dst, src uint64, n int, div float32) {
	if n == 0 {
		return
	}
	a, b := d.kernelAt(dst, n), d.kernelAt(src, n)
	if a == nil || b == nil {
		return
	}
	allreduce.DivInto(a, b, div)
}

func (d *fileDev) RingSum64(dst, all uint64, l, w int, mean bool) {
	if l == 0 {
		return
	}
	out, in := d.kernelAt(dst, l), d.kernelAt(all, l*w)
	if out == nil || in == nil {
		return
	}
	allreduce.SumRanks64(out, in, w, mean)
}

func (d *fileDev) RingSync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *fileDev) newVec(n int) (uint64, error)     { return d.AllocShared(4 * n) }
func (d *fileDev) freeVec(p uint64) error           { return d.FreeShared(p) }
func (d *fileDev) toHost(dst []float32, p uint64)   { copy(dst, d.at(p, len(dst))) }
func (d *fileDev) fromHost(p uint64, src []float32) { copy(d.at(p, len(src)), src) }
func (d *fileDev) hostBuf(n int) []float32          { return make([]float32, n) }
func (d *fileDev) sync() error                      { return nil }
func (d *fileDev) describe() string                 { return "file device (CPU dry run, numbers mean nothing)" }
func (d *fileDev) close()                           { _ = os.RemoveAll(d.dir) }

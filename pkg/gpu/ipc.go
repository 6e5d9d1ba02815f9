package gpu

import (
	"encoding/hex"
	"fmt"
	"sync"
)

// The device ring (pkg/allreduce's Device): same-host workers reduce their
// gradients GPU to GPU. Each rank exports the device allocations it
// reduces in as CUDA IPC handles, its right neighbour opens them, and the
// ring's reductions run as kernels (kernels/ring.cu) that read the
// neighbour's memory directly; no gradient byte goes through host memory.
// Ordering across processes is the stream: a rank synchronises its stream
// before it tells its right neighbour (over the ring's link) that a round
// is done.

// ipcAPI is what a deviceAPI offers for the device ring. cudaDevice
// implements it with the driver's IPC calls; the kernel emulator with a
// process-wide registry of exported blocks. A deviceAPI without it (the
// recording fake) makes the Backend's IPC methods fail with ErrNoIPC.
type ipcAPI interface {
	// ipcKind names the kind of memory handles this device makes; two
	// devices can exchange handles only if their kinds are equal.
	ipcKind() string
	// ipcExport returns a handle to the allocation that contains ptr, and
	// that allocation's base address.
	ipcExport(ptr uint64) (handle []byte, base uint64, err error)
	// ipcOpen maps a handle another device (process) exported and returns
	// the allocation's base address here.
	ipcOpen(handle []byte) (uint64, error)
	// ipcClose unmaps what ipcOpen mapped.
	ipcClose(base uint64) error
}

// ErrNoIPC: the device cannot share memory with other processes.
var ErrNoIPC = fmt.Errorf("%w: no inter-process memory on this device", ErrDevice)

// CUDA IPC (cuda.h).
const (
	cuIpcHandleSize              = 64
	cuIpcMemLazyEnablePeerAccess = 1
)

// cuIpcMemHandle is CUipcMemHandle, passed by value to cuIpcOpenMemHandle.
type cuIpcMemHandle struct{ reserved [cuIpcHandleSize]byte }

// ipcDriver holds the driver's IPC entry points, resolved on first use so
// that a driver without them still runs everything else.
type ipcDriver struct {
	cuIpcGetMemHandle     func(h *cuIpcMemHandle, ptr uint64) int32
	cuIpcOpenMemHandle    func(ptr *uint64, h cuIpcMemHandle, flags uint32) int32
	cuIpcCloseMemHandle   func(ptr uint64) int32
	cuMemGetAddressRange  func(base *uint64, size *uint64, ptr uint64) int32
	cuDeviceGetUuid       func(uuid *[16]byte, dev int32) int32
	cuDeviceCanAccessPeer func(can *int32, dev, peer int32) int32
}

var (
	ipcOnce sync.Once // loads ipcSyms from the first device that asks
	ipcSyms *ipcDriver
	ipcErr  error
)

func (d *cudaDevice) ipcDrv() (*ipcDriver, error) {
	ipcOnce.Do(func() {
		s := &ipcDriver{}
		for _, sym := range []struct {
			f     any
			names []string
		}{
			{&s.cuIpcGetMemHandle, []string{"cuIpcGetMemHandle"}},
			{&s.cuIpcOpenMemHandle, []string{"cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"}},
			{&s.cuIpcCloseMemHandle, []string{"cuIpcCloseMemHandle"}},
			{&s.cuMemGetAddressRange, []string{"cuMemGetAddressRange_v2"}},
			{&s.cuDeviceGetUuid, []string{"cuDeviceGetUuid_v2", "cuDeviceGetUuid"}},
			{&s.cuDeviceCanAccessPeer, []string{"cuDeviceCanAccessPeer"}},
		} {
			if err := d.drv.lib.symAny(sym.f, sym.names...); err != nil {
				ipcErr = fmt.Errorf("%w: %w", ErrNoIPC, err)
				return
			}
		}
		ipcSyms = s
	})
	return ipcSyms, ipcErr
}

func (d *cudaDevice) ipcKind() string { return "cuda-ipc" }

func (d *cudaDevice) ipcExport(ptr uint64) ([]byte, uint64, error) {
	s, err := d.ipcDrv()
	if err != nil {
		return nil, 0, err
	}
	var base, size uint64
	if err := d.drv.check("cuMemGetAddressRange", s.cuMemGetAddressRange(&base, &size, ptr)); err != nil {
		return nil, 0, err
	}
	var h cuIpcMemHandle
	if err := d.drv.check("cuIpcGetMemHandle", s.cuIpcGetMemHandle(&h, base)); err != nil {
		return nil, 0, err
	}
	return append([]byte(nil), h.reserved[:]...), base, nil
}

func (d *cudaDevice) ipcOpen(handle []byte) (uint64, error) {
	s, err := d.ipcDrv()
	if err != nil {
		return 0, err
	}
	if len(handle) != cuIpcHandleSize {
		return 0, fmt.Errorf("%w: IPC handle of %d bytes (want %d)", ErrBadInput, len(handle), cuIpcHandleSize)
	}
	var h cuIpcMemHandle
	copy(h.reserved[:], handle)
	var p uint64
	// Lazy peer access: a handle of another GPU opens when the two can
	// reach each other's memory (NVLink or PCIe peer), else fails.
	if err := d.drv.check("cuIpcOpenMemHandle", s.cuIpcOpenMemHandle(&p, h, cuIpcMemLazyEnablePeerAccess)); err != nil {
		return 0, err
	}
	return p, nil
}

func (d *cudaDevice) ipcClose(base uint64) error {
	s, err := d.ipcDrv()
	if err != nil {
		return err
	}
	return d.drv.check("cuIpcCloseMemHandle", s.cuIpcCloseMemHandle(base))
}

// ipcUUID is the device's UUID (for logs: two ranks on one GPU show the same).
func (d *cudaDevice) ipcUUID() string {
	s, err := d.ipcDrv()
	if err != nil {
		return ""
	}
	var u [16]byte
	if s.cuDeviceGetUuid(&u, d.dev) != 0 {
		return ""
	}
	return "GPU-" + hex.EncodeToString(u[:])
}

// ---- the Backend's side: pkg/allreduce's Device ----

// ipc returns the device's IPC ability, or fails with ErrNoIPC.
func (b *Backend) ipc() (ipcAPI, error) {
	if d, ok := b.dev.(ipcAPI); ok {
		return d, nil
	}
	return nil, ErrNoIPC
}

// IPCKind names the kind of memory handles this backend exchanges
// ("cuda-ipc" on a GPU; "" when it has none). Ranks pair only when equal.
func (b *Backend) IPCKind() string {
	d, err := b.ipc()
	if err != nil {
		return ""
	}
	return d.ipcKind()
}

// IPCIdentity describes the device for logs (its UUID on a GPU).
func (b *Backend) IPCIdentity() string {
	if d, ok := b.dev.(interface{ ipcUUID() string }); ok {
		return d.ipcUUID()
	}
	return b.info.Name
}

// IPCExport returns a handle that another process on this host can open
// (IPCOpen) to reach the device allocation holding ptr, and ptr's offset
// in that allocation.
func (b *Backend) IPCExport(ptr uint64) (handle []byte, offset uint64, err error) {
	d, err := b.ipc()
	if err != nil {
		return nil, 0, err
	}
	defer b.end()
	if !b.begin() {
		return nil, 0, b.err
	}
	h, base, err := d.ipcExport(ptr)
	if err != nil {
		return nil, 0, err // not sticky: the caller falls back to the host ring
	}
	return h, ptr - base, nil
}

// IPCOpen maps a peer's handle and returns the allocation's base address
// in this backend's address space, valid until IPCClose.
func (b *Backend) IPCOpen(handle []byte) (uint64, error) {
	d, err := b.ipc()
	if err != nil {
		return 0, err
	}
	defer b.end()
	if !b.begin() {
		return 0, b.err
	}
	return d.ipcOpen(handle)
}

// IPCClose unmaps a base address IPCOpen returned.
func (b *Backend) IPCClose(base uint64) error {
	d, err := b.ipc()
	if err != nil {
		return err
	}
	defer b.end()
	if !b.begin() {
		return b.err
	}
	return d.ipcClose(base)
}

// AllocShared returns bytes of zeroed device memory that IPCExport can
// share (a block of the pool: one driver allocation of its own).
func (b *Backend) AllocShared(bytes int) (uint64, error) {
	defer b.end()
	if !b.begin() {
		return 0, b.err
	}
	if bytes <= 0 || bytes/4 > maxElems {
		return 0, fmt.Errorf("%w: shared allocation of %d bytes", ErrBadInput, bytes)
	}
	p, err := b.pool.get(uint64(bytes))
	if err != nil {
		return 0, err
	}
	if err := b.dev.memsetD32(p, 0, uint64(bytes+3)/4); err != nil {
		b.fail(err)
		return 0, err
	}
	return p, nil
}

// FreeShared returns memory of AllocShared to the pool.
func (b *Backend) FreeShared(p uint64) error {
	defer b.end()
	if !b.begin() {
		return b.err
	}
	return b.pool.put(p)
}

// ringArgs checks a ring kernel's element count.
func (b *Backend) ringArgs(n int) bool {
	if n < 0 || n > maxElems {
		b.fail(fmt.Errorf("%w: ring kernel over %d elements", ErrBadInput, n))
	}
	return b.err == nil
}

// RingAdd queues dst[i] = dst[i] + src[i] for i < n, then, when div is
// not 0, dst[i] = dst[i] / div (float32, as the host ring). src may be a
// peer's memory (IPCOpen). Errors are sticky (RingSync returns them).
func (b *Backend) RingAdd(dst, src uint64, n int, div float32) {
	defer b.end()
	if !b.begin() || !b.ringArgs(n) {
		return
	}
	b.elem("k_ring_add", n, a(dst, src, n, div))
}

// RingCopy queues dst[i] = src[i] for i < n (a device-to-device copy).
func (b *Backend) RingCopy(dst, src uint64, n int) {
	defer b.end()
	if !b.begin() || !b.ringArgs(n) || n == 0 {
		return
	}
	b.ok(b.dev.copyDtoD(dst, src, uint64(n)*4))
}

// RingDiv queues dst[i] = src[i] / div for i < n.
func (b *Backend) RingDiv(dst, src uint64, n int, div float32) {
	defer b.end()
	if !b.begin() || !b.ringArgs(n) {
		return
	}
	b.elem("k_ring_div", n, a(dst, src, n, div))
}

// RingSum64 queues dst[i] = float32(sum over k < w of float64(all[k*l+i]),
// divided by w when mean), the sum taken in k order: the host ring's small
// path.
func (b *Backend) RingSum64(dst, all uint64, l, w int, mean bool) {
	defer b.end()
	if !b.begin() || !b.ringArgs(l) || !b.ringArgs(l*w) {
		return
	}
	b.elem("k_ring_sum64", l, a(dst, all, l, w, mean))
}

// RingSync waits for the queued work and returns the sticky error.
func (b *Backend) RingSync() error { return b.Sync() }

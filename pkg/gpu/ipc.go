package gpu

import (
	"encoding/hex"
	"errors"
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
//
// Two GPUs without peer access: this process cannot map the neighbour's
// memory into its own context, so it opens the handle in a context of the
// neighbour's GPU (that device's primary context in this process, found
// by the UUID the handshake carries) and reaches it by copies only
// (cuMemcpyPeerAsync on this worker's stream, RingPull); the ring copies
// each segment into local memory and runs the same kernels there.

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
	// ipcOpen maps a handle that the device named owner (its ipcUUID)
	// exported in another process and returns the allocation's base
	// address here; copyOnly: only ipcPull can read it (ipcOpenVia).
	ipcOpen(handle []byte, owner string) (base uint64, copyOnly bool, err error)
	// ipcClose unmaps what ipcOpen mapped.
	ipcClose(base uint64) error
	// ipcPull queues a copy of bytes from src (memory ipcOpen mapped,
	// copy-only or not) to dst (this device's) on the device's stream.
	ipcPull(dst, src, bytes uint64) error
}

// peerOpener is the part of a device that ipcOpenVia decides with.
type peerOpener interface {
	// ipcReach says how this device relates to the device named owner:
	// the same device, or one its kernels can reach (peer access); found
	// is false when no device of this process has that name.
	ipcReach(owner string) (same, peer, found bool, err error)
	// ipcOpenHere opens a handle in this device's context, with lazy peer
	// access; its kernels can then read the memory.
	ipcOpenHere(handle []byte) (uint64, error)
	// ipcOpenInOwner opens a handle in a context of the device named
	// owner (the handle's own device); the memory is then copy-only here.
	ipcOpenInOwner(handle []byte, owner string) (uint64, error)
}

// CUresults that say two devices cannot reach each other as peers.
const (
	cudaErrorPeerAccessUnsupported = 217
	cudaErrorPeerAccessNotEnabled  = 705
	cudaErrorTooManyPeers          = 711
)

// ipcOpenVia opens a handle the device owner exported: in this device's
// context when it is the same device or a peer (lazy peer access), else,
// or when that open fails for want of peer access, in owner's context,
// copy-only. An owner this process cannot see is tried here only (the
// old protocol's behaviour), and named in the error.
func ipcOpenVia(o peerOpener, handle []byte, owner string) (uint64, bool, error) {
	same, peer, found, err := o.ipcReach(owner)
	if err != nil {
		return 0, false, err
	}
	if !found {
		p, err := o.ipcOpenHere(handle)
		if err != nil {
			return 0, false, fmt.Errorf("the exporting GPU %q is not visible in this process: %w", owner, err)
		}
		return p, false, nil
	}
	var lazy error
	if same || peer {
		p, err := o.ipcOpenHere(handle)
		switch c := Code(err); {
		case err == nil:
			return p, false, nil
		case same || (c != cudaErrorPeerAccessUnsupported && c != cudaErrorPeerAccessNotEnabled && c != cudaErrorTooManyPeers):
			return 0, false, err
		}
		lazy = fmt.Errorf("with peer access: %w", err)
	}
	p, err := o.ipcOpenInOwner(handle, owner)
	if err != nil {
		return 0, false, errors.Join(lazy, fmt.Errorf("in %s's context, for copies: %w", owner, err))
	}
	return p, true, nil
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
	cuMemcpyPeerAsync     func(dst uint64, dstCtx uintptr, src uint64, srcCtx uintptr, bytes uint64, stream uintptr) int32
}

// ipcForeign is a handle opened in another device's primary context
// (copy-only here): what ipcPull and ipcClose need.
type ipcForeign struct {
	dev  int32   // the owner device
	ctx  uintptr // its primary context, retained while the mapping lives
	size uint64  // the mapped allocation's bytes
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
			{&s.cuMemcpyPeerAsync, []string{"cuMemcpyPeerAsync"}},
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

func (d *cudaDevice) ipcOpen(handle []byte, owner string) (uint64, bool, error) {
	if _, err := d.ipcDrv(); err != nil {
		return 0, false, err
	}
	if len(handle) != cuIpcHandleSize {
		return 0, false, fmt.Errorf("%w: IPC handle of %d bytes (want %d)", ErrBadInput, len(handle), cuIpcHandleSize)
	}
	return ipcOpenVia(d, handle, owner)
}

// ipcDeviceOf returns the device of this process whose identity
// (ipcUUIDOf) is id, and whether there is one.
func (d *cudaDevice) ipcDeviceOf(s *ipcDriver, id string) (int32, bool) {
	var n int32
	if id == "" || d.drv.cuDeviceGetCount(&n) != 0 {
		return 0, false
	}
	for i := int32(0); i < n; i++ {
		var dev int32
		if d.drv.cuDeviceGet(&dev, i) == 0 && ipcUUIDOf(s, dev) == id {
			return dev, true
		}
	}
	return 0, false
}

func (d *cudaDevice) ipcReach(owner string) (same, peer, found bool, err error) {
	s, err := d.ipcDrv()
	if err != nil {
		return false, false, false, err
	}
	od, ok := d.ipcDeviceOf(s, owner)
	if !ok {
		return false, false, false, nil
	}
	if od == d.dev {
		return true, true, true, nil
	}
	var can int32
	if err := d.drv.check("cuDeviceCanAccessPeer", s.cuDeviceCanAccessPeer(&can, d.dev, od)); err != nil {
		return false, false, true, err
	}
	return false, can != 0, true, nil
}

func (d *cudaDevice) ipcOpenHere(handle []byte) (uint64, error) {
	s, err := d.ipcDrv()
	if err != nil {
		return 0, err
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

// ipcOpenInOwner opens the handle in the primary context of the owner's
// device in this process (retained until ipcClose): the allocation is
// that device's own there, so it opens without peer access, and this
// device reaches it with cuMemcpyPeerAsync. The calling thread is back
// in this device's context on return.
func (d *cudaDevice) ipcOpenInOwner(handle []byte, owner string) (p uint64, err error) {
	s, err := d.ipcDrv()
	if err != nil {
		return 0, err
	}
	od, ok := d.ipcDeviceOf(s, owner)
	if !ok {
		return 0, fmt.Errorf("%w: no device %q in this process", ErrNoIPC, owner)
	}
	var ctx uintptr
	if err := d.drv.check("cuDevicePrimaryCtxRetain", d.drv.cuDevicePrimaryCtxRetain(&ctx, od)); err != nil {
		return 0, err
	}
	defer func() {
		err = errors.Join(err, d.enter())
		if err != nil {
			if p != 0 {
				delete(d.foreign, p)
				_ = d.drv.cuCtxSetCurrent(ctx)
				_ = s.cuIpcCloseMemHandle(p)
				_ = d.enter()
			}
			_ = d.drv.cuDevicePrimaryCtxRelease(od)
			p = 0
		}
	}()
	if err := d.drv.check("cuCtxSetCurrent", d.drv.cuCtxSetCurrent(ctx)); err != nil {
		return 0, err
	}
	var h cuIpcMemHandle
	copy(h.reserved[:], handle)
	if err := d.drv.check("cuIpcOpenMemHandle", s.cuIpcOpenMemHandle(&p, h, cuIpcMemLazyEnablePeerAccess)); err != nil {
		return 0, err
	}
	var base, size uint64
	if err := d.drv.check("cuMemGetAddressRange", s.cuMemGetAddressRange(&base, &size, p)); err != nil {
		return p, err
	}
	if d.foreign == nil {
		d.foreign = map[uint64]ipcForeign{}
	}
	d.foreign[p] = ipcForeign{dev: od, ctx: ctx, size: size}
	return p, nil
}

func (d *cudaDevice) ipcClose(base uint64) error {
	s, err := d.ipcDrv()
	if err != nil {
		return err
	}
	f, ok := d.foreign[base]
	if !ok {
		return d.drv.check("cuIpcCloseMemHandle", s.cuIpcCloseMemHandle(base))
	}
	delete(d.foreign, base)
	err = d.drv.check("cuCtxSetCurrent", d.drv.cuCtxSetCurrent(f.ctx))
	if err == nil {
		err = d.drv.check("cuIpcCloseMemHandle", s.cuIpcCloseMemHandle(base))
	}
	return errors.Join(err, d.enter(), d.drv.check("cuDevicePrimaryCtxRelease", d.drv.cuDevicePrimaryCtxRelease(f.dev)))
}

// ipcCloseForeign closes every mapping still open in another device's
// context (at close).
func (d *cudaDevice) ipcCloseForeign() error {
	var errs []error
	for base := range d.foreign {
		errs = append(errs, d.ipcClose(base))
	}
	return errors.Join(errs...)
}

func (d *cudaDevice) ipcPull(dst, src, bytes uint64) error {
	for base, f := range d.foreign {
		if src >= base && src+bytes <= base+f.size {
			s, err := d.ipcDrv()
			if err != nil {
				return err
			}
			return d.drv.check("cuMemcpyPeerAsync", s.cuMemcpyPeerAsync(dst, d.ctx, src, f.ctx, bytes, d.stream))
		}
	}
	return d.copyDtoD(dst, src, bytes)
}

// ipcUUID is the device's UUID (for logs: two ranks on one GPU show the
// same; and the handshake's name of the device that exports a handle).
func (d *cudaDevice) ipcUUID() string {
	s, err := d.ipcDrv()
	if err != nil {
		return ""
	}
	return ipcUUIDOf(s, d.dev)
}

func ipcUUIDOf(s *ipcDriver, dev int32) string {
	var u [16]byte
	if s.cuDeviceGetUuid(&u, dev) != 0 {
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

// IPCIdentity names the device (its UUID on a GPU, "GPU-" and 32 hex
// digits): in logs, and to the neighbour that opens its handles, which
// finds the device by it (IPCOpen's owner).
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

// IPCOpen maps a peer's handle, exported by the device whose IPCIdentity
// is owner, and returns the allocation's base address in this backend's
// address space, valid until IPCClose. copyOnly: this GPU has no peer
// access to the owner's, the handle was opened in the owner's context
// and only RingPull may read it (a kernel given its address would fault).
func (b *Backend) IPCOpen(handle []byte, owner string) (base uint64, copyOnly bool, err error) {
	d, err := b.ipc()
	if err != nil {
		return 0, false, err
	}
	defer b.end()
	if !b.begin() {
		return 0, false, b.err
	}
	return d.ipcOpen(handle, owner)
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

// RingPull queues dst[i] = src[i] for i < n, src in memory IPCOpen
// mapped (copy-only or not), dst this backend's: cuMemcpyPeerAsync from
// the owner's context for copy-only memory, a device copy otherwise, on
// the backend's stream (RingSync waits for it).
func (b *Backend) RingPull(dst, src uint64, n int) {
	defer b.end()
	if !b.begin() || !b.ringArgs(n) || n == 0 {
		return
	}
	d, err := b.ipc()
	if err != nil {
		b.fail(err)
		return
	}
	b.ok(d.ipcPull(dst, src, uint64(n)*4))
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

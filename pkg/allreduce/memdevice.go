package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MemDevice is a Device over host memory, the in-memory twin of a GPU for
// tests of the device ring: its "device pointers" are the addresses of
// float32 blocks it allocates, its handles name such blocks, and any
// MemDevice of the same process and kind can open them (as processes of
// one host open each other's GPU memory). Its Ring* methods run at once
// with the float operations the kernels use, each under one process-wide
// lock: that makes it safe for concurrent use by the ranks of a test, and
// shows the race detector the order a GPU gets from the ring's signals
// (which it cannot see when they travel through shared memory; over
// InmemTransport the ring passes -race without the lock).
//
// It can also stand for a GPU without peer access to its neighbour's
// (CanAccess): IPCOpen then maps the handle copy-only, at an address its
// Ring* kernels refuse (the first such use is the error RingSync
// returns, as a GPU's illegal address would be) and only RingPull reads.
type MemDevice struct {
	// Kind is its IPCKind ("mem" when empty); NoIPC makes it a device
	// that cannot share memory (IPCKind "").
	Kind  string
	NoIPC bool
	// Identity is its IPCIdentity ("host memory" when empty).
	Identity string
	// CanAccess, when set, says whether its kernels may read memory
	// exported by the device whose identity is owner (peer access); nil
	// means every device's.
	CanAccess func(owner string) bool

	mu      sync.Mutex // guards opened and err
	opened  map[uint64]int
	err     error       // the first error of a Ring* method
	busy    atomic.Bool // a Device method is running
	overlap atomic.Bool // two Device methods ran at once (a caller's bug)
}

// use marks a Device method running until the returned func is called,
// and records an overlap with another one (Device is for one goroutine at
// a time; see Overlapped).
func (d *MemDevice) use() func() {
	if !d.busy.CompareAndSwap(false, true) {
		d.overlap.Store(true)
		return func() {}
	}
	return func() { d.busy.Store(false) }
}

// Overlapped reports whether two of its Device methods ever ran at the
// same time (from two goroutines), which the Device contract forbids.
func (d *MemDevice) Overlapped() bool { return d.overlap.Load() }

var (
	memOpMu     sync.Mutex               // held by every Ring* operation
	memBlocksMu sync.Mutex               // guards memBlocks
	memBlocks   = map[uint64][]float32{} // every MemDevice block, by address
)

var _ Device = (*MemDevice)(nil)

// Alloc returns a block of n float32s (zeroed) and its device address.
func (d *MemDevice) Alloc(n int) ([]float32, uint64) {
	b := make([]float32, max(n, 1))
	p := uint64(uintptr(unsafe.Pointer(&b[0])))
	memBlocksMu.Lock()
	memBlocks[p] = b
	memBlocksMu.Unlock()
	return b[:n], p
}

// Free forgets a block of Alloc.
func (d *MemDevice) Free(p uint64) {
	memBlocksMu.Lock()
	delete(memBlocks, p)
	memBlocksMu.Unlock()
}

// Opened is the number of handles opened and not yet closed.
func (d *MemDevice) Opened() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.opened {
		n += c
	}
	return n
}

// memCopyOnly marks the addresses of copy-only mappings (no host address
// has it), so that a kernel given one fails.
const memCopyOnly = 1 << 62

// errMemNoPeer: a Ring kernel was given copy-only memory.
var errMemNoPeer = errors.New("allreduce: MemDevice: a kernel read memory opened copy-only (no peer access)")

// kernelAt is memAt for a Ring kernel's operand: nil, with the device's
// first error recorded, for an address of a copy-only mapping.
func (d *MemDevice) kernelAt(p uint64, n int) []float32 {
	if p&memCopyOnly != 0 {
		d.fail(fmt.Errorf("%w: %#x", errMemNoPeer, p&^memCopyOnly))
		return nil
	}
	return memAt(p, n)
}

func (d *MemDevice) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.err = err
	}
}

// at returns the n float32s at device address p.
func memAt(p uint64, n int) []float32 {
	memBlocksMu.Lock()
	defer memBlocksMu.Unlock()
	for base, b := range memBlocks {
		if p >= base && p+4*uint64(n) <= base+4*uint64(cap(b)) && (p-base)%4 == 0 {
			i := int((p - base) / 4)
			return b[i : i+n : i+n]
		}
	}
	panic(fmt.Sprintf("allreduce: MemDevice address %#x (+%d) outside every block", p, n)) // a test's bug
}

func (d *MemDevice) IPCKind() string {
	switch {
	case d.NoIPC:
		return ""
	case d.Kind == "":
		return "mem"
	}
	return d.Kind
}

func (d *MemDevice) IPCIdentity() string {
	if d.Identity == "" {
		return "host memory"
	}
	return d.Identity
}

var errMemHandle = errors.New("allreduce: MemDevice: not a handle of an allocated block")

func (d *MemDevice) IPCExport(ptr uint64) ([]byte, uint64, error) {
	defer d.use()()
	if d.NoIPC {
		return nil, 0, errMemHandle
	}
	memBlocksMu.Lock()
	defer memBlocksMu.Unlock()
	for base, b := range memBlocks {
		if ptr >= base && ptr < base+4*uint64(cap(b)) {
			return binary.LittleEndian.AppendUint64(nil, base), ptr - base, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: export of %#x", errMemHandle, ptr)
}

func (d *MemDevice) IPCOpen(h []byte, owner string) (uint64, bool, error) {
	defer d.use()()
	if len(h) != 8 {
		return 0, false, errMemHandle
	}
	base := binary.LittleEndian.Uint64(h)
	memBlocksMu.Lock()
	_, ok := memBlocks[base]
	memBlocksMu.Unlock()
	if !ok {
		return 0, false, fmt.Errorf("%w: %#x", errMemHandle, base)
	}
	copyOnly := d.CanAccess != nil && !d.CanAccess(owner)
	if copyOnly {
		base |= memCopyOnly
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opened == nil {
		d.opened = map[uint64]int{}
	}
	d.opened[base]++
	return base, copyOnly, nil
}

func (d *MemDevice) IPCClose(base uint64) error {
	defer d.use()()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opened[base] == 0 {
		return fmt.Errorf("%w: close of %#x, not open", errMemHandle, base)
	}
	d.opened[base]--
	return nil
}

func (d *MemDevice) AllocShared(bytes int) (uint64, error) {
	defer d.use()()
	_, p := d.Alloc((bytes + 3) / 4)
	return p, nil
}

func (d *MemDevice) FreeShared(p uint64) error {
	defer d.use()()
	d.Free(p)
	return nil
}

func (d *MemDevice) RingAdd(dst, src uint64, n int, div float32) {
	defer d.use()()
	memOpMu.Lock()
	defer memOpMu.Unlock()
	if n == 0 {
		return
	}
	a, b := d.kernelAt(dst, n), d.kernelAt(src, n)
	if a == nil || b == nil {
		return
	}
	AddDiv(a, b, div)
}

func (d *MemDevice) RingCopy(dst, src uint64, n int) {
	defer d.use()()
	memOpMu.Lock()
	defer memOpMu.Unlock()
	if n == 0 {
		return
	}
	if a, b := d.kernelAt(dst, n), d.kernelAt(src, n); a != nil && b != nil {
		copy(a, b)
	}
}

// RingPull reads copy-only memory too (a copy through the device).
func (d *MemDevice) RingPull(dst, src uint64, n int) {
	defer d.use()()
	memOpMu.Lock()
	defer memOpMu.Unlock()
	if n == 0 {
		return
	}
	if a := d.kernelAt(dst, n); a != nil {
		copy(a, memAt(src&^memCopyOnly, n))
	}
}

func (d *MemDevice) RingDiv(dst, src uint64, n int, div float32) {
	defer d.use()()
	memOpMu.Lock()
	defer memOpMu.Unlock()
	if n == 0 {
		return
	}
	a, b := d.kernelAt(dst, n), d.kernelAt(src, n)
	if a == nil || b == nil {
		return
	}
	DivInto(a, b, div)
}

func (d *MemDevice) RingSum64(dst, all uint64, l, w int, mean bool) {
	defer d.use()()
	memOpMu.Lock()
	defer memOpMu.Unlock()
	if l == 0 {
		return
	}
	out, in := d.kernelAt(dst, l), d.kernelAt(all, l*w)
	if out == nil || in == nil {
		return
	}
	SumRanks64(out, in, w, mean)
}

func (d *MemDevice) RingSync() error {
	defer d.use()()
	time.Sleep(time.Microsecond) // a wait, as a device's: overlapping calls show
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

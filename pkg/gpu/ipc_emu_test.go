package gpu

// The emulator's twin of CUDA IPC. Emulated devices of one test process
// stand for the processes of a host: a handle names an exported block by
// its host address, and any emulated device can open it (its kernels then
// read and write the exporter's memory, as an IPC mapping of the same GPU
// memory does). Separate processes are not emulated: the ring's tests run
// every rank in this process, one Backend each.
//
// Each emulated device sits on an emulated GPU (emuIPC.gpu, named
// EMU-GPU-n; 0 unless a test says), and may lack peer access to some
// others (emuIPC.noPeer: cuDeviceCanAccessPeer says 0, and a lazy open of
// their handles fails with CUDA_ERROR_PEER_ACCESS_UNSUPPORTED). Such a
// handle opens, as on a GPU, only in the owner's context (ipcOpenInOwner)
// and copy-only: at an alias address (emuCopyOnly set, no host address
// has it) that the device's kernel launches and device copies refuse,
// like a GPU's illegal address, and only ipcPull reads.

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

const emuIPCMagic = 0x43504955454d55 // "UMEUIPC"

// emuCopyOnly marks the addresses of copy-only mappings.
const emuCopyOnly = 1 << 62

// emuIPC is an emulated device's place in the emulated host.
type emuIPC struct {
	gpu       int            // its emulated GPU: EMU-GPU-gpu
	noPeer    map[int]bool   // GPUs it has no peer access to
	lazyFails map[int]bool   // GPUs it reports as peers whose lazy open still fails (too many peers)
	hidden    map[int]bool   // GPUs not visible in its "process"
	copyOnly  map[uint64]int // open copy-only mappings: alias base -> bytes
	opened    map[uint64]int // open mappings (either kind), by the base ipcOpen returned
	pulls     int            // ipcPull calls that read copy-only memory
}

type emuExported struct {
	buf []uint64
	gpu int
}

var (
	emuIPCMu     sync.Mutex // guards emuIPCBlocks
	emuIPCBlocks = map[uint64]emuExported{}
	emuLaunchMu  sync.Mutex // serialises emulated launches (see emuDevice.launch)
)

// emuIPCAt resolves an address inside an exported block, or nil.
func emuIPCAt(p uint64) unsafe.Pointer {
	emuIPCMu.Lock()
	defer emuIPCMu.Unlock()
	for base, e := range emuIPCBlocks {
		if p >= base && p < base+uint64(len(e.buf))*8 {
			return unsafe.Add(unsafe.Pointer(&e.buf[0]), p-base)
		}
	}
	return nil
}

// emuGPUName is the identity (ipcUUID) of emulated GPU n.
func emuGPUName(n int) string { return "EMU-GPU-" + strconv.Itoa(n) }

func (d *emuDevice) ipcUUID() string { return emuGPUName(d.ipc.gpu) }

func (d *emuDevice) ipcKind() string { return "emu-ipc" }

func (d *emuDevice) ipcExport(p uint64) ([]byte, uint64, error) {
	for base, buf := range d.blocks {
		if p >= base && p < base+uint64(len(buf))*8 {
			emuIPCMu.Lock()
			emuIPCBlocks[base] = emuExported{buf: buf, gpu: d.ipc.gpu}
			emuIPCMu.Unlock()
			h := make([]byte, 32)
			binary.LittleEndian.PutUint64(h, emuIPCMagic)
			binary.LittleEndian.PutUint64(h[8:], base)
			binary.LittleEndian.PutUint64(h[16:], uint64(len(buf))*8)
			binary.LittleEndian.PutUint64(h[24:], uint64(d.ipc.gpu))
			return h, base, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: emu: export of %#x, not an allocation", ErrCUDA, p)
}

// emuHandle decodes a handle: the block's base, bytes and GPU.
func emuHandle(h []byte) (base, size uint64, gpu int, err error) {
	if len(h) != 32 || binary.LittleEndian.Uint64(h) != emuIPCMagic {
		return 0, 0, 0, fmt.Errorf("%w: emu: not an emulator IPC handle", ErrCUDA)
	}
	base, size = binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint64(h[16:])
	emuIPCMu.Lock()
	defer emuIPCMu.Unlock()
	if e, ok := emuIPCBlocks[base]; !ok || uint64(len(e.buf))*8 != size {
		return 0, 0, 0, fmt.Errorf("%w: emu: IPC handle of %#x names no exported block", ErrCUDA, base)
	}
	return base, size, int(binary.LittleEndian.Uint64(h[24:])), nil
}

func (d *emuDevice) ipcOpen(h []byte, owner string) (uint64, bool, error) {
	if _, _, _, err := emuHandle(h); err != nil {
		return 0, false, err
	}
	return ipcOpenVia(d, h, owner)
}

// emuGPUOf parses an emulated GPU's name; found is false for a name that
// is not one, or a GPU hidden from this device's process.
func (d *emuDevice) emuGPUOf(owner string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(owner, "EMU-GPU-"))
	if err != nil || !strings.HasPrefix(owner, "EMU-GPU-") || d.ipc.hidden[n] {
		return 0, false
	}
	return n, true
}

func (d *emuDevice) ipcReach(owner string) (same, peer, found bool, err error) {
	g, ok := d.emuGPUOf(owner)
	if !ok {
		return false, false, false, nil
	}
	return g == d.ipc.gpu, !d.ipc.noPeer[g], true, nil
}

func (d *emuDevice) mapped(base uint64, copyOnly bool, size uint64) {
	if d.ipc.opened == nil {
		d.ipc.opened, d.ipc.copyOnly = map[uint64]int{}, map[uint64]int{}
	}
	d.ipc.opened[base]++
	if copyOnly {
		d.ipc.copyOnly[base] = int(size)
	}
}

func (d *emuDevice) ipcOpenHere(h []byte) (uint64, error) {
	base, size, g, err := emuHandle(h)
	if err != nil {
		return 0, err
	}
	if g != d.ipc.gpu && (d.ipc.noPeer[g] || d.ipc.lazyFails[g] || d.ipc.hidden[g]) {
		code := int32(cudaErrorPeerAccessUnsupported)
		if d.ipc.lazyFails[g] {
			code = cudaErrorTooManyPeers
		}
		return 0, &cudaError{call: "cuIpcOpenMemHandle", code: code, text: fmt.Sprintf("emu: %s cannot reach %s", emuGPUName(d.ipc.gpu), emuGPUName(g))}
	}
	d.mapped(base, false, size)
	return base, nil
}

func (d *emuDevice) ipcOpenInOwner(h []byte, owner string) (uint64, error) {
	base, size, g, err := emuHandle(h)
	if err != nil {
		return 0, err
	}
	og, ok := d.emuGPUOf(owner)
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: emu: no device %q in this process", ErrNoIPC, owner)
	case og != g: // a context of another device than the handle's
		return 0, &cudaError{call: "cuIpcOpenMemHandle", code: 1, text: fmt.Sprintf("emu: a handle of %s opened in %s's context", emuGPUName(g), owner)}
	}
	d.mapped(base|emuCopyOnly, true, size)
	return base | emuCopyOnly, nil
}

func (d *emuDevice) ipcClose(base uint64) error {
	if d.ipc.opened[base] == 0 {
		return fmt.Errorf("%w: emu: close of %#x, not opened", ErrCUDA, base)
	}
	d.ipc.opened[base]--
	if d.ipc.opened[base] == 0 {
		delete(d.ipc.opened, base)
		delete(d.ipc.copyOnly, base)
	}
	return nil
}

func (d *emuDevice) ipcPull(dst, src, bytes uint64) error {
	if dst&emuCopyOnly != 0 {
		return fmt.Errorf("%w: emu: pull into copy-only memory %#x", ErrCUDA, dst)
	}
	if src&emuCopyOnly != 0 {
		found := false
		for base, size := range d.ipc.copyOnly {
			found = found || (src >= base && src+bytes <= base+uint64(size))
		}
		if !found {
			return fmt.Errorf("%w: emu: pull from %#x (+%d), not in an open copy-only mapping", ErrCUDA, src, bytes)
		}
		d.ipc.pulls++
	}
	copy(d.bytesAt(dst, bytes), d.bytesAt(src&^emuCopyOnly, bytes))
	return nil
}

// ipcReachable refuses, as a GPU's illegal address, a kernel argument or a
// device copy operand in copy-only memory.
func (d *emuDevice) ipcReachable(what string, ptrs ...uint64) error {
	for _, p := range ptrs {
		if p&emuCopyOnly != 0 {
			return &cudaError{call: what, code: 700, text: fmt.Sprintf("emu: %#x is copy-only memory (no peer access from %s): CUDA_ERROR_ILLEGAL_ADDRESS", p&^emuCopyOnly, emuGPUName(d.ipc.gpu))}
		}
	}
	return nil
}

// ipcReachableArgs is ipcReachable over a launch's pointer arguments.
func (d *emuDevice) ipcReachableArgs(name string, args []karg) error {
	for _, a := range args {
		if a.kind == 'p' {
			if err := d.ipcReachable("cuLaunchKernel("+name+")", a.v); err != nil {
				return err
			}
		}
	}
	return nil
}

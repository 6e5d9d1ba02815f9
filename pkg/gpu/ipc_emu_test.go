package gpu

// The emulator's twin of CUDA IPC. Emulated devices of one test process
// stand for the processes of a host: a handle names an exported block by
// its host address, and any emulated device can open it (its kernels then
// read and write the exporter's memory, as an IPC mapping of the same GPU
// memory does). Separate processes are not emulated: the ring's tests run
// every rank in this process, one Backend each.

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"
)

const emuIPCMagic = 0x43504955454d55 // "UMEUIPC"

var (
	emuIPCMu     sync.Mutex // guards emuIPCBlocks
	emuIPCBlocks = map[uint64][]uint64{}
	emuLaunchMu  sync.Mutex // serialises emulated launches (see emuDevice.launch)
)

// emuIPCAt resolves an address inside an exported block, or nil.
func emuIPCAt(p uint64) unsafe.Pointer {
	emuIPCMu.Lock()
	defer emuIPCMu.Unlock()
	for base, buf := range emuIPCBlocks {
		if p >= base && p < base+uint64(len(buf))*8 {
			return unsafe.Add(unsafe.Pointer(&buf[0]), p-base)
		}
	}
	return nil
}

func (d *emuDevice) ipcKind() string { return "emu-ipc" }

func (d *emuDevice) ipcExport(p uint64) ([]byte, uint64, error) {
	for base, buf := range d.blocks {
		if p >= base && p < base+uint64(len(buf))*8 {
			emuIPCMu.Lock()
			emuIPCBlocks[base] = buf
			emuIPCMu.Unlock()
			h := make([]byte, 24)
			binary.LittleEndian.PutUint64(h, emuIPCMagic)
			binary.LittleEndian.PutUint64(h[8:], base)
			binary.LittleEndian.PutUint64(h[16:], uint64(len(buf))*8)
			return h, base, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: emu: export of %#x, not an allocation", ErrCUDA, p)
}

func (d *emuDevice) ipcOpen(h []byte) (uint64, error) {
	if len(h) != 24 || binary.LittleEndian.Uint64(h) != emuIPCMagic {
		return 0, fmt.Errorf("%w: emu: not an emulator IPC handle", ErrCUDA)
	}
	base := binary.LittleEndian.Uint64(h[8:])
	emuIPCMu.Lock()
	defer emuIPCMu.Unlock()
	if buf, ok := emuIPCBlocks[base]; !ok || uint64(len(buf))*8 != binary.LittleEndian.Uint64(h[16:]) {
		return 0, fmt.Errorf("%w: emu: IPC handle of %#x names no exported block", ErrCUDA, base)
	}
	return base, nil
}

func (d *emuDevice) ipcClose(base uint64) error {
	emuIPCMu.Lock()
	defer emuIPCMu.Unlock()
	if _, ok := emuIPCBlocks[base]; !ok {
		return fmt.Errorf("%w: emu: close of %#x, not opened", ErrCUDA, base)
	}
	return nil
}

//go:build linux

package allreduce

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// shmSupported reports whether this build has the shared-memory path.
const shmSupported = true

// shmSegment is a file in a tmpfs directory mapped into both ends of one
// link: the sender's slots, read in place by the receiver, and the
// counters that hand them back and forth (see shmring.go).
type shmSegment struct {
	mu    sync.RWMutex // guards mem: readers/writers hold R, unmap holds W
	mem   []byte       // nil once unmapped
	path  string
	slots int
	slot  int // payload bytes per slot
}

// word returns the 32-bit control word at byte offset off (callers hold mu
// and have checked mem != nil).
func (s *shmSegment) word(off int) *uint32 { return (*uint32)(unsafe.Pointer(&s.mem[off])) }

// word64 returns the 64-bit control word at byte offset off (8-aligned).
func (s *shmSegment) word64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&s.mem[off])) }

// load64 reads a control counter; ok is false once the segment is unmapped.
func (s *shmSegment) load64(off int) (v uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return 0, false
	}
	return atomic.LoadUint64(s.word64(off)), true
}

// load32 reads a 32-bit control word (a wake-up or sleep word); ok is
// false once the segment is unmapped.
func (s *shmSegment) load32(off int) (v uint32, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return 0, false
	}
	return atomic.LoadUint32(s.word(off)), true
}

// publish stores a control counter, bumps the wake-up word seqOff and wakes
// a sleeper of the other process if it said (word waitOff) that it sleeps.
func (s *shmSegment) publish(off int, v uint64, seqOff, waitOff int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return
	}
	atomic.StoreUint64(s.word64(off), v)
	atomic.AddUint32(s.word(seqOff), 1)
	if atomic.LoadUint32(s.word(waitOff)) != 0 {
		futexWake(s.word(seqOff))
	}
}

// wake wakes every sleeper on the wake-up word seqOff (used by Close and
// when a stream ends, so that a waiting Send or Recv looks again).
func (s *shmSegment) wake(seqOff int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return
	}
	atomic.AddUint32(s.word(seqOff), 1)
	futexWake(s.word(seqOff))
}

// sleep blocks until the wake-up word seqOff moves past seen (or up to d),
// after announcing the sleep in waitOff; ready is checked once more after
// the announcement so that a publish in between is not missed. It returns
// at once if the segment is unmapped.
func (s *shmSegment) sleep(seqOff, waitOff int, d time.Duration, ready func() bool) {
	s.mu.RLock()
	if s.mem == nil {
		s.mu.RUnlock()
		return
	}
	seq, wait := s.word(seqOff), s.word(waitOff)
	atomic.StoreUint32(wait, 1)
	seen := atomic.LoadUint32(seq)
	s.mu.RUnlock()
	if !ready() {
		// The mapping may go away meanwhile: the kernel then answers
		// EFAULT or the timeout ends the wait, and nothing here touches
		// the memory again without the lock.
		futexWait(seq, seen, d)
	}
	s.mu.RLock()
	if s.mem != nil {
		atomic.StoreUint32(wait, 0)
	}
	s.mu.RUnlock()
}

const (
	sysFutexWait = 0 // FUTEX_WAIT, not private: the word is shared between processes
	sysFutexWake = 1 // FUTEX_WAKE
)

// shmYield gives the processor to another runnable thread, if any.
func shmYield() { _, _, _ = syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

// futexWait sleeps while *addr == val, at most d.
func futexWait(addr *uint32, val uint32, d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), sysFutexWait, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWake wakes every sleeper on addr.
func futexWake(addr *uint32) {
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), sysFutexWake, 1<<30, 0, 0, 0)
}

// createShm creates and maps a segment of slots*slot bytes in dir.
func createShm(dir string, slots, slot int) (*shmSegment, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("shm name: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s%d-%s", shmPrefix, os.Getpid(), hex.EncodeToString(rnd[:])))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm create: %w", err)
	}
	defer f.Close()
	size := shmSize(slots, slot)
	if err := f.Truncate(int64(size)); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("shm size: %w", err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("shm map: %w", err)
	}
	return &shmSegment{mem: mem, path: path, slots: slots, slot: slot}, nil
}

// openShm maps a segment created by a peer on this host (read-write: the
// receiver writes its counters there). The path must be a file of this
// package in dir, of exactly the size the offered geometry needs.
func openShm(dir, path string, slots, slot int) (*shmSegment, error) {
	if filepath.Dir(path) != filepath.Clean(dir) || !strings.HasPrefix(filepath.Base(path), shmPrefix) {
		return nil, fmt.Errorf("%w: shared-memory path %q outside %q", ErrMalformed, path, dir)
	}
	if slots <= 0 || slot <= 0 || slots > 1<<10 || slot > 1<<30 {
		return nil, fmt.Errorf("%w: shared-memory geometry %d x %d", ErrMalformed, slots, slot)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("shm open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm stat: %w", err)
	}
	size := shmSize(slots, slot)
	if st.Size() != int64(size) {
		return nil, fmt.Errorf("%w: shared-memory file of %d bytes, offered %d", ErrMalformed, st.Size(), size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm map: %w", err)
	}
	return &shmSegment{mem: mem, path: path, slots: slots, slot: slot}, nil
}

// unlink removes the file; the mappings stay valid.
func (s *shmSegment) unlink() { _ = os.Remove(s.path) }

// unmap releases the mapping once no reader or writer holds it.
func (s *shmSegment) unmap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem != nil {
		_ = syscall.Munmap(s.mem)
		s.mem = nil
	}
}

// with calls fn with slot i's header room and its payload area, holding
// the mapping.
func (s *shmSegment) with(i int, fn func(hdr, payload []byte) error) error {
	if i < 0 || i >= s.slots {
		return fmt.Errorf("%w: shared-memory slot %d (have %d)", ErrMalformed, i, s.slots)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return fmt.Errorf("%w: shared memory unmapped", ErrClosed)
	}
	base := shmCtrlBytes + i*shmStride(s.slot)
	return fn(s.mem[base:base+shmHdrRoom:base+shmHdrRoom], s.mem[base+shmHdrRoom:base+shmHdrRoom+s.slot])
}

// defaultShmDir is where segments are created.
func defaultShmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// defaultHostID identifies this machine (and boot): two processes that see
// the same id can share memory.
func defaultHostID() string {
	h, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return h + "/" + strings.TrimSpace(string(boot))
}

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
	"syscall"
)

// shmSupported reports whether this build has the shared-memory path.
const shmSupported = true

// shmPrefix starts the name of every segment file, so that a receiver maps
// only files this package created.
const shmPrefix = "ringtrain-ar-"

// shmSegment is a file in a tmpfs directory mapped into this process: the
// sender's slots, read in place by the receiver.
type shmSegment struct {
	mu    sync.RWMutex // guards mem: readers/writers hold R, unmap holds W
	mem   []byte       // nil once unmapped
	path  string
	slots int
	slot  int // bytes per slot
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
	size := slots * slot
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

// openShm maps (read-only) a segment created by a peer on this host. The
// path must be a file of this package in dir, of exactly the offered size.
func openShm(dir, path string, slots, slot int) (*shmSegment, error) {
	if filepath.Dir(path) != filepath.Clean(dir) || !strings.HasPrefix(filepath.Base(path), shmPrefix) {
		return nil, fmt.Errorf("%w: shared-memory path %q outside %q", ErrMalformed, path, dir)
	}
	if slots <= 0 || slot <= 0 || slots > 1<<10 || slot > 1<<30 {
		return nil, fmt.Errorf("%w: shared-memory geometry %d x %d", ErrMalformed, slots, slot)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shm open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm stat: %w", err)
	}
	size := slots * slot
	if st.Size() != int64(size) {
		return nil, fmt.Errorf("%w: shared-memory file of %d bytes, offered %d", ErrMalformed, st.Size(), size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
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

// with calls fn with slot i's first n bytes, holding the mapping.
func (s *shmSegment) with(i, n int, fn func(b []byte)) error {
	if i < 0 || i >= s.slots || n < 0 || n > s.slot {
		return fmt.Errorf("%w: shared-memory slot %d, %d bytes (have %d x %d)", ErrMalformed, i, n, s.slots, s.slot)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mem == nil {
		return fmt.Errorf("%w: shared memory unmapped", ErrClosed)
	}
	fn(s.mem[i*s.slot : i*s.slot+n])
	return nil
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

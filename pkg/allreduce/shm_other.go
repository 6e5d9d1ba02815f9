//go:build !linux

package allreduce

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

const shmSupported = false

type shmSegment struct {
	path        string
	slots, slot int
}

var errNoShm = fmt.Errorf("%w: shared memory is only implemented on linux", ErrConfig)

func createShm(dir string, slots, slot int) (*shmSegment, error) { return nil, errNoShm }

func openShm(dir, path string, slots, slot int) (*shmSegment, error) { return nil, errNoShm }

func (s *shmSegment) unlink() {}
func (s *shmSegment) unmap()  {}
func (s *shmSegment) with(i int, fn func(hdr, payload []byte) error) error {
	return errNoShm
}
func (s *shmSegment) load64(off int) (uint64, bool)                                 { return 0, false }
func (s *shmSegment) load32(off int) (uint32, bool)                                 { return 0, false }
func (s *shmSegment) publish(off int, v uint64, seqOff, waitOff int)                {}
func (s *shmSegment) wake(seqOff int)                                               {}
func (s *shmSegment) sleep(seqOff, waitOff int, d time.Duration, ready func() bool) {}

func shmYield() { runtime.Gosched() }

func defaultShmDir() string { return os.TempDir() }

func defaultHostID() string {
	h, _ := os.Hostname()
	return h
}

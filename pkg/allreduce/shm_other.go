//go:build !linux

package allreduce

import (
	"fmt"
	"os"
)

const shmSupported = false

type shmSegment struct {
	path        string
	slots, slot int
}

func createShm(dir string, slots, slot int) (*shmSegment, error) {
	return nil, fmt.Errorf("%w: shared memory is only implemented on linux", ErrConfig)
}

func openShm(dir, path string, slots, slot int) (*shmSegment, error) {
	return nil, fmt.Errorf("%w: shared memory is only implemented on linux", ErrConfig)
}

func (s *shmSegment) unlink() {}
func (s *shmSegment) unmap()  {}
func (s *shmSegment) with(i, n int, fn func(b []byte)) error {
	return fmt.Errorf("%w: shared memory is only implemented on linux", ErrConfig)
}

func defaultShmDir() string { return os.TempDir() }

func defaultHostID() string {
	h, _ := os.Hostname()
	return h
}

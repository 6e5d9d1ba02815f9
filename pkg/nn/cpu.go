package nn

import "runtime"

// CPU is the CPU backend: host tensors, work split across goroutines so
// that results never depend on the number of threads.
type CPU struct {
	threads int
}

// NewCPU returns a CPU backend using threads goroutines (<= 0: GOMAXPROCS).
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &CPU{threads: threads}
}

// Threads is the number of goroutines ops use.
func (c *CPU) Threads() int { return c.threads }

// Name implements Backend.
func (c *CPU) Name() string { return "cpu" }

package nn

import (
	"runtime"

	"github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"
)

// CPU is the CPU backend: host tensors, work split across goroutines so
// that results never depend on the number of threads.
type CPU struct {
	threads    int
	noWinograd bool // SetWinograd(false)

	// Scratch memory, grown on demand and reused across calls (the backend
	// is used from one goroutine at a time, so one set suffices).
	col   []float32 // im2col / col2im buffer of one chunk of images
	tmp   []float32 // gathered dy / GEMM output of one chunk of images
	acc   []float64 // float64 partial sums of per-channel reductions
	chn   []float64 // per-channel float64 sums
	coef  []float32 // per-channel coefficients of the BatchNorm passes
	coefv []float32 // the same laid out for the vector loops
	rows  []float64 // per-row values of the loss

	plans  map[ConvParams]*convPlan // convolution plans by shape (N = 0)
	planes [][]float32              // per-goroutine scratch planes of im2col/col2im
	wlive  []float32                // weights restricted to the live taps
	wflip  []float32                // transposed, flipped weights (backward data)
	dwlive []float32                // their gradient before it is added to dw
	dwpart []float32                // per-chunk partial filter gradients
	xpad   []float32                // the input of a convolution as padded planes
	work   []*gemm.Workspace        // per-goroutine GEMM packing memory
	keys   [][]int32                // per-goroutine max-pool keys of a plane

	team team // helper goroutines of parallel (see cpu_team.go)
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

package nn

import (
	"runtime"

	"github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"
)

// CPU is the CPU backend: host tensors, work split across goroutines so
// that results never depend on the number of threads.
type CPU struct {
	threads    int
	noWinograd bool       // SetWinograd(false)
	tune       CPUOptions // the tuning knobs, defaults filled in (NewCPUWith)

	// Tests' switches to the other paths of a shape.
	noDense      bool // dense shapes take the im2col and Winograd paths
	denseGeneric bool // the 2x2 dense shape takes the generic dense loops

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

// CPUOptions configure a CPU backend (NewCPUWith). The zero value is
// NewCPU(0)'s backend. Apart from NoWinograd, the fields are tuning
// knobs: where the backend switches algorithms and how it blocks its work,
// 0 meaning the default measured in docs/cpu-speed.md. They change speed
// and, where they move a shape between the Winograd and the direct path,
// rounding; no setting makes a result depend on Threads.
type CPUOptions struct {
	// Threads is the number of goroutines ops use (<= 0: GOMAXPROCS).
	Threads int
	// NoWinograd computes every convolution as a plain float32 sum of
	// products (as SetWinograd(false)).
	NoWinograd bool

	// WinogradMinChannels is the least min(C, K) of a 3x3 stride-1
	// convolution whose forward and backward-data take the Winograd path
	// (default 16); WinogradMinFilterChannels the least for its weight
	// gradient (default 64).
	WinogradMinChannels, WinogradMinFilterChannels int
	// WinogradFilterBlockBytes bounds the transformed input and dy of one
	// block of a Winograd weight gradient (default 2 MiB), and
	// WinogradFilterMinTiles is the least tiles per block (default 128).
	WinogradFilterBlockBytes, WinogradFilterMinTiles int
	// ColBudget bounds, in float32 values, the column buffer of one
	// backward-data chunk of images (default 1<<22).
	ColBudget int
	// PixelTermsMax bounds the live (tap, output pixel) pairs of a plane
	// whose backward-data col2im gathers per input pixel; larger planes
	// use a plane buffer (default 4096; negative: never gather).
	PixelTermsMax int
}

// Defaults of the CPUOptions knobs.
const (
	defaultWinogradMinChannels       = 16
	defaultWinogradMinFilterChannels = 64
	defaultWinogradFilterBlockBytes  = 2 << 20
	defaultWinogradFilterMinTiles    = 128
	defaultColBudget                 = 1 << 22
	defaultPixelTermsMax             = 4096
)

// NewCPU returns a CPU backend using threads goroutines (<= 0:
// GOMAXPROCS), with the default options otherwise.
func NewCPU(threads int) *CPU { return NewCPUWith(CPUOptions{Threads: threads}) }

// NewCPUWith returns a CPU backend configured by o.
func NewCPUWith(o CPUOptions) *CPU {
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.WinogradMinChannels, defaultWinogradMinChannels)
	def(&o.WinogradMinFilterChannels, defaultWinogradMinFilterChannels)
	def(&o.WinogradFilterBlockBytes, defaultWinogradFilterBlockBytes)
	def(&o.WinogradFilterMinTiles, defaultWinogradFilterMinTiles)
	def(&o.ColBudget, defaultColBudget)
	def(&o.PixelTermsMax, defaultPixelTermsMax)
	return &CPU{threads: o.Threads, noWinograd: o.NoWinograd, tune: o}
}

// Threads is the number of goroutines ops use.
func (c *CPU) Threads() int { return c.threads }

// Name implements Backend.
func (c *CPU) Name() string { return "cpu" }

package gemm

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// kernel is one micro-kernel and the blocking sizes tuned for it.
//
// fn computes one mr x nr tile: with acc[i][j] = sum over p < k, in
// increasing p, of a[p*mr+i]*b[p*nr+j], it stores
// c[i*ldc+j] = alpha*acc[i][j] + beta*c[i*ldc+j], or alpha*acc[i][j] without
// reading c when beta == 0. a and b are packed micro-panels (k*mr and k*nr
// values); c holds the tile (at least (mr-1)*ldc+nr values).
type kernel struct {
	name       string
	mr, nr     int // register tile
	kc, mc, nc int // cache blocks: k per pass, rows of A per block, columns of B per block
	fn         func(k int, a, b, c []float32, ldc int, alpha, beta float32)

	// Optional fast packers for this path (nil: the Go loops in pack.go).
	// Each handles one full panel of width w (mr or nr) and returns false,
	// having written nothing, when it cannot. src starts at the panel's
	// first element; dst holds w*kc values.
	//
	// packT transposes: dst[p*w+r] = src[r*ld+p] for r < w, p < kc.
	// packCopy copies rows: dst[p*w+j] = src[p*ld+j] for j < w, p < kc.
	packT, packCopy func(dst, src []float32, ld, kc, w int) bool
}

// Sentinel errors of path selection.
var (
	ErrUnknownPath     = errors.New("gemm: unknown kernel path")
	ErrPathUnavailable = errors.New("gemm: kernel path not supported by this CPU")
)

var generic = &kernel{name: "generic", mr: 4, nr: 4, kc: 256, mc: 256, nc: 512, fn: kernGeneric}

// The generic path is pure Go (kernel and packing), so SetPath("generic")
// runs no assembly at all.

// kernels lists the paths this CPU supports, best first (filled by the
// architecture files' init, then generic).
var kernels []*kernel

// current is the path Sgemm uses: the best one unless SetPath chose
// another.
var current atomic.Pointer[kernel]

func init() {
	kernels = append(archKernels(), generic)
	current.Store(kernels[0])
}

func active() *kernel { return current.Load() }

// Path is the name of the kernel path Sgemm uses now: "avx512", "avx2" or
// "generic".
func Path() string { return active().name }

// Paths lists the kernel paths this CPU supports, best first.
func Paths() []string {
	out := make([]string, len(kernels))
	for i, k := range kernels {
		out[i] = k.name
	}
	return out
}

// SetPath makes Sgemm use the named kernel path from now on. It returns
// ErrUnknownPath for a name that is not avx512, avx2 or generic, and
// ErrPathUnavailable for one this CPU cannot run; the path is then unchanged.
func SetPath(name string) error {
	k, err := lookup(name)
	if err != nil {
		return err
	}
	current.Store(k)
	return nil
}

func lookup(name string) (*kernel, error) {
	for _, k := range kernels {
		if k.name == name {
			return k, nil
		}
	}
	switch name {
	case "avx512", "avx2":
		return nil, fmt.Errorf("%w: %q", ErrPathUnavailable, name)
	}
	return nil, fmt.Errorf("%w: %q (want avx512, avx2 or generic)", ErrUnknownPath, name)
}

// kernGeneric is the pure-Go 4x4 micro-kernel.
func kernGeneric(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	var c00, c01, c02, c03, c10, c11, c12, c13 float32
	var c20, c21, c22, c23, c30, c31, c32, c33 float32
	a = a[:4*k]
	b = b[:4*k]
	for p := 0; p < len(a); p += 4 {
		ap := a[p : p+4 : p+4]
		bp := b[p : p+4 : p+4]
		a0, a1, a2, a3 := ap[0], ap[1], ap[2], ap[3]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	acc := [4][4]float32{
		{c00, c01, c02, c03}, {c10, c11, c12, c13},
		{c20, c21, c22, c23}, {c30, c31, c32, c33},
	}
	for i := 0; i < 4; i++ {
		row := c[i*ldc : i*ldc+4 : i*ldc+4]
		if beta == 0 {
			for j := range row {
				row[j] = alpha * acc[i][j]
			}
			continue
		}
		for j := range row {
			row[j] = alpha*acc[i][j] + beta*row[j]
		}
	}
}

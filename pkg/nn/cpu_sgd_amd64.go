//go:build amd64

package nn

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// sgdMomentumAVX512 runs the common SGD update (weight decay, momentum,
// no dampening, not Nesterov, not the first step) on n/16*16 elements with
// zmm FMAs (cpu_sgd_amd64.s). A hardware FMA rounds once to float32, which
// is fma32's definition, so the results are bit-identical to the Go loop.
//
//go:noescape
func sgdMomentumAVX512(p, grad, buf *float32, n int, wd, mom, negLR float32)

// useSGDAsm is whether SGDStep may use sgdMomentumAVX512 (tests turn it off
// to compare with the Go loop).
var useSGDAsm = cpu.X86.HasAVX512F

// sgdMomentumVector updates the leading multiple of 16 elements of p, g
// and buf (equal lengths) and returns how many it did.
func sgdMomentumVector(p, g, buf []float32, wd, mom, negLR float32) int {
	n := len(p) &^ 15
	if !useSGDAsm || n == 0 {
		return 0
	}
	_, _ = g[n-1], buf[n-1]
	sgdMomentumAVX512(unsafe.SliceData(p), unsafe.SliceData(g), unsafe.SliceData(buf), n, wd, mom, negLR)
	return n
}

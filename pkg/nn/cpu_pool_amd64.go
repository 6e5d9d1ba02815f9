//go:build amd64

package nn

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// maxPool3s2RowAVX512 is one output row of a 3x3, stride-2, pad-1
// max-pool (cpu_pool_amd64.s), bit-identical to maxPoolPlane: 16 outputs
// per vector, the same comparisons in the same order.
//
//go:noescape
func maxPool3s2RowAVX512(out, idx, in *float32, w, q, r0, nr int, consts *[3][16]int32)

// usePoolAsm is whether MaxPool2d may use maxPool3s2RowAVX512 (tests turn
// it off to compare with the Go loops).
var usePoolAsm = cpu.X86.HasAVX512F && cpu.X86.HasBMI2

// maxPoolVector pools one plane (in: H x W into out, idx: P x Q) with the
// vector code and reports whether it did (3x3, stride 2, pad 1 only).
func maxPoolVector(out, idx, in []float32, p PoolParams) bool {
	if !usePoolAsm || p.Kernel != 3 || p.Stride != 2 || p.Pad != 1 {
		return false
	}
	P, Q := p.P(), p.Q()
	in, out, idx = in[:p.H*p.W], out[:P*Q], idx[:P*Q]
	for oh := 0; oh < P; oh++ {
		r0, r1 := max(2*oh-1, 0), min(2*oh+2, p.H)
		maxPool3s2RowAVX512(unsafe.SliceData(out[oh*Q:]), unsafe.SliceData(idx[oh*Q:]), unsafe.SliceData(in),
			p.W, Q, r0, r1-r0, &laneTables)
	}
	return true
}

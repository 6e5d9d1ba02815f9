//go:build amd64

package gemm

import "unsafe"

// asmSeg is a Segment with its two 16-lane load/store masks.
type asmSeg struct{ pos, off, mlo, mhi int64 }

// copySegsAVX512 is CopySegments' loop on validated arguments
// (segcopy_amd64.s): rows rows, row r written at dst + r*stride4 bytes from
// src + rowOff[r]*4 bytes.
//
//go:noescape
func copySegsAVX512(dst, src *float32, rowOff *int, rows, stride4 int, segs *asmSeg, nseg int)

// copySegsAsm runs the AVX-512 loop when the active path is avx512
// (SetPath to avx2 or generic keeps the Go loop).
func copySegsAsm(dst []float32, stride int, src []float32, rowOff []int, segs []Segment) bool {
	if active().name != "avx512" || len(segs) > maxAsmSegs {
		return false
	}
	var as [maxAsmSegs]asmSeg
	for i, s := range segs {
		m := uint64(1)<<uint(s.N) - 1
		as[i] = asmSeg{int64(s.Pos), int64(s.Off), int64(m & 0xffff), int64(m >> 16)}
	}
	copySegsAVX512(unsafe.SliceData(dst), unsafe.SliceData(src), unsafe.SliceData(rowOff),
		len(rowOff), 4*stride, &as[0], len(segs))
	return true
}

package gemm

import "fmt"

// Segment is one run of a CopySegments copy: N (1..32) consecutive values
// to row positions Pos.. from source offsets Off.. relative to the row's
// source offset.
type Segment struct{ Pos, N, Off int }

// MaxSegment is the longest Segment CopySegments accepts.
const MaxSegment = 32

// maxAsmSegs bounds the segments of one assembly call (their masks live on
// the stack).
const maxAsmSegs = 256

// CopySegments copies, for every row r < len(rowOff) and every segment s,
//
//	dst[r*stride+s.Pos : r*stride+s.Pos+s.N] = src[rowOff[r]+s.Off : rowOff[r]+s.Off+s.N]
//
// It packs convolution operands whose rows are a few short contiguous runs
// of the input (implicit im2col): on AVX-512 each run is one or two masked
// vector moves. Out-of-range arguments panic with an *ArgError.
func CopySegments(dst []float32, stride int, src []float32, rowOff []int, segs []Segment) {
	if len(rowOff) == 0 || len(segs) == 0 {
		return
	}
	lo, hi := rowOff[0], rowOff[0]
	for _, o := range rowOff {
		lo, hi = min(lo, o), max(hi, o)
	}
	end, srcEnd := 0, 0
	for _, s := range segs {
		if s.N < 1 || s.N > MaxSegment || s.Pos < 0 || s.Off < 0 {
			panic(&ArgError{"segs", fmt.Sprintf("segment %+v", s)})
		}
		end, srcEnd = max(end, s.Pos+s.N), max(srcEnd, s.Off+s.N)
	}
	rows := len(rowOff)
	if lo < 0 || hi+srcEnd > len(src) {
		panic(&ArgError{"src", fmt.Sprintf("len %d < %d needed", len(src), hi+srcEnd)})
	}
	if end > stride && rows > 1 || (rows-1)*stride+end > len(dst) {
		panic(&ArgError{"dst", fmt.Sprintf("len %d, stride %d, %d rows of %d", len(dst), stride, rows, end)})
	}
	if copySegsAsm(dst, stride, src, rowOff, segs) {
		return
	}
	for r, o := range rowOff {
		d, s := dst[r*stride:], src[o:]
		for _, sg := range segs {
			copy(d[sg.Pos:sg.Pos+sg.N], s[sg.Off:sg.Off+sg.N])
		}
	}
}

//go:build !amd64

package gemm

func copySegsAsm(dst []float32, stride int, src []float32, rowOff []int, segs []Segment) bool {
	return false
}

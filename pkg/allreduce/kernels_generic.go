//go:build !amd64

package allreduce

// addF32Blocks is the portable form of the amd64 kernel: the same
// element-wise additions, in the same operand order.
func addF32Blocks(dst, src []float32) {
	n := len(dst) / addF32Block * addF32Block
	src = src[:n]
	for i, x := range src {
		dst[i] += x
	}
}

const addF32Block = 16

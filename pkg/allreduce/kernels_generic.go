//go:build !amd64

package allreduce

// The portable forms of the amd64 block kernels: the same element-wise
// operations, in the same operand order, on len(dst) rounded down to a
// multiple of addF32Block.

func addF32Blocks(dst, src []float32) {
	n := len(dst) / addF32Block * addF32Block
	src = src[:n]
	for i, x := range src {
		dst[i] += x
	}
}

func addF32ToBlocks(dst, a, b []float32) {
	n := len(dst) / addF32Block * addF32Block
	dst, a, b = dst[:n], a[:n], b[:n]
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

func addF32DualBlocks(dst, out, src []float32) {
	n := len(dst) / addF32Block * addF32Block
	dst, out, src = dst[:n], out[:n], src[:n]
	for i := range dst {
		dst[i] += src[i]
		out[i] = dst[i]
	}
}

func copyF32DualBlocks(dst, out, src []float32) {
	n := len(dst) / addF32Block * addF32Block
	copy(dst[:n], src[:n])
	copy(out[:n], src[:n])
}

// Without non-temporal stores the streamed copies are plain copies.

func copyF32DualStreamBlocks(dst, out, src []float32) { copyF32DualBlocks(dst, out, src) }

func copyF32StreamBlocks(dst, src []float32) {
	n := len(dst) / addF32Block * addF32Block
	copy(dst[:n], src[:n])
}

const addF32Block = 16

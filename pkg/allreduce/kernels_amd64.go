package allreduce

// addF32Blocks sets dst[i] = dst[i] + src[i] for every i below len(dst)
// rounded down to a multiple of 16, four SSE2 lanes at a time; it needs
// len(src) >= len(dst) (addF32 checks). Implemented in kernels_amd64.s.
//
//go:noescape
func addF32Blocks(dst, src []float32)

// addF32ToBlocks sets dst[i] = a[i] + b[i] (a the first operand) for every
// i below len(dst) rounded down to a multiple of 16; len(a) and len(b) must
// be >= len(dst) (addF32To checks). Implemented in kernels_amd64.s.
//
//go:noescape
func addF32ToBlocks(dst, a, b []float32)

// addF32DualBlocks sets dst[i] = dst[i] + src[i] and out[i] = dst[i] for
// every i below len(dst) rounded down to a multiple of 16; len(out) and
// len(src) must be >= len(dst) (addF32Dual checks).
//
//go:noescape
func addF32DualBlocks(dst, out, src []float32)

// copyF32DualBlocks sets dst[i] = out[i] = src[i] for every i below
// len(dst) rounded down to a multiple of 16 (copyF32Dual checks).
//
//go:noescape
func copyF32DualBlocks(dst, out, src []float32)

// copyF32DualStreamBlocks is copyF32DualBlocks with dst (16-byte aligned)
// written by non-temporal stores, followed by a store fence (see
// copyF32DualStream).
//
//go:noescape
func copyF32DualStreamBlocks(dst, out, src []float32)

// copyF32StreamBlocks sets dst[i] = src[i] for every i below len(dst)
// rounded down to a multiple of 16 with non-temporal stores (dst 16-byte
// aligned), followed by a store fence.
//
//go:noescape
func copyF32StreamBlocks(dst, src []float32)

// addF32Block is how many elements the block kernels handle per step.
const addF32Block = 16

package allreduce

// addF32Blocks sets dst[i] = dst[i] + src[i] for every i below len(dst)
// rounded down to a multiple of 16, four SSE2 lanes at a time; it needs
// len(src) >= len(dst) (addF32 checks). Implemented in kernels_amd64.s.
//
//go:noescape
func addF32Blocks(dst, src []float32)

// addF32Block is how many elements addF32Blocks handles per step.
const addF32Block = 16

package gemm

// Split is one product cut into chunks for the caller's own goroutines
// (the CPU backend hands them to its team of helper goroutines, which it
// keeps busy anyway). Chunk i computes its slab of C with a Workspace; any
// assignment of chunks to goroutines, in any order, gives the bits Sgemm
// gives.
type Split struct {
	p   problem
	nch int
}

// NewSplit validates an Sgemm call (same arguments and panics as Sgemm,
// threads being the goroutines the caller will use) and cuts it into
// chunks. A product with nothing to multiply (m, n, k or alpha zero) is
// done here and has no chunks.
func NewSplit(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int, threads int) *Split {
	if err := checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		panic(err)
	}
	return newSplit(problem{kern: active(), transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc}, threads)
}

// NewSplitPacker is NewSplit for SgemmPacker's arguments.
func NewSplitPacker(transA bool, m, n, k int, alpha float32, a []float32, lda int,
	bp BPacker, beta float32, c []float32, ldc int, threads int) *Split {
	if err := checkPackerArgs(transA, m, n, k, len(a), lda, bp, len(c), ldc); err != nil {
		panic(err)
	}
	return newSplit(problem{kern: active(), transA: transA, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, bp: bp, beta: beta, c: c, ldc: ldc}, threads)
}

// newSplit cuts p into at most threads chunks (fewer for a small product:
// at least minChunkFlop each).
func newSplit(p problem, threads int) *Split {
	s := &Split{p: p}
	if p.m == 0 || p.n == 0 {
		return s
	}
	if p.k == 0 || p.alpha == 0 {
		scaleC(p.m, p.n, p.beta, p.c, p.ldc)
		return s
	}
	flop := 2 * float64(p.m) * float64(p.n) * float64(p.k)
	threads = max(1, min(threads, int(min(flop/minChunkFlop, maxThreads))))
	s.nch = s.p.plan(threads)
	return s
}

// Chunks is the number of chunks (0: nothing left to compute).
func (s *Split) Chunks() int { return s.nch }

// Chunk computes chunk i (0 <= i < Chunks()) with w's buffers. Different
// chunks may run concurrently (each with its own Workspace); each must run
// exactly once.
func (s *Split) Chunk(w *Workspace, i int) {
	if w.buf == nil || w.buf.kern != s.p.kern {
		w.buf = newBuffers(s.p.kern)
	}
	s.p.chunk(w.buf, i)
}

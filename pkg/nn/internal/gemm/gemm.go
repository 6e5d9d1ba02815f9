// Package gemm is the engine's single-precision matrix product, the kernel
// under convolutions and linear layers on the CPU.
//
// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices,
// where op(X) is X or X^T. The result must be bit-identical whatever the
// number of goroutines used: work is partitioned over C only, and every
// element of C is computed with the same summation order over k.
//
// The implementation follows the Goto/BLIS scheme: op(A) is packed into
// MR-row micro-panels and op(B) into NR-column micro-panels (packing absorbs
// the transposes, so one micro-kernel serves all four cases), the k
// dimension is cut into fixed KC blocks, and a register-blocked micro-kernel
// computes one MR x NR tile of C per call. Micro-kernels exist for AVX-512
// (14x32, zmm), AVX2+FMA (6x16, ymm) and in pure Go (4x4); the best one the
// CPU supports is chosen at start-up, and SetPath forces another (tests,
// benchmarks: go test -args -gemm.path=avx2).
//
// Determinism: every element of C is the sum over k computed by the same
// micro-kernel in the same order (KC blocks in increasing k, each block
// accumulated from zero and then added to C), whatever the number of
// threads and however C is split among them (Split); partial edge tiles go
// through the same kernel via a scratch tile. Results differ between
// kernel paths (different FMA use), never between thread counts.
//
// Concurrency: the package starts no goroutines. Sgemm, SgemmPacker and
// the Workspace methods compute on the calling goroutine and may be called
// from many goroutines at once (a Workspace by one at a time); a caller
// that wants several threads on one product cuts it with NewSplit and runs
// the chunks on its own goroutines (the CPU backend's team does).
package gemm

import (
	"fmt"
	"sync"
)

// Sgemm: C (m x n, leading dimension ldc) = alpha * op(A) * op(B) + beta * C.
// op(A) is m x k: A is m x k (lda >= k) when !transA, k x m (lda >= m) when transA.
// op(B) is k x n: B is k x n (ldb >= n) when !transB, n x k (ldb >= k) when transB.
// When beta == 0, C is not read (NaNs in C do not propagate).
// When alpha == 0 or k == 0, A and B are not read and C = beta*C.
// It runs on the calling goroutine (NewSplit cuts a product for several).
//
// Negative sizes, leading dimensions smaller than the rows they hold, or
// slices too short for the sizes given are programming errors: Sgemm panics
// with a message naming the argument (the kernels are assembly and must not
// read or write outside the slices).
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if err := checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		panic(err)
	}
	runPooled(&problem{kern: active(), transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc})
}

// BPacker supplies op(B) to SgemmPacker without a stored matrix: it writes
// packed blocks of op(B) (k x n) straight into the micro-kernel's layout,
// for instance gathering a convolution's column matrix from the image
// itself (implicit im2col).
type BPacker interface {
	// PackB writes op(B)[p0:p0+kc, j0:j0+nc] into dst as ceil(nc/nr)
	// micro-panels: panel q starts at dst[q*nr*kc], and holds kc groups of
	// nr values (k-major): dst[q*nr*kc + p*nr + c] = op(B)[p0+p, j0+q*nr+c],
	// and 0 for columns at or past nc. scratch (at least nr*kc values) is
	// the calling goroutine's, free for the packer's use during the call.
	// It is called concurrently from several goroutines (on disjoint dst
	// and scratch) and must only read shared state.
	PackB(dst, scratch []float32, nr, p0, kc, j0, nc int)
}

// SgemmPacker is Sgemm with op(B) supplied by bp (k x n) instead of a
// matrix: C = alpha * op(A) * op(B) + beta * C. Given the same values of
// op(B), the result is bit-identical to Sgemm's.
func SgemmPacker(transA bool, m, n, k int, alpha float32, a []float32, lda int,
	bp BPacker, beta float32, c []float32, ldc int) {
	if err := checkPackerArgs(transA, m, n, k, len(a), lda, bp, len(c), ldc); err != nil {
		panic(err)
	}
	runPooled(&problem{kern: active(), transA: transA, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, bp: bp, beta: beta, c: c, ldc: ldc})
}

// ArgError describes an invalid Sgemm argument.
type ArgError struct {
	Arg    string // the argument's name, e.g. "lda"
	Reason string
}

func (e *ArgError) Error() string { return "gemm: bad argument " + e.Arg + ": " + e.Reason }

// checkArgs validates sizes, leading dimensions and slice lengths.
func checkArgs(transA, transB bool, m, n, k, lenA, lda, lenB, ldb, lenC, ldc int) error {
	switch {
	case m < 0:
		return &ArgError{"m", fmt.Sprintf("negative (%d)", m)}
	case n < 0:
		return &ArgError{"n", fmt.Sprintf("negative (%d)", n)}
	case k < 0:
		return &ArgError{"k", fmt.Sprintf("negative (%d)", k)}
	}
	// rows x cols of A, B and C as stored.
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if err := checkMatrix("a", "lda", ar, ac, lenA, lda); err != nil {
		return err
	}
	if err := checkMatrix("b", "ldb", br, bc, lenB, ldb); err != nil {
		return err
	}
	return checkMatrix("c", "ldc", m, n, lenC, ldc)
}

// checkPackerArgs validates SgemmPacker's arguments.
func checkPackerArgs(transA bool, m, n, k, lenA, lda int, bp BPacker, lenC, ldc int) error {
	switch {
	case m < 0:
		return &ArgError{"m", fmt.Sprintf("negative (%d)", m)}
	case n < 0:
		return &ArgError{"n", fmt.Sprintf("negative (%d)", n)}
	case k < 0:
		return &ArgError{"k", fmt.Sprintf("negative (%d)", k)}
	case bp == nil:
		return &ArgError{"bp", "nil"}
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	if err := checkMatrix("a", "lda", ar, ac, lenA, lda); err != nil {
		return err
	}
	return checkMatrix("c", "ldc", m, n, lenC, ldc)
}

func checkMatrix(name, ldName string, rows, cols, length, ld int) error {
	if ld < max(cols, 1) {
		return &ArgError{ldName, fmt.Sprintf("%d < max(1, %d columns)", ld, cols)}
	}
	if rows == 0 || cols == 0 {
		return nil
	}
	if need := (rows-1)*ld + cols; length < need {
		return &ArgError{name, fmt.Sprintf("len %d < %d needed for %dx%d with leading dimension %d",
			length, need, rows, cols, ld)}
	}
	return nil
}

// maxThreads bounds the goroutines one Split plans for; minChunkFlop is
// the least work (2*m*n*k) worth handing to one more goroutine (about
// 20 µs).
const (
	maxThreads   = 256
	minChunkFlop = 2 << 20
)

// runPooled computes p on the calling goroutine with packing buffers from
// a sync.Pool (no allocation once the pool holds some).
func runPooled(p *problem) {
	buf := getBuffers(p.kern)
	var w Workspace
	w.buf = buf
	w.run(p)
	putBuffers(buf)
}

// bufPools holds Sgemm's packing buffers, one sync.Pool per kernel.
var bufPools sync.Map // *kernel -> *sync.Pool

func getBuffers(kn *kernel) *buffers {
	v, ok := bufPools.Load(kn)
	if !ok {
		v, _ = bufPools.LoadOrStore(kn, &sync.Pool{New: func() any { return newBuffers(kn) }})
	}
	return v.(*sync.Pool).Get().(*buffers)
}

func putBuffers(b *buffers) {
	if v, ok := bufPools.Load(b.kern); ok {
		v.(*sync.Pool).Put(b)
	}
}

// scaleC sets C = beta*C (C = 0 when beta == 0, without reading C).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		if beta == 1 {
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// problem is one validated Sgemm call and its split into chunks.
type problem struct {
	kern           *kernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	bp             BPacker  // when not nil, packs op(B) instead of b
	pa             *PackedA // when not nil, op(A) already packed (one chunk only)

	// Chunks: C is cut along one dimension (rows if splitM, else columns)
	// into nch slabs; slab i is [bound(i), bound(i+1)).
	splitM bool
	nch    int
}

// bound is where slab i starts: i/nch of the way along the split
// dimension, rounded to the nearest whole tile so that slabs hold as equal
// a share of the work as tiles allow (edge tiles stay at the matrix edge).
func (p *problem) bound(i int) int {
	dim, tile := p.n, p.kern.nr
	if p.splitM {
		dim, tile = p.m, p.kern.mr
	}
	if i >= p.nch {
		return dim
	}
	return min(dim, (i*dim+p.nch*tile/2)/(p.nch*tile)*tile)
}

// plan decides how C is split among at most threads goroutines and returns
// the number of chunks. The split never changes any element's arithmetic.
func (p *problem) plan(threads int) int {
	mt, nt := ceilDiv(p.m, p.kern.mr), ceilDiv(p.n, p.kern.nr)
	p.splitM, p.nch = false, 1
	if threads == 1 {
		return 1
	}
	// A chunk that splits N packs all of op(A) (m*k values) and its share
	// of op(B); one that splits M packs all of op(B) (k*n). So split the
	// larger of m and n, as long as it has a tile for every thread.
	splitM := p.m > p.n
	if splitM && mt < threads && nt > mt {
		splitM = false
	} else if !splitM && nt < threads && mt > nt {
		splitM = true
	}
	p.splitM = splitM
	if splitM {
		p.nch = min(threads, mt)
		return p.nch
	}
	p.nch = min(threads, nt)
	if nt >= 2*threads && p.n >= 2*threads*p.kern.nc {
		p.nch = 2 * threads // slack against noisy neighbours: chunks stay >= nc wide
	}
	return p.nch
}

// chunk computes slab i of C with the scratch buffers buf.
func (p *problem) chunk(buf *buffers, i int) {
	i0, i1, j0, j1 := 0, p.m, 0, p.n
	if p.splitM {
		i0, i1 = p.bound(i), p.bound(i+1)
	} else {
		j0, j1 = p.bound(i), p.bound(i+1)
	}
	if i0 < i1 && j0 < j1 { // rounding may leave a slab empty
		p.block(buf, i0, i1, j0, j1)
	}
}

// block computes C[i0:i1, j0:j1] with the loop nest
//
//	for ic (MC rows of A)  for pc (KC of k)  pack A
//	  for jc (NC columns of B)  pack B
//	    for each MR micro-panel of A  for each NR micro-panel of B: kernel
//
// The pc loop runs in increasing k for every element, whatever the caller.
func (p *problem) block(buf *buffers, i0, i1, j0, j1 int) {
	kn := p.kern
	mr, nr, kcMax, mcMax, ncMax := kn.mr, kn.nr, kn.kc, kn.mc, kn.nc
	for ic := i0; ic < i1; ic += mcMax {
		mc := min(mcMax, i1-ic)
		for pc := 0; pc < p.k; pc += kcMax {
			kc := min(kcMax, p.k-pc)
			beta := p.beta
			if pc > 0 {
				beta = 1
			}
			apk := buf.a
			if p.pa != nil {
				apk = p.pa.block(ic, mc, pc)
			} else {
				packA(kn, buf.a, p.a, p.lda, p.transA, ic, mc, pc, kc)
			}
			for jc := j0; jc < j1; jc += ncMax {
				nc := min(ncMax, j1-jc)
				if p.bp != nil {
					p.bp.PackB(buf.b, buf.scr, nr, pc, kc, jc, nc)
				} else {
					packB(kn, buf.b, p.b, p.ldb, p.transB, pc, kc, jc, nc)
				}
				for ir := 0; ir < mc; ir += mr {
					ap := apk[ir*kc : (ir+mr)*kc]
					rows := min(mr, mc-ir)
					for jr := 0; jr < nc; jr += nr {
						bp := buf.b[jr*kc : (jr+nr)*kc]
						cols := min(nr, nc-jr)
						off := (ic+ir)*p.ldc + jc + jr
						if rows == mr && cols == nr {
							kn.fn(kc, ap, bp, p.c[off:], p.ldc, p.alpha, beta)
							continue
						}
						// Edge tile: same kernel on a scratch tile.
						t := buf.tile
						if beta != 0 {
							for r := 0; r < rows; r++ {
								copy(t[r*nr:r*nr+cols], p.c[off+r*p.ldc:])
							}
						}
						kn.fn(kc, ap, bp, t, nr, p.alpha, beta)
						for r := 0; r < rows; r++ {
							copy(p.c[off+r*p.ldc:off+r*p.ldc+cols], t[r*nr:])
						}
					}
				}
			}
		}
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// buffers are one goroutine's packing space for one kernel shape.
type buffers struct {
	kern *kernel
	a    []float32 // packed A block: mc/mr micro-panels of kc x mr
	b    []float32 // packed B block: nc/nr micro-panels of kc x nr
	tile []float32 // mr x nr scratch tile for edges
	scr  []float32 // nr x kc scratch for a BPacker
}

func newBuffers(kn *kernel) *buffers {
	mcr := ceilDiv(kn.mc, kn.mr) * kn.mr
	ncr := ceilDiv(kn.nc, kn.nr) * kn.nr
	return &buffers{
		kern: kn,
		a:    make([]float32, mcr*kn.kc),
		b:    make([]float32, ncr*kn.kc),
		tile: make([]float32, kn.mr*kn.nr),
		scr:  make([]float32, kn.nr*kn.kc),
	}
}

// Workspace is one goroutine's packing memory for single-threaded
// products, for callers that run many independent products in parallel
// themselves (each goroutine with its own Workspace): no pool traffic and
// no allocation after the first call. The zero value is ready to use; a
// Workspace must not be used concurrently.
type Workspace struct {
	buf *buffers
}

// run computes p on the calling goroutine with w's buffers (the shared
// tail of the Workspace entry points).
func (w *Workspace) run(p *problem) {
	if p.m == 0 || p.n == 0 {
		return
	}
	if p.k == 0 || p.alpha == 0 {
		scaleC(p.m, p.n, p.beta, p.c, p.ldc)
		return
	}
	if w.buf == nil || w.buf.kern != p.kern {
		w.buf = newBuffers(p.kern)
	}
	p.plan(1)
	p.chunk(w.buf, 0)
}

// SgemmPacker is the package's SgemmPacker on the calling goroutine only,
// with w's buffers. Results are bit-identical to SgemmPacker's.
func (w *Workspace) SgemmPacker(transA bool, m, n, k int, alpha float32, a []float32, lda int,
	bp BPacker, beta float32, c []float32, ldc int) {
	if err := checkPackerArgs(transA, m, n, k, len(a), lda, bp, len(c), ldc); err != nil {
		panic(err)
	}
	kern := active()
	p := &problem{kern: kern, transA: transA, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, bp: bp, beta: beta, c: c, ldc: ldc}
	w.run(p)
}

// Sgemm is the package's Sgemm on the calling goroutine only, with w's
// buffers (no pool traffic, no allocation after the first call). Results
// are bit-identical to Sgemm's for any thread count.
func (w *Workspace) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if err := checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		panic(err)
	}
	kern := active()
	p := &problem{kern: kern, transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc}
	w.run(p)
}

// PackedA is an op(A) (m x k) packed once into the active path's
// micro-panel layout, for many products with the same A
// (Workspace.SgemmPackedA): the per-product packing of A is saved. Its
// storage is the caller's slice; the zero value is not usable.
type PackedA struct {
	kern *kernel
	m, k int
	data []float32
}

// PackedASize is the number of values PackA needs for an m x k op(A) on
// the active path.
func PackedASize(m, k int) int {
	kn := active()
	return ceilDiv(m, kn.mr) * kn.mr * k
}

// PackA packs op(A) (m x k; A is k x m with leading dimension lda when
// transA) into buf (at least PackedASize(m, k) values), laid out as the
// products' cache blocks: rows in blocks of MC, then k in blocks of KC.
// It uses the active path, which must stay active while the result is used.
func PackA(transA bool, m, k int, a []float32, lda int, buf []float32) PackedA {
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	switch {
	case m < 0:
		panic(&ArgError{"m", fmt.Sprintf("negative (%d)", m)})
	case k < 0:
		panic(&ArgError{"k", fmt.Sprintf("negative (%d)", k)})
	}
	if err := checkMatrix("a", "lda", ar, ac, len(a), lda); err != nil {
		panic(err)
	}
	if need := PackedASize(m, k); len(buf) < need {
		panic(&ArgError{"buf", fmt.Sprintf("len %d < %d needed", len(buf), need)})
	}
	kn := active()
	pa := PackedA{kern: kn, m: m, k: k, data: buf}
	for ic := 0; ic < m; ic += kn.mc {
		mc := min(kn.mc, m-ic)
		for pc := 0; pc < k; pc += kn.kc {
			packA(kn, pa.block(ic, mc, pc), a, lda, transA, ic, mc, pc, min(kn.kc, k-pc))
		}
	}
	return pa
}

// block is the packed block of rows [ic, ic+mc) and k from pc: the blocks
// of one row block follow each other in k, each ceil(mc/mr)*mr*kc values.
func (pa *PackedA) block(ic, mc, pc int) []float32 {
	mcr := ceilDiv(mc, pa.kern.mr) * pa.kern.mr
	return pa.data[ic*pa.k+pc*mcr:]
}

// SgemmPackedA is Workspace.Sgemm with op(A) (m x k) taken from pa: C (m x
// n) = alpha * op(A) * op(B) + beta * C, bit-identical to Sgemm on the same
// A. It panics if the active path is not the one pa was packed for.
func (w *Workspace) SgemmPackedA(pa *PackedA, transB bool, n int, alpha float32,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	m, k := pa.m, pa.k
	// op(A) is pa's (already checked): only B and C are validated.
	if err := checkArgs(false, transB, m, n, k, m*k, max(k, 1), len(b), ldb, len(c), ldc); err != nil {
		panic(err)
	}
	kern := active()
	if pa.kern != kern {
		panic(&ArgError{"pa", "packed for path " + pa.kern.name + ", active path is " + kern.name})
	}
	p := &problem{kern: kern, transB: transB, m: m, n: n, k: k,
		alpha: alpha, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, pa: pa}
	w.run(p)
}

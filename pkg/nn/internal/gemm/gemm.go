// Package gemm is the engine's single-precision matrix product, the kernel
// under convolutions and linear layers on the CPU.
//
// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices,
// where op(X) is X or X^T. The result must be bit-identical whatever the
// number of goroutines used: work is partitioned over C only, and every
// element of C is computed with the same summation order over k.
package gemm

// Sgemm: C (m x n, leading dimension ldc) = alpha * op(A) * op(B) + beta * C.
// op(A) is m x k: A is m x k (lda >= k) when !transA, k x m (lda >= m) when transA.
// op(B) is k x n: B is k x n (ldb >= n) when !transB, n x k (ldb >= k) when transB.
// When beta == 0, C is not read (NaNs in C do not propagate).
// threads <= 1 runs on the calling goroutine.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int, threads int) {
	sgemmRef(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemmRef is the plain reference: the definition that faster kernels are
// tested against.
func sgemmRef(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * s
			} else {
				c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
			}
		}
	}
}

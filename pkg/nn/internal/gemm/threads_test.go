package gemm

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// numCPU is the benchmarks' default thread count.
var numCPU = runtime.NumCPU()

// pathFlag picks the kernel path of a test or benchmark run:
// go test -bench . ./pkg/nn/internal/gemm/ -args -gemm.path=avx2
var pathFlag = flag.String("gemm.path", "", "kernel path to make active: avx512, avx2 or generic (default: the best this CPU has)")

func TestMain(m *testing.M) {
	flag.Parse()
	if *pathFlag != "" {
		if err := SetPath(*pathFlag); err != nil {
			fmt.Fprintln(os.Stderr, "-gemm.path:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// runThreads computes p as a caller with threads goroutines does: cut by
// newSplit, each chunk taken from a shared counter by one of the
// goroutines, each goroutine with its own Workspace (the CPU backend's
// team does the same with its helpers).
func runThreads(p problem, threads int) {
	s := newSplit(p, threads)
	var next atomic.Int64
	work := func() {
		var w Workspace
		for {
			i := int(next.Add(1) - 1)
			if i >= s.Chunks() {
				return
			}
			s.Chunk(&w, i)
		}
	}
	var wg sync.WaitGroup
	for g := 1; g < min(threads, s.Chunks()); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

// sgemmThreads is Sgemm on threads goroutines (runThreads) with kernel kn.
func sgemmThreads(kn *kernel, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int, threads int) {
	if err := checkArgs(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		panic(err)
	}
	runThreads(problem{kern: kn, transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc}, threads)
}

// sgemmPackerThreads is SgemmPacker on threads goroutines with kernel kn.
func sgemmPackerThreads(kn *kernel, transA bool, m, n, k int, alpha float32, a []float32, lda int,
	bp BPacker, beta float32, c []float32, ldc int, threads int) {
	if err := checkPackerArgs(transA, m, n, k, len(a), lda, bp, len(c), ldc); err != nil {
		panic(err)
	}
	runThreads(problem{kern: kn, transA: transA, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, bp: bp, beta: beta, c: c, ldc: ldc}, threads)
}

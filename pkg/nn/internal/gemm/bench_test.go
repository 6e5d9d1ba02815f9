package gemm

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shape is one benchmark GEMM from testdata/shapes.txt.
type shape struct {
	name           string
	transA, transB bool
	m, n, k        int
}

func (s shape) flop() float64 { return 2 * float64(s.m) * float64(s.n) * float64(s.k) }

const shapesFile = "testdata/shapes.txt"

func loadShapes(tb testing.TB) []shape {
	tb.Helper()
	f, err := os.Open(shapesFile)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []shape
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		if len(fs) != 6 {
			tb.Fatalf("%s:%d: want 6 fields, got %d", shapesFile, line, len(fs))
		}
		v := make([]int, 5)
		for i := range v {
			if v[i], err = strconv.Atoi(fs[i+1]); err != nil {
				tb.Fatalf("%s:%d: %v", shapesFile, line, err)
			}
		}
		out = append(out, shape{fs[0], v[0] != 0, v[1] != 0, v[2], v[3], v[4]})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// benchOperands makes tight (ld = width) operands for s.
func benchOperands(s shape) *operands {
	rng := rand.New(rand.NewPCG(uint64(s.m), uint64(s.n*s.k)))
	return newOperands(rng, s.transA, s.transB, s.m, s.n, s.k, 1, 0, 0)
}

func benchThreads() int {
	if v, err := strconv.Atoi(os.Getenv("GEMM_THREADS")); err == nil && v > 0 {
		return v
	}
	return numCPU
}

// BenchmarkConvShapes times the active kernel path (-args -gemm.path=NAME
// picks another) on the ResNet-18 convolution shapes, GEMM_THREADS
// goroutines (default: all CPUs; a Split run as the CPU backend runs it),
// and reports GFLOP/s.
func BenchmarkConvShapes(b *testing.B) {
	th := benchThreads()
	for _, s := range loadShapes(b) {
		b.Run(s.name, func(b *testing.B) {
			o := benchOperands(s)
			for b.Loop() {
				sgemmThreads(active(), o.transA, o.transB, o.m, o.n, o.k, 1, o.a, o.lda, o.b, o.ldb, 0, o.c, o.ldc, th)
			}
			reportRates(b, s.flop())
		})
	}
}

// BenchmarkSquare is the classic square GEMM, for comparison with peak.
func BenchmarkSquare(b *testing.B) {
	for _, n := range []int{256, 1024, 2048} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s := shape{name: "square", m: n, n: n, k: n}
			o := benchOperands(s)
			for b.Loop() {
				sgemmThreads(active(), false, false, n, n, n, 1, o.a, o.lda, o.b, o.ldb, 0, o.c, o.ldc, benchThreads())
			}
			reportRates(b, s.flop())
		})
	}
}

// reportRates reports GFLOP/s (wall clock) for flop per iteration.
func reportRates(b *testing.B, flop float64) {
	b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()*1e-9, "GFLOP/s")
}

// gflopsOurs is the median GFLOP/s over reps samples, each at least 2 ms.
func gflopsOurs(s shape, o *operands, threads, reps int) float64 {
	call := func() {
		sgemmThreads(active(), o.transA, o.transB, o.m, o.n, o.k, 1, o.a, o.lda, o.b, o.ldb, 0, o.c, o.ldc, threads)
	}
	call()
	t0 := time.Now()
	call()
	inner := 1
	if one := time.Since(t0); one < 2*time.Millisecond {
		inner = int(2*time.Millisecond/max(one, time.Nanosecond)) + 1
	}
	ts := make([]float64, reps)
	for r := range ts {
		t0 := time.Now()
		for i := 0; i < inner; i++ {
			call()
		}
		ts[r] = time.Since(t0).Seconds() / float64(inner)
	}
	slices.Sort(ts)
	return s.flop() / ts[reps/2] * 1e-9
}

// TestCompareOpenBLAS prints ours vs OpenBLAS on every shape. The two are
// interleaved shape by shape (each round, each shape: both programs back to
// back, the order alternating between rounds), so a neighbour's load hits
// both alike; the table shows medians over rounds. It runs only when
// GEMM_OPENBLAS_BENCH names the compiled scripts/gemm/openblas_bench
// (make bench-gemm does that); GEMM_ROUNDS (default 3) and GEMM_REPS
// (default 5 samples per measurement) set the effort.
func TestCompareOpenBLAS(t *testing.T) {
	bin := os.Getenv("GEMM_OPENBLAS_BENCH")
	if bin == "" {
		t.Skip("GEMM_OPENBLAS_BENCH not set (make bench-gemm sets it)")
	}
	rounds, reps := envInt("GEMM_ROUNDS", 3), envInt("GEMM_REPS", 5)
	th := benchThreads()
	shapes := loadShapes(t)
	ops := make([]*operands, len(shapes))
	for i, s := range shapes {
		ops[i] = benchOperands(s)
	}
	openblas := func(s shape) float64 {
		cmd := exec.Command(bin, shapesFile, strconv.Itoa(reps), s.name)
		cmd.Env = append(os.Environ(), "OPENBLAS_NUM_THREADS="+strconv.Itoa(th))
		if os.Getenv("OPENBLAS_CORETYPE") == "" {
			cmd.Env = append(cmd.Env, "OPENBLAS_CORETYPE=SapphireRapids")
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", bin, err, stderr.String())
		}
		var name string
		var g float64
		if _, err := fmt.Sscanf(string(out), "%s %g", &name, &g); err != nil || name != s.name {
			t.Fatalf("openblas_bench output %q for %s: %v", out, s.name, err)
		}
		return g
	}
	ours := make([][]float64, len(shapes))
	theirs := make([][]float64, len(shapes))
	for r := 0; r < rounds; r++ {
		for i, s := range shapes {
			if r%2 == 0 {
				ours[i] = append(ours[i], gflopsOurs(s, ops[i], th, reps))
				theirs[i] = append(theirs[i], openblas(s))
			} else {
				theirs[i] = append(theirs[i], openblas(s))
				ours[i] = append(ours[i], gflopsOurs(s, ops[i], th, reps))
			}
		}
	}
	var report strings.Builder
	fmt.Fprintf(&report, "gemm path %s, %d threads, GFLOP/s, medians of %d rounds x %d samples (interleaved with OpenBLAS)\n",
		Path(), th, rounds, reps)
	fmt.Fprintf(&report, "%-14s %-3s %5s %6s %5s  %9s %9s %6s\n", "shape", "op", "M", "N", "K", "ours", "openblas", "ratio")
	var ratios []float64
	var sumOurs, sumTheirs float64 // time-weighted: total flop / total time
	for i, s := range shapes {
		o, b := median(ours[i]), median(theirs[i])
		op := map[[2]bool]string{{false, false}: "NN", {true, false}: "TN", {false, true}: "NT", {true, true}: "TT"}[[2]bool{s.transA, s.transB}]
		fmt.Fprintf(&report, "%-14s %-3s %5d %6d %5d  %9.1f %9.1f %6.2f\n", s.name, op, s.m, s.n, s.k, o, b, o/b)
		ratios = append(ratios, o/b)
		sumOurs += s.flop() / o
		sumTheirs += s.flop() / b
	}
	fmt.Fprintf(&report, "gemm: median ratio %.2f, min ratio %.2f, time-weighted ratio %.2f (ours/openblas, same run)\n",
		median(ratios), slices.Min(ratios), sumTheirs/sumOurs)
	fmt.Print(report.String())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkMicroKernel times each path's micro-kernel alone on packed
// panels that stay in cache (kc = the path's KC), one goroutine: the
// ceiling for everything else.
func BenchmarkMicroKernel(b *testing.B) {
	for _, kn := range kernels {
		b.Run(kn.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			const panels = 8 // B panels per A panel, as in the jr loop
			a := randSlice(rng, kn.mr*kn.kc)
			bp := randSlice(rng, panels*kn.nr*kn.kc)
			c := randSlice(rng, kn.mr*kn.nr*panels)
			for b.Loop() {
				for q := 0; q < panels; q++ {
					kn.fn(kn.kc, a, bp[q*kn.nr*kn.kc:], c[q*kn.nr:], panels*kn.nr, 1, 1)
				}
			}
			reportRates(b, 2*float64(kn.mr*kn.nr*kn.kc*panels))
		})
	}
}

package gemm

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// operands is one random test problem with padded leading dimensions.
type operands struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

func newOperands(rng *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad int) *operands {
	o := &operands{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	o.lda = max(ac, 1) + rng.IntN(pad+1)
	o.ldb = max(bc, 1) + rng.IntN(pad+1)
	o.ldc = max(n, 1) + rng.IntN(pad+1)
	o.a = randSlice(rng, max(ar*o.lda, 1))
	o.b = randSlice(rng, max(br*o.ldb, 1))
	o.c = randSlice(rng, max(m*o.ldc, 1))
	return o
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

// check compares got (this package's result for o) against sgemmRef. The
// summation orders differ, so each element may differ by a rounding error
// bounded by gamma_k times the magnitude of its terms; the tolerance is
// 2*(k+2)*eps times that magnitude (computed in float64).
func (o *operands) check(t *testing.T, label string, got []float32) {
	t.Helper()
	want := append([]float32(nil), o.c...)
	sgemmRef(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, want, o.ldc)
	const eps = 1.0 / (1 << 23)
	worst, worstRel := 0.0, 0.0
	bad := 0
	for i := 0; i < o.m; i++ {
		for j := 0; j < o.n; j++ {
			mag := 0.0
			for p := 0; p < o.k; p++ {
				mag += math.Abs(float64(o.at(i, p)) * float64(o.bt(p, j)))
			}
			mag *= math.Abs(float64(o.alpha))
			if o.beta != 0 {
				mag += math.Abs(float64(o.beta) * float64(o.c[i*o.ldc+j]))
			}
			g, w := got[i*o.ldc+j], want[i*o.ldc+j]
			diff := math.Abs(float64(g) - float64(w))
			tol := 2*float64(o.k+2)*eps*mag + 1e-30
			if math.IsNaN(float64(g)) || diff > tol {
				if bad < 5 {
					t.Errorf("%s: C[%d,%d] = %g, want %g (diff %g > tol %g)", label, i, j, g, w, diff, tol)
				}
				bad++
			}
			if diff > worst {
				worst = diff
			}
			if mag > 0 && diff/mag > worstRel {
				worstRel = diff / mag
			}
		}
	}
	// Elements outside the m x n window (padding) must be untouched.
	for i := 0; i < o.m; i++ {
		for j := o.n; j < o.ldc && i*o.ldc+j < len(o.c); j++ {
			if got[i*o.ldc+j] != o.c[i*o.ldc+j] {
				t.Fatalf("%s: padding C[%d,%d] changed", label, i, j)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d elements out of tolerance; worst abs error %g, worst relative %g", label, bad, worst, worstRel)
	}
}

func (o *operands) at(i, p int) float32 {
	if o.transA {
		return o.a[p*o.lda+i]
	}
	return o.a[i*o.lda+p]
}

func (o *operands) bt(p, j int) float32 {
	if o.transB {
		return o.b[j*o.ldb+p]
	}
	return o.b[p*o.ldb+j]
}

// run computes o with kernel kn on threads goroutines (a Split) into a
// copy of C.
func (o *operands) run(kn *kernel, threads int) []float32 {
	got := append([]float32(nil), o.c...)
	if err := checkArgs(o.transA, o.transB, o.m, o.n, o.k, len(o.a), o.lda, len(o.b), o.ldb, len(got), o.ldc); err != nil {
		panic(err)
	}
	sgemmThreads(kn, o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, got, o.ldc, threads)
	return got
}

var transCases = [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}}

func TestSgemmMatchesReference(t *testing.T) {
	sizes := []int{1, 2, 3, 5, 6, 7, 13, 14, 15, 16, 17, 31, 32, 33, 47}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kn := range kernels {
		t.Run(kn.name, func(t *testing.T) {
			for _, tr := range transCases {
				for trial := 0; trial < 40; trial++ {
					m := sizes[rng.IntN(len(sizes))]
					n := sizes[rng.IntN(len(sizes))]
					k := sizes[rng.IntN(len(sizes))]
					alpha := []float32{1, -0.5, 1.7}[rng.IntN(3)]
					beta := []float32{0, 1, 0.25}[rng.IntN(3)]
					o := newOperands(rng, tr[0], tr[1], m, n, k, alpha, beta, 3)
					label := fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d alpha=%g beta=%g", tr[0], tr[1], m, n, k, alpha, beta)
					o.check(t, label, o.run(kn, 1+trial%3))
				}
			}
		})
	}
}

// TestSgemmBlocking covers shapes that cross the cache blocks (k > kc,
// m > mc, n > nc), so several KC passes accumulate into C.
func TestSgemmBlocking(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kn := range kernels {
		t.Run(kn.name, func(t *testing.T) {
			shapes := [][3]int{
				{kn.mc + kn.mr + 1, 37, 9},
				{20, kn.nc + kn.nr + 3, kn.kc + 5},
				{kn.mr*3 + 1, kn.nr*3 - 1, 2*kn.kc + 1},
			}
			for _, s := range shapes {
				for _, tr := range transCases {
					o := newOperands(rng, tr[0], tr[1], s[0], s[1], s[2], 0.75, 0.5, 2)
					label := fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d", tr[0], tr[1], s[0], s[1], s[2])
					o.check(t, label, o.run(kn, 2))
				}
			}
		})
	}
}

// TestSgemmThreadsBitIdentical: the result must not depend on the number of
// goroutines, for N-split and M-split partitions and several KC passes.
func TestSgemmThreadsBitIdentical(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, kn := range kernels {
		t.Run(kn.name, func(t *testing.T) {
			shapes := [][3]int{
				{64, 3*kn.nc + 77, kn.kc + 40},  // wide: split over N
				{kn.mc + 200, 40, 2*kn.kc + 3},  // tall and narrow: split over M
				{kn.mr*5 + 3, kn.nr*7 + 5, 300}, // ragged edges
			}
			for _, s := range shapes {
				for _, tr := range transCases {
					o := newOperands(rng, tr[0], tr[1], s[0], s[1], s[2], 1, 0.5, 1)
					base := o.run(kn, 1)
					for _, th := range []int{2, 3, 4, 7} {
						got := o.run(kn, th)
						for i := range got {
							if math.Float32bits(got[i]) != math.Float32bits(base[i]) {
								t.Fatalf("%v tA=%v tB=%v threads=%d: element %d = %g, threads=1 gave %g",
									s, tr[0], tr[1], th, i, got[i], base[i])
							}
						}
					}
				}
			}
		})
	}
}

// TestSgemmBetaZeroIgnoresNaN: with beta == 0, NaN and Inf in C must not
// reach the result.
func TestSgemmBetaZeroIgnoresNaN(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, kn := range kernels {
		for _, s := range [][3]int{{kn.mr, kn.nr, 5}, {kn.mr + 3, kn.nr + 5, kn.kc + 7}, {3, 2, 1}} {
			o := newOperands(rng, false, true, s[0], s[1], s[2], 1, 0, 0)
			for i := range o.c {
				o.c[i] = float32(math.NaN())
				if i%3 == 0 {
					o.c[i] = float32(math.Inf(-1))
				}
			}
			got := o.run(kn, 2)
			for i, v := range got {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s %v: C[%d] = %g with beta=0", kn.name, s, i, v)
				}
			}
			o.c = make([]float32, len(o.c)) // reference reads C only when beta != 0
			o.check(t, kn.name+" beta=0", got)
		}
	}
}

// TestSgemmDegenerate: k == 0 and alpha == 0 give C = beta*C without
// touching A or B; m == 0 or n == 0 is a no-op.
func TestSgemmDegenerate(t *testing.T) {
	c := []float32{1, 2, 3, 4, 5, 6}
	Sgemm(false, false, 2, 3, 0, 1, nil, 1, nil, 3, 2, c, 3)
	want := []float32{2, 4, 6, 8, 10, 12}
	for i := range c {
		if c[i] != want[i] {
			t.Fatalf("k=0: C = %v, want %v", c, want)
		}
	}
	nan := float32(math.NaN())
	a := []float32{nan, nan}
	b := []float32{nan, nan, nan}
	Sgemm(false, false, 2, 3, 1, 0, a, 1, b, 3, 0, c, 3)
	for i := range c {
		if c[i] != 0 {
			t.Fatalf("alpha=0 beta=0: C = %v, want zeros", c)
		}
	}
	Sgemm(false, false, 0, 3, 4, 1, nil, 4, make([]float32, 12), 3, 1, nil, 3)
}

func TestSgemmBadArguments(t *testing.T) {
	cases := []struct {
		name                          string
		tA, tB                        bool
		m, n, k, la, lda, lb, ldb, lc int
		ldc                           int
		arg                           string
	}{
		{"negative m", false, false, -1, 2, 2, 4, 2, 4, 2, 4, 2, "m"},
		{"lda too small", false, false, 2, 2, 3, 6, 2, 6, 2, 4, 2, "lda"},
		{"lda too small transA", true, false, 4, 2, 3, 12, 3, 6, 2, 8, 2, "lda"},
		{"a too short", false, false, 2, 2, 2, 3, 2, 4, 2, 4, 2, "a"},
		{"b too short transB", false, true, 2, 3, 2, 4, 2, 5, 2, 6, 3, "b"},
		{"c too short", false, false, 2, 2, 2, 4, 2, 4, 2, 3, 2, "c"},
		{"ldc too small", false, false, 2, 3, 2, 4, 2, 6, 3, 6, 2, "ldc"},
	}
	for _, tc := range cases {
		err := checkArgs(tc.tA, tc.tB, tc.m, tc.n, tc.k, tc.la, tc.lda, tc.lb, tc.ldb, tc.lc, tc.ldc)
		var ae *ArgError
		if !errors.As(err, &ae) || ae.Arg != tc.arg {
			t.Errorf("%s: err = %v, want an ArgError for %q", tc.name, err, tc.arg)
		}
	}
	if err := checkArgs(false, false, 2, 2, 2, 4, 2, 4, 2, 4, 2); err != nil {
		t.Fatalf("valid arguments rejected: %v", err)
	}
	defer func() {
		if _, ok := recover().(*ArgError); !ok {
			t.Fatal("Sgemm with a short slice did not panic with an ArgError")
		}
	}()
	Sgemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
}

func TestSetPath(t *testing.T) {
	defer current.Store(current.Load())
	for _, name := range Paths() {
		if err := SetPath(name); err != nil || Path() != name {
			t.Fatalf("SetPath(%q) = %v, Path() = %q", name, err, Path())
		}
	}
	if err := SetPath("sse9"); !errors.Is(err, ErrUnknownPath) {
		t.Fatalf("SetPath(sse9) = %v, want ErrUnknownPath", err)
	}
	if Paths()[len(Paths())-1] != "generic" {
		t.Fatalf("Paths() = %v, want generic last", Paths())
	}
	for _, name := range []string{"avx512", "avx2"} {
		err := SetPath(name)
		if _, lerr := lookup(name); (lerr == nil) != (err == nil) {
			t.Fatalf("SetPath(%q) = %v inconsistent with Paths() %v", name, err, Paths())
		}
		if err != nil && !errors.Is(err, ErrPathUnavailable) {
			t.Fatalf("SetPath(%q) = %v, want ErrPathUnavailable", name, err)
		}
	}
}

// TestSgemmConcurrentCalls: many goroutines calling Sgemm (sharing the
// buffer pool) and running Splits at once all get the single-threaded
// answer.
func TestSgemmConcurrentCalls(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	kn := active()
	o := newOperands(rng, false, false, 70, 300, 200, 1, 0, 0)
	want := o.run(kn, 1)
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for r := 0; r < 5; r++ {
				got := o.run(kn, 3)
				if g%2 == 0 {
					got = append([]float32(nil), o.c...)
					Sgemm(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, got, o.ldc)
				}
				for i := range got {
					if got[i] != want[i] {
						errs <- fmt.Errorf("element %d = %g, want %g", i, got[i], want[i])
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSgemmNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	o := newOperands(rng, false, false, 64, 512, 300, 1, 0, 0)
	c := make([]float32, len(o.c))
	Sgemm(false, false, o.m, o.n, o.k, 1, o.a, o.lda, o.b, o.ldb, 0, c, o.ldc) // warm the pool
	// AllocsPerRun's mean is an integer: a rare runtime-internal burst
	// rounds to 0 over 100 runs, one allocation per call does not.
	allocs := testing.AllocsPerRun(100, func() {
		Sgemm(false, false, o.m, o.n, o.k, 1, o.a, o.lda, o.b, o.ldb, 0, c, o.ldc)
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per call, want 0", allocs)
	}
}

// TestPlanBalanced: slabs cover the split dimension exactly once, start on
// tile boundaries, and hold as even a share as whole tiles allow.
func TestPlanBalanced(t *testing.T) {
	for _, kn := range kernels {
		for _, s := range [][3]int{{64, 147, 32768}, {4608, 128, 512}, {64, 8192, 576}, {5, 7, 1000}, {700, 33, 300}} {
			for _, th := range []int{2, 3, 4, 16} {
				p := &problem{kern: kn, m: s[0], n: s[1], k: s[2]}
				nch := p.plan(th)
				dim, tile := p.n, kn.nr
				if p.splitM {
					dim, tile = p.m, kn.mr
				}
				if p.bound(0) != 0 || p.bound(nch) != dim {
					t.Fatalf("%s %v threads=%d: slabs span [%d,%d), want [0,%d)", kn.name, s, th, p.bound(0), p.bound(nch), dim)
				}
				biggest := 0
				for i := 0; i < nch; i++ {
					lo, hi := p.bound(i), p.bound(i+1)
					if hi < lo || lo%tile != 0 {
						t.Fatalf("%s %v threads=%d: slab %d is [%d,%d)", kn.name, s, th, i, lo, hi)
					}
					biggest = max(biggest, hi-lo)
				}
				// Nearest-tile rounding: no slab exceeds the even share by
				// more than one tile.
				if even := ceilDiv(dim, nch); biggest > even+tile {
					t.Errorf("%s %v threads=%d: largest slab %d, even share %d", kn.name, s, th, biggest, even)
				}
			}
		}
	}
}

// TestSplitMatchesSgemm: a product computed chunk by chunk through Split
// (chunks in reverse order, alternating between two Workspaces) is
// bit-identical to Sgemm, for plain and packer B operands, transposes and
// several thread counts; degenerate products are done by NewSplit.
func TestSplitMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, sz := range [][3]int{{128, 1024, 300}, {700, 64, 513}, {5, 3, 2}, {64, 640, 256}} {
		for _, tr := range [][2]bool{{false, false}, {true, true}, {false, true}} {
			o := newOperands(rng, tr[0], tr[1], sz[0], sz[1], sz[2], 1.5, 0.5, 3)
			want := append([]float32(nil), o.c...)
			Sgemm(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, want, o.ldc)
			for _, threads := range []int{1, 2, 3, 8} {
				for _, packer := range []bool{false, true} {
					got := append([]float32(nil), o.c...)
					var s *Split
					if packer {
						s = NewSplitPacker(o.transA, o.m, o.n, o.k, o.alpha, o.a, o.lda, matPacker{o}, o.beta, got, o.ldc, threads)
					} else {
						s = NewSplit(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, got, o.ldc, threads)
					}
					var ws [2]Workspace
					for i := s.Chunks() - 1; i >= 0; i-- {
						s.Chunk(&ws[i%2], i)
					}
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%v %v threads %d packer %v: c[%d] = %v, Sgemm gives %v",
								sz, tr, threads, packer, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
	c := []float32{1, 2}
	if s := NewSplit(false, false, 1, 2, 0, 1, nil, 1, nil, 2, 0, c, 2, 2); s.Chunks() != 0 || c[0] != 0 || c[1] != 0 {
		t.Fatalf("k = 0: %d chunks, c = %v; want 0 chunks, c = 0", s.Chunks(), c)
	}
}

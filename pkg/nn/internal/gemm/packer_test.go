package gemm

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// matPacker packs op(B) from a stored matrix, element by element: the
// reference for SgemmPacker.
type matPacker struct{ o *operands }

func (mp matPacker) PackB(dst, scratch []float32, nr, p0, kc, j0, nc int) {
	clear(scratch[:nr*kc]) // the scratch is ours to use
	for q := 0; q*nr < nc; q++ {
		for p := 0; p < kc; p++ {
			for c := 0; c < nr; c++ {
				v := float32(0)
				if j := q*nr + c; j < nc {
					v = mp.o.bt(p0+p, j0+j)
				}
				dst[q*nr*kc+p*nr+c] = v
			}
		}
	}
}

// TestSgemmPackerMatchesSgemm: with op(B) supplied by a packer, results are
// bit-identical to Sgemm on the stored matrix, on every path, for 1 and 3
// threads, several KC/NC blocks and ragged edges.
func TestSgemmPackerMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, kn := range kernels {
		for _, sz := range [][3]int{{1, 1, 1}, {15, 33, 17}, {64, 600, 300}, {70, 130, 600}, {3, 1100, 20}} {
			for _, tr := range transCases {
				o := newOperands(rng, tr[0], tr[1], sz[0], sz[1], sz[2], 0.75, 0.5, 3)
				for _, threads := range []int{1, 3} {
					want := o.run(kn, threads)
					got := append([]float32(nil), o.c...)
					sgemmPackerThreads(kn, o.transA, o.m, o.n, o.k, o.alpha, o.a, o.lda, matPacker{o}, o.beta, got, o.ldc, threads)
					// The same through a Workspace (the active path).
					old := active()
					current.Store(kn)
					ws := append([]float32(nil), o.c...)
					var w Workspace
					w.SgemmPacker(o.transA, o.m, o.n, o.k, o.alpha, o.a, o.lda, matPacker{o}, o.beta, ws, o.ldc)
					current.Store(old)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) || math.Float32bits(ws[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s %v %v threads %d: c[%d] = %v (workspace %v), Sgemm gives %v", kn.name, sz, tr, threads, i, got[i], ws[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestWorkspaceSgemmMatchesSgemm: Workspace.Sgemm is bit-identical to
// Sgemm on every path and transpose case, with one Workspace reused across
// shapes and paths.
func TestWorkspaceSgemmMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var w Workspace
	for _, kn := range kernels {
		for _, sz := range [][3]int{{1, 1, 1}, {15, 33, 17}, {70, 130, 600}} {
			for _, tr := range transCases {
				o := newOperands(rng, tr[0], tr[1], sz[0], sz[1], sz[2], 0.75, 0.5, 3)
				want := o.run(kn, 3)
				old := active()
				current.Store(kn)
				got := append([]float32(nil), o.c...)
				w.Sgemm(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, got, o.ldc)
				current.Store(old)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %v %v: c[%d] = %v, Sgemm gives %v", kn.name, sz, tr, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestSgemmPackedAMatchesSgemm: products with a pre-packed A are
// bit-identical to Sgemm on every path, for shapes with several MC and KC
// blocks and ragged edges, and one packing serves several products.
func TestSgemmPackedAMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var w Workspace
	for _, kn := range kernels {
		old := active()
		current.Store(kn)
		for _, sz := range [][3]int{{1, 1, 1}, {15, 33, 17}, {1100, 70, 600}, {70, 130, 300}} {
			for _, tr := range transCases {
				o := newOperands(rng, tr[0], tr[1], sz[0], sz[1], sz[2], 0.75, 0.5, 3)
				pa := PackA(o.transA, o.m, o.k, o.a, o.lda, make([]float32, PackedASize(o.m, o.k)))
				for rep := 0; rep < 2; rep++ {
					want := o.run(kn, 1)
					got := append([]float32(nil), o.c...)
					w.SgemmPackedA(&pa, o.transB, o.n, o.alpha, o.b, o.ldb, o.beta, got, o.ldc)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s %v %v: c[%d] = %v, Sgemm gives %v", kn.name, sz, tr, i, got[i], want[i])
						}
					}
				}
			}
		}
		current.Store(old)
	}
}

// TestPackedABadArguments: a short buffer, a short A and a PackedA used
// after the active path changed are refused with the argument's name.
func TestPackedABadArguments(t *testing.T) {
	a := make([]float32, 12)
	var w Workspace
	for _, tc := range []struct {
		arg string
		f   func()
	}{
		{"buf", func() { PackA(false, 3, 4, a, 4, make([]float32, 1)) }},
		{"a", func() { PackA(false, 4, 4, a, 4, make([]float32, PackedASize(4, 4))) }},
		{"m", func() { PackA(false, -1, 4, a, 4, nil) }},
		{"pa", func() {
			pa := PackA(false, 3, 4, a, 4, make([]float32, PackedASize(3, 4)))
			old := active()
			defer current.Store(old)
			for _, kn := range kernels {
				if kn != old {
					current.Store(kn)
					break
				}
			}
			if active() == old {
				panic(&ArgError{"pa", "only one path on this CPU"}) // nothing to switch to
			}
			w.SgemmPackedA(&pa, false, 2, 1, make([]float32, 8), 2, 0, make([]float32, 6), 2)
		}},
	} {
		func() {
			defer func() {
				var ae *ArgError
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", tc.arg)
				} else if err, ok := r.(error); !ok || !errors.As(err, &ae) || ae.Arg != tc.arg {
					t.Errorf("%s: panic %v", tc.arg, r)
				}
			}()
			tc.f()
		}()
	}
}

func TestSgemmPackerBadArguments(t *testing.T) {
	a, c := make([]float32, 4), make([]float32, 4)
	o := &operands{b: make([]float32, 4), ldb: 2}
	for _, tc := range []struct {
		arg string
		f   func()
	}{
		{"bp", func() { SgemmPacker(false, 2, 2, 2, 1, a, 2, nil, 0, c, 2) }},
		{"m", func() { SgemmPacker(false, -1, 2, 2, 1, a, 2, matPacker{o}, 0, c, 2) }},
		{"a", func() { SgemmPacker(false, 2, 2, 3, 1, a, 3, matPacker{o}, 0, c, 2) }},
		{"ldc", func() { SgemmPacker(false, 2, 2, 2, 1, a, 2, matPacker{o}, 0, c, 1) }},
	} {
		func() {
			defer func() {
				var ae *ArgError
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", tc.arg)
				} else if err, ok := r.(error); !ok || !errors.As(err, &ae) || ae.Arg != tc.arg {
					t.Errorf("%s: panic %v", tc.arg, r)
				}
			}()
			tc.f()
		}()
	}
}

// BenchmarkSmallM compares a 64-row product (ResNet's 64-channel layers:
// M = output channels) with its transpose (M = pixels, N = 64), one thread.
func BenchmarkSmallM(b *testing.B) {
	for _, s := range []shape{
		{name: "64x16384x576", m: 64, n: 16384, k: 576},
		{name: "16384x64x576", m: 16384, n: 64, k: 576},
		{name: "128x4096x1152", m: 128, n: 4096, k: 1152},
		{name: "4096x128x1152", m: 4096, n: 128, k: 1152},
	} {
		b.Run(s.name, func(b *testing.B) {
			o := benchOperands(s)
			for b.Loop() {
				Sgemm(false, false, o.m, o.n, o.k, 1, o.a, o.lda, o.b, o.ldb, 0, o.c, o.ldc)
			}
			reportRates(b, s.flop())
		})
	}
}

package allreduce

import (
	"math"
	"math/rand"
	"testing"
)

// TestAddF32MatchesScalar checks the SIMD kernel against the plain loop,
// bit for bit, for every length up to 70 and every start offset mod 4.
func TestAddF32MatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for n := 0; n <= 70; n++ {
		for off := 0; off < 4; off++ {
			src := make([]float32, n+off)
			dst := make([]float32, n+off)
			for i := range src {
				src[i] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.Intn(40)-20)))
				dst[i] = float32(rng.NormFloat64())
			}
			if n > 3 {
				src[off+1] = float32(math.Inf(1))
				dst[off+2] = float32(math.NaN())
			}
			want := append([]float32(nil), dst...)
			for i := off; i < n+off; i++ {
				want[i] += src[i]
			}
			addF32(dst[off:], src[off:])
			for i := range dst {
				if math.Float32bits(dst[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d off=%d: element %d is %v (%#x), want %v (%#x)", n, off, i, dst[i], math.Float32bits(dst[i]), want[i], math.Float32bits(want[i]))
				}
			}
		}
	}
}

// TestFusedKernelsMatchScalar checks addF32To, addF32Dual, copyF32Dual and
// the non-temporal copyF32DualStream and copyF32Stream (every alignment of
// dst, so their scalar heads and tails too) against plain loops, bit for bit (NaN and Inf included), for every
// length up to 70 and every start offset mod 4.
func TestFusedKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.Intn(40)-20)))
		}
		if n > 5 {
			v[rng.Intn(n)] = float32(math.Inf(-1))
			v[rng.Intn(n)] = math.Float32frombits(0x7fc00000 | uint32(rng.Intn(1<<20))) // NaN with a payload
		}
		return v
	}
	same := func(name string, n, off int, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s n=%d off=%d: element %d is %#x, want %#x", name, n, off, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
	}
	for n := 0; n <= 70; n++ {
		for off := 0; off < 4; off++ {
			a, b, out := vec(n+off), vec(n+off), vec(n+off)
			want := append([]float32(nil), out...)
			for i := off; i < n+off; i++ {
				want[i] = a[i] + b[i]
			}
			addF32To(out[off:], a[off:], b[off:])
			same("addF32To", n, off, out, want)

			dst, fwd, src := vec(n+off), vec(n+off), vec(n+off)
			wantDst, wantFwd := append([]float32(nil), dst...), append([]float32(nil), fwd...)
			for i := off; i < n+off; i++ {
				wantDst[i] += src[i]
				wantFwd[i] = wantDst[i]
			}
			addF32Dual(dst[off:], fwd[off:], src[off:])
			same("addF32Dual dst", n, off, dst, wantDst)
			same("addF32Dual out", n, off, fwd, wantFwd)

			dst, fwd, src = vec(n+off), vec(n+off), vec(n+off)
			wantDst, wantFwd = append([]float32(nil), dst...), append([]float32(nil), fwd...)
			copy(wantDst[off:], src[off:])
			copy(wantFwd[off:], src[off:])
			copyF32Dual(dst[off:], fwd[off:], src[off:])
			same("copyF32Dual dst", n, off, dst, wantDst)
			same("copyF32Dual out", n, off, fwd, wantFwd)

			dst, fwd = vec(n+off), vec(n+off)
			wantDst, wantFwd = append([]float32(nil), dst...), append([]float32(nil), fwd...)
			copy(wantDst[off:], src[off:])
			copy(wantFwd[off:], src[off:])
			copyF32DualStream(dst[off:], fwd[off:], src[off:])
			same("copyF32DualStream dst", n, off, dst, wantDst)
			same("copyF32DualStream out", n, off, fwd, wantFwd)

			dst = vec(n + off)
			wantDst = append([]float32(nil), dst...)
			copy(wantDst[off:], src[off:])
			copyF32Stream(dst[off:], src[off:])
			same("copyF32Stream", n, off, dst, wantDst)
		}
	}
}

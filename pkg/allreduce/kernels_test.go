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

package nn

import (
	"math"
	"testing"
)

// TestSGDVectorPathBitIdentical: the vector SGD update (where the CPU has
// one) gives the Go loop's bits, over lengths with ragged tails and values
// that include zeros, subnormals, infinities and NaN.
func TestSGDVectorPathBitIdentical(t *testing.T) {
	if !useSGDAsm {
		t.Skip("no vector SGD path on this CPU")
	}
	r := NewRNG(9)
	for _, n := range []int{1, 15, 16, 17, 100, 4099, 70001} {
		p0 := f32s(randVec(r, n, 1))
		g := f32s(randVec(r, n, 0.1))
		buf0 := f32s(randVec(r, n, 0.1))
		for i, v := range []float32{0, 1e-40, -1e-40, float32(math.Inf(1)), float32(math.NaN()), 3e38, -3e38} {
			if i*7 < n {
				p0[i*7], g[(i*5)%n], buf0[(i*3)%n] = v, v, v
			}
		}
		o := SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}
		run := func(vec bool) (p, buf []float32) {
			defer func(old bool) { useSGDAsm = old }(useSGDAsm)
			useSGDAsm = vec
			pt := hostTensor(f64s(p0), n)
			bt := hostTensor(f64s(buf0), n)
			NewCPU(2).SGDStep(pt, hostTensor(f64s(g), n), bt, o, false)
			return pt.Data, bt.Data
		}
		pv, bv := run(true)
		pg, bg := run(false)
		for i := range pv {
			same := func(a, b float32) bool {
				return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
			}
			if !same(pv[i], pg[i]) || !same(bv[i], bg[i]) {
				t.Fatalf("n %d, element %d: vector p %v buf %v, Go loop p %v buf %v", n, i, pv[i], bv[i], pg[i], bg[i])
			}
		}
	}
}

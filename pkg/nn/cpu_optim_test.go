package nn

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// exactFMA32 is a*b+c computed exactly with big.Float and rounded once to
// float32 (nearest even): the reference for fma32.
func exactFMA32(a, b, c float32) float32 {
	x := new(big.Float).SetPrec(400).SetFloat64(float64(a))
	x.Mul(x, new(big.Float).SetPrec(400).SetFloat64(float64(b)))
	x.Add(x, new(big.Float).SetPrec(400).SetFloat64(float64(c)))
	f, _ := x.Float32() // callers compare zeros without their sign
	return f
}

func TestFMA32DoubleRoundingCase(t *testing.T) {
	// (1+2^-12)^2 = 1 + 2^-11 + 2^-24 is halfway between two float32
	// values; a tiny c pushes the exact result above the midpoint. Rounding
	// through float64 lands exactly on the midpoint and ties to even (down).
	a := float32(1 + 1.0/4096)
	c := float32(math.Ldexp(1, -80))
	want := float32(1 + 1.0/2048 + 1.0/(1<<23))
	naive := float32(math.FMA(float64(a), float64(a), float64(c)))
	if naive == want {
		t.Fatalf("test case does not exercise double rounding: naive %v", naive)
	}
	if got := fma32(a, a, c); got != want {
		t.Fatalf("fma32 = %.10g, want %.10g", got, want)
	}
	if got := fma32(a, a, -c); got != float32(1+1.0/2048) {
		t.Fatalf("fma32 with -c = %.10g, want %.10g", got, float32(1+1.0/2048))
	}
}

func TestFMA32MatchesExactRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func() float32 {
		// Random significand and a wide exponent range, both signs.
		m := r.Float64() + 0.5
		e := r.IntN(140) - 75 // products reach float32 subnormals and overflow
		if r.IntN(2) == 0 {
			m = -m
		}
		return float32(math.Ldexp(m, e))
	}
	n := 200000
	if testing.Short() {
		n = 20000
	}
	for i := 0; i < n; i++ {
		a, b, c := rnd(), rnd(), rnd()
		if i%3 == 0 { // near-cancellation cases
			c = -float32(float64(a) * float64(b))
		}
		if got, want := fma32(a, b, c), exactFMA32(a, b, c); math.Float32bits(got) != math.Float32bits(want) && !(got == 0 && want == 0) {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
		}
	}
	for _, c := range [][3]float32{
		{float32(math.Inf(1)), 1, 1}, {1, 1, float32(math.Inf(-1))}, {float32(math.NaN()), 1, 1},
		{math.MaxFloat32, 2, 0}, {0, 0, 0}, {1e-30, 1e-30, 0},
	} {
		got, want := fma32(c[0], c[1], c[2]), float32(math.FMA(float64(c[0]), float64(c[1]), float64(c[2])))
		if !(got == want || (got != got && want != want)) {
			t.Errorf("fma32%v = %v, want %v", c, got, want)
		}
	}
}

// kernelCase runs every optimizer kernel with the given thread count on
// n-element tensors and returns all outputs concatenated.
func kernelOutputs(threads, n int) []float32 {
	c := NewCPU(threads)
	r := rand.New(rand.NewPCG(7, 8))
	fill := func() *Tensor {
		t := NewTensor(n)
		for i := range t.Data {
			t.Data[i] = float32(r.NormFloat64())
		}
		return t
	}
	abs := func(t *Tensor) *Tensor {
		for i, v := range t.Data {
			t.Data[i] = float32(math.Abs(float64(v)))
		}
		return t
	}
	var out []float32
	p, g, buf := fill(), fill(), fill()
	c.SGDStep(p, g, buf, SGDParams{LR: 0.1, Momentum: 0.9, Dampening: 0.1, WeightDecay: 1e-4}, false)
	out = append(append(out, p.Data...), buf.Data...)
	p, g, m, v, vm := fill(), fill(), fill(), abs(fill()), abs(fill())
	c.AdamStep(p, g, m, v, vm, AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2, AMSGrad: true, Step: 3})
	out = append(append(append(append(out, p.Data...), m.Data...), v.Data...), vm.Data...)
	p, g, s := fill(), fill(), abs(fill())
	c.AdagradStep(p, g, s, AdagradParams{LR: 1e-2, LRDecay: 1e-3, WeightDecay: 1e-4, Eps: 1e-10, Step: 4})
	out = append(append(out, p.Data...), s.Data...)
	p, g, sq, b2, ga := fill(), fill(), abs(fill()), fill(), fill()
	for i := range sq.Data { // keep sq - ga^2 positive after the update
		sq.Data[i] += ga.Data[i] * ga.Data[i]
	}
	c.RMSpropStep(p, g, sq, b2, ga, RMSpropParams{LR: 1e-2, Alpha: 0.99, Eps: 1e-8, WeightDecay: 1e-4, Momentum: 0.9, Centered: true})
	out = append(append(append(append(out, p.Data...), sq.Data...), b2.Data...), ga.Data...)
	return out
}

func TestOptimKernelsThreadInvariant(t *testing.T) {
	n := 3*elemGrain + 17 // several goroutine ranges and a ragged tail
	one := kernelOutputs(1, n)
	for _, threads := range []int{2, 3, 8} {
		got := kernelOutputs(threads, n)
		for i := range one {
			if math.Float32bits(one[i]) != math.Float32bits(got[i]) {
				t.Fatalf("%d threads: element %d = %v, 1 thread gave %v", threads, i, got[i], one[i])
			}
		}
	}
}

// TestSGDKernelHandValues checks two SGD-with-momentum steps worked out by
// hand: p=1, g=0.5, lr=0.1, momentum=0.9.
func TestSGDKernelHandValues(t *testing.T) {
	c := NewCPU(1)
	p, _ := FromSlice([]float32{1}, 1)
	g, _ := FromSlice([]float32{0.5}, 1)
	buf := NewTensor(1)
	o := SGDParams{LR: 0.1, Momentum: 0.9}
	c.SGDStep(p, g, buf, o, true) // buf = 0.5; p = 1 - 0.05
	if buf.Data[0] != 0.5 || p.Data[0] != float32(0.95) {
		t.Fatalf("step 1: p=%v buf=%v, want 0.95, 0.5", p.Data[0], buf.Data[0])
	}
	c.SGDStep(p, g, buf, o, false) // buf = 0.45+0.5 = 0.95; p = 0.95 - 0.095 = 0.855
	if math.Abs(float64(buf.Data[0])-0.95) > 1e-7 || math.Abs(float64(p.Data[0])-0.855) > 1e-7 {
		t.Fatalf("step 2: p=%v buf=%v, want 0.855, 0.95", p.Data[0], buf.Data[0])
	}
}

package nn

import (
	"math"
	"testing"
)

// specials are values whose ReLU and mask handling must match the
// definitions exactly.
var specials = []float32{0, float32(math.Copysign(0, -1)), 1, -1, 1e-45, -1e-45,
	float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.Float32frombits(0xffc00000), // negative NaN
	math.MaxFloat32, -math.MaxFloat32}

func TestReLUBranchFreeMatchesDefinition(t *testing.T) {
	for _, v := range specials {
		want := v
		if !(v > 0) && v == v {
			want = 0
		}
		if got := relu32(v); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("relu32(%v [%08x]) = %08x, want %08x", v, math.Float32bits(v), math.Float32bits(got), math.Float32bits(want))
		}
		for _, g := range []float32{3, float32(math.NaN()), -2} {
			want := float32(0)
			if v > 0 {
				want = g
			}
			got := math.Float32frombits(math.Float32bits(g) & positiveMask(v))
			if math.Float32bits(got) != math.Float32bits(want) {
				t.Errorf("mask(y=%v [%08x]) of %v = %v, want %v", v, math.Float32bits(v), g, got, want)
			}
		}
	}
}

// fusedInputs returns a (n,c,h,w) tensor of random values with the
// specials sprinkled in.
func fusedInputs(r *RNG, n, c, h, w int) *Tensor {
	x := hostTensor(randVec(r, n*c*h*w, 1), n, c, h, w)
	for i, v := range specials {
		x.Data[(i*7919)%len(x.Data)] = v
	}
	return x
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %v [%08x], separate ops give %v [%08x]", what, i,
				got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// TestFusedOpsMatchSeparateOps: every FusedOps op is bit-identical to the
// ops it replaces, for 1 and 3 threads.
func TestFusedOpsMatchSeparateOps(t *testing.T) {
	const n, c, h, w = 3, 5, 7, 9
	for _, threads := range []int{1, 3} {
		b := NewCPU(threads)
		r := NewRNG(7)
		x := fusedInputs(r, n, c, h, w)
		mean := hostTensor(randVec(r, c, 1), c)
		inv := hostTensor(randVec(r, c, 1), c)
		for i := range inv.Data {
			inv.Data[i] = float32(math.Abs(float64(inv.Data[i]))) + 0.1
		}
		gamma := hostTensor(randVec(r, c, 1), c)
		beta := hostTensor(randVec(r, c, 1), c)

		want := b.New(n, c, h, w)
		b.BatchNormForward(want, x, mean, inv, gamma, beta)
		b.ReLU(want, want)
		got := b.New(n, c, h, w)
		b.BatchNormReLUForward(got, x, mean, inv, gamma, beta)
		sameBits(t, "BatchNormReLUForward", got.Data, want.Data)

		a := fusedInputs(r, n, c, h, w)
		b.Add(want, a, x)
		b.ReLU(want, want)
		b.Copy(got, a)
		b.AddReLU(got, got, x) // aliasing y and a
		sameBits(t, "AddReLU", got.Data, want.Data)

		y := fusedInputs(r, n, c, h, w)
		dy := hostTensor(randVec(r, n*c*h*w, 1), n, c, h, w)
		dy2 := b.New(n, c, h, w)
		b.Copy(dy2, dy)
		s1, s2, f1, f2 := b.New(c), b.New(c), b.New(c), b.New(c)
		b.ReLUBackward(dy, dy, y)
		b.BatchNormBackwardStats(s1, s2, dy, x, mean, inv)
		b.ReLUBatchNormBackwardStats(f1, f2, dy2, y, x, mean, inv)
		sameBits(t, "masked dy", dy2.Data, dy.Data)
		sameBits(t, "sumDy", f1.Data, s1.Data)
		sameBits(t, "sumDyXhat", f2.Data, s2.Data)
	}
}

// TestFusedModelMatchesUnfused: a model on the CPU backend (fused BN+ReLU,
// add+ReLU, masked BN backward) gives bit-identical logits, gradients and
// running statistics to the same model on a backend without FusedOps.
func TestFusedModelMatchesUnfused(t *testing.T) {
	for _, stem := range []string{"imagenet", "cifar"} {
		cfg := ResNetConfig{Depth: 18, Stem: stem, Width: 0.125, Classes: 5, Seed: 3}
		run := func(b Backend) (logits, grads, bufs []float32) {
			m, err := NewResNet(b, cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := NewRNG(11)
			x := hostTensor(randVec(r, 4*3*20*20, 1), 4, 3, 20, 20)
			y, err := m.Forward(x)
			if err != nil {
				t.Fatal(err)
			}
			_, dl, err := (&CrossEntropy{}).Compute(b, y, []int32{0, 1, 2, 4})
			if err != nil {
				t.Fatal(err)
			}
			m.ZeroGrad()
			if err := m.Backward(dl); err != nil {
				t.Fatal(err)
			}
			return append([]float32(nil), y.Data...), append([]float32(nil), m.GradsFlat().Data...),
				append([]float32(nil), m.BuffersFlat().Data...)
		}
		l1, g1, b1 := run(NewCPU(2))
		l2, g2, b2 := run(unfused{NewCPU(2)})
		sameBits(t, stem+" logits", l1, l2)
		sameBits(t, stem+" grads", g1, g2)
		sameBits(t, stem+" buffers", b1, b2)
	}
}

// unfused hides the CPU backend's optional capabilities.
type unfused struct{ Backend }

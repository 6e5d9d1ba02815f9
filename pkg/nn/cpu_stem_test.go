package nn

import (
	"fmt"
	"math"
	"testing"
)

// Tests of the small-plane paths of the CPU backend: the laned float64
// plane sums of BatchNorm, the branch-free max-pool and the pointwise
// (1x1-plane) convolutions.

// laneSums is the definition of the plane sums' order: for planes of
// fewer than 16 elements, element i is added to lane i%4 in increasing i
// and the lanes are added as (l0+l1)+(l2+l3); for larger planes, 16 lanes,
// added by halving: l_j + l_(j+8), then the same on the 8, 4 and 2 sums.
func laneSums(n int, term func(i int) (float64, float64)) (float64, float64) {
	lanes := 4
	if n >= 16 {
		lanes = 16
	}
	a, b := make([]float64, lanes), make([]float64, lanes)
	for i := 0; i < n; i++ {
		ta, tb := term(i)
		a[i%lanes] += ta
		b[i%lanes] += tb
	}
	if lanes == 4 {
		return (a[0] + a[1]) + (a[2] + a[3]), (b[0] + b[1]) + (b[2] + b[3])
	}
	for w := 8; w >= 1; w /= 2 {
		for j := 0; j < w; j++ {
			a[j] += a[j+w]
			b[j] += b[j+w]
		}
	}
	return a[0], b[0]
}

// TestPlaneSumLanes checks the plane sums (Go loops and, where the CPU
// has them, the AVX-512 ones) against laneSums, bit for bit, for plane
// sizes around the lane counts, with ragged tails.
func TestPlaneSumLanes(t *testing.T) {
	defer func(v bool) { useBNAsm = v }(useBNAsm)
	for _, asm := range []bool{false, useBNAsm} {
		useBNAsm = asm
		t.Run(fmt.Sprint("asm=", asm), testPlaneSumLanes)
	}
}

func testPlaneSumLanes(t *testing.T) {
	r := NewRNG(5)
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 18, 19, 31, 32, 33, 47, 64, 100} {
		x := randVec(r, n, 1e3)
		g := randVec(r, n, 1)
		y := randVec(r, n, 1)
		xs, gs, ys := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range xs {
			xs[i], gs[i], ys[i] = float32(x[i]), float32(g[i]), float32(y[i])
		}
		mu := float64(float32(0.37))
		check := func(what string, ga, gb, wa, wb float64) {
			t.Helper()
			if ga != wa || gb != wb {
				t.Errorf("n=%d %s: got (%v, %v), want (%v, %v)", n, what, ga, gb, wa, wb)
			}
		}
		a, b := sumSq64(xs)
		wa, wb := laneSums(n, func(i int) (float64, float64) { f := float64(xs[i]); return f, f * f })
		check("sumSq64", a, b, wa, wb)
		a, b = sumDyXmu64(gs, xs, mu)
		wa, wb = laneSums(n, func(i int) (float64, float64) {
			d := float64(gs[i])
			return d, d * (float64(xs[i]) - mu)
		})
		check("sumDyXmu64", a, b, wa, wb)
		masked := make([]float32, n)
		for i := range masked {
			if ys[i] > 0 {
				masked[i] = gs[i]
			}
		}
		a, b = reluSumDyXmu64(gs, ys, xs, mu)
		wa, wb = laneSums(n, func(i int) (float64, float64) {
			d := float64(masked[i])
			return d, d * (float64(xs[i]) - mu)
		})
		check("reluSumDyXmu64", a, b, wa, wb)
		sameBits(t, fmt.Sprint("masked dy n=", n), gs, masked)
	}
}

// TestMaxPoolKeysMatchPlain: the branch-free max-pool (and, where the CPU
// has it, the vector one) picks the same values and indices as the plain
// float loop on planes with ties, signed zeros, infinities and NaNs, for
// several window shapes.
func TestMaxPoolKeysMatchPlain(t *testing.T) {
	defer func(v bool) { usePoolAsm = v }(usePoolAsm)
	for _, asm := range []bool{false, usePoolAsm} {
		usePoolAsm = asm
		t.Run(fmt.Sprint("asm=", asm), testMaxPoolMatchesPlain)
	}
}

func testMaxPoolMatchesPlain(t *testing.T) {
	r := NewRNG(9)
	special := []float32{0, float32(math.Copysign(0, -1)), 1, 1, -1, float32(math.Inf(1)), float32(math.Inf(-1))}
	for _, p := range []PoolParams{
		{N: 2, C: 3, H: 16, W: 16, Kernel: 3, Stride: 2, Pad: 1},
		{N: 2, C: 3, H: 9, W: 7, Kernel: 3, Stride: 2, Pad: 1},
		{N: 1, C: 4, H: 5, W: 6, Kernel: 2, Stride: 2, Pad: 0},
		{N: 1, C: 4, H: 6, W: 6, Kernel: 3, Stride: 1, Pad: 1},
		{N: 1, C: 2, H: 1, W: 1, Kernel: 3, Stride: 2, Pad: 1},
		{N: 1, C: 2, H: 2, W: 2, Kernel: 3, Stride: 2, Pad: 1},
		{N: 1, C: 2, H: 4, W: 140, Kernel: 3, Stride: 2, Pad: 1}, // wider than maxPoolRow
		{N: 1, C: 2, H: 3, W: 3, Kernel: 3, Stride: 2, Pad: 1},
		{N: 1, C: 2, H: 5, W: 33, Kernel: 3, Stride: 2, Pad: 1}, // two vector blocks, the second partial
		{N: 1, C: 2, H: 2, W: 64, Kernel: 3, Stride: 2, Pad: 1},
		{N: 1, C: 2, H: 8, W: 1, Kernel: 3, Stride: 2, Pad: 1},
	} {
		for _, mode := range []string{"random", "special", "-inf", "nan"} {
			n := p.N * p.C * p.H * p.W
			x := make([]float32, n)
			for i, v := range randVec(r, n, 1) {
				switch mode {
				case "random":
					x[i] = float32(v)
				case "special", "nan":
					x[i] = special[int(math.Abs(v)*1e4)%len(special)]
				case "-inf":
					x[i] = float32(math.Inf(-1))
				}
			}
			if mode == "nan" {
				x[n/3] = float32(math.NaN())
				x[n/2] = float32(math.NaN())
			}
			b := NewCPU(3)
			y, am := b.New(p.N, p.C, p.P(), p.Q()), b.New(p.N, p.C, p.P(), p.Q())
			xt := b.New(p.N, p.C, p.H, p.W)
			copy(xt.Data, x)
			b.MaxPool2d(y, am, xt, p)
			hw, pq := p.H*p.W, p.P()*p.Q()
			wy, wa := make([]float32, len(y.Data)), make([]float32, len(y.Data))
			for u := 0; u < p.N*p.C; u++ {
				maxPoolPlane(wy[u*pq:u*pq+pq], wa[u*pq:u*pq+pq], x[u*hw:u*hw+hw], p)
			}
			what := fmt.Sprintf("%+v %s", p, mode)
			sameBits(t, what+" y", y.Data, wy)
			sameBits(t, what+" argmax", am.Data, wa)
		}
	}
}

// TestPointwiseConv: convolutions to a 1x1 plane whose live taps read the
// input pixels one each run as plain products over the batch; they match the float64 reference in
// all three ops, with the weight gradient accumulated, and are
// bit-identical for 1 and 3 threads.
func TestPointwiseConv(t *testing.T) {
	r := NewRNG(13)
	for _, p := range []ConvParams{
		{N: 5, C: 7, H: 1, W: 1, K: 6, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		{N: 3, C: 4, H: 1, W: 1, K: 9, R: 1, S: 1, StrideH: 1, StrideW: 1},
		{N: 3, C: 4, H: 1, W: 1, K: 5, R: 1, S: 1, StrideH: 2, StrideW: 2},
		{N: 4, C: 3, H: 1, W: 1, K: 2, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 6, C: 5, H: 2, W: 2, K: 7, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, // 2x2 -> 1x1: 4 taps
		{N: 3, C: 2, H: 3, W: 3, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1},                   // one window over the plane
	} {
		if !pointwise(p, newConvPlan(p)) {
			t.Fatalf("%+v: not taken as pointwise", p)
		}
		x := randVec(r, p.N*p.C*p.H*p.W, 1)
		w := randVec(r, p.K*p.C*p.R*p.S, 1)
		dy := randVec(r, p.N*p.K, 1)
		dw0 := randVec(r, len(w), 1)
		var outs [2][3][]float32
		for i, threads := range []int{1, 3} {
			b := NewCPU(threads)
			y, dx := b.New(p.N, p.K, 1, 1), b.New(p.N, p.C, p.H, p.W)
			dw := hostTensor(dw0, p.K, p.C, p.R, p.S)
			wt := hostTensor(w, p.K, p.C, p.R, p.S)
			b.Conv2d(y, hostTensor(x, p.N, p.C, p.H, p.W), wt, p)
			b.Conv2dBackwardData(dx, hostTensor(dy, p.N, p.K, 1, 1), wt, p)
			b.Conv2dBackwardFilter(dw, hostTensor(x, p.N, p.C, p.H, p.W), hostTensor(dy, p.N, p.K, 1, 1), p)
			outs[i] = [3][]float32{y.Data, dx.Data, dw.Data}
		}
		wdx, wdw := convBackRef(dy, x, w, p)
		for i := range wdw {
			wdw[i] += float64(float32(dw0[i]))
		}
		what := fmt.Sprintf("%+v", p)
		expectClose(t, what+" y", outs[0][0], convRef(x, w, p), 2e-6)
		expectClose(t, what+" dx", outs[0][1], wdx, 2e-6)
		expectClose(t, what+" dw", outs[0][2], wdw, 2e-6)
		for j, name := range []string{"y", "dx", "dw"} {
			sameBits(t, what+" threads "+name, outs[1][j], outs[0][j])
		}
	}
}

// TestPointwiseRule: convolutions whose taps do not read the pixels one
// each in order are not taken as pointwise.
func TestPointwiseRule(t *testing.T) {
	for _, p := range []ConvParams{
		{N: 2, C: 3, H: 2, W: 2, K: 4, R: 1, S: 1, StrideH: 2, StrideW: 2},                   // 1x1/2 downsample: pixel 0 only
		{N: 2, C: 3, H: 2, W: 2, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, // 2x2 output
		{N: 2, C: 3, H: 3, W: 3, K: 4, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, // 2x2 output
	} {
		if pointwise(p, newConvPlan(p)) {
			t.Errorf("%+v taken as pointwise", p)
		}
	}
}

// TestBatchNormVectorMatchesGo: the AVX-512 BatchNorm loops (apply, with
// and without the ReLU, and backward) give bit-identical results to the Go
// loops, for planes below, at and above 16 elements (with ragged tails),
// on inputs with signed zeros, infinities and NaNs.
func TestBatchNormVectorMatchesGo(t *testing.T) {
	if !useBNAsm {
		t.Skip("no vector BatchNorm on this CPU")
	}
	defer func(v bool) { useBNAsm = v }(useBNAsm)
	r := NewRNG(21)
	special := []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), 1e-40, -3}
	for _, s := range [][3]int{{3, 5, 1}, {2, 7, 4}, {2, 3, 9}, {3, 4, 16}, {2, 3, 17}, {2, 5, 64}, {1, 3, 50}} {
		n, ch, hw := s[0], s[1], s[2]
		vec := func() *Tensor {
			v := randVec(r, n*ch*hw, 2)
			for i := 0; i < len(v); i += 5 {
				v[i] = special[(i/5)%len(special)]
			}
			return hostTensor(v, n, ch, hw, 1)
		}
		x, dy := vec(), vec()
		per := func(scale float64) *Tensor { return hostTensor(randVec(r, ch, scale), ch) }
		mean, inv, gamma, beta, sd, sx := per(1), per(2), per(1), per(1), per(5), per(5)
		var outs [2][3]*Tensor
		for i, asm := range []bool{false, true} {
			useBNAsm = asm
			b := NewCPU(2)
			y, yr, dx := b.New(x.Shape...), b.New(x.Shape...), b.New(x.Shape...)
			b.BatchNormForward(y, x, mean, inv, gamma, beta)
			b.BatchNormReLUForward(yr, x, mean, inv, gamma, beta)
			b.BatchNormBackward(dx, dy, x, mean, inv, gamma, sd, sx, n*hw)
			outs[i] = [3]*Tensor{y, yr, dx}
		}
		for j, name := range []string{"BatchNormForward", "BatchNormReLUForward", "BatchNormBackward"} {
			sameBits(t, fmt.Sprintf("%s %v", name, s), outs[1][j].Data, outs[0][j].Data)
		}
	}
}

// TestPadInputVectorMatchesGo: the vector padding of small planes writes
// the same padded planes as the Go loop (over scratch holding garbage).
func TestPadInputVectorMatchesGo(t *testing.T) {
	if !usePadAsm {
		t.Skip("no vector padding on this CPU")
	}
	defer func(v bool) { usePadAsm = v }(usePadAsm)
	r := NewRNG(17)
	for _, p := range []ConvParams{
		{N: 3, C: 5, H: 2, W: 2, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		{N: 2, C: 3, H: 4, W: 4, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		{N: 2, C: 3, H: 8, W: 8, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		{N: 2, C: 2, H: 5, W: 16, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		{N: 2, C: 2, H: 3, W: 7, K: 1, R: 5, S: 5, StrideH: 1, StrideW: 1, PadH: 2, PadW: 2},
		{N: 1, C: 3, H: 1, W: 1, K: 1, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},
		// Stride 2: four phase planes.
		{N: 2, C: 3, H: 32, W: 32, K: 1, R: 7, S: 7, StrideH: 2, StrideW: 2, PadH: 3, PadW: 3},
		{N: 2, C: 3, H: 8, W: 8, K: 1, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 2, C: 3, H: 4, W: 4, K: 1, R: 1, S: 1, StrideH: 2, StrideW: 2},
		{N: 2, C: 3, H: 2, W: 2, K: 1, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 2, C: 2, H: 5, W: 7, K: 1, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 1, C: 2, H: 6, W: 17, K: 1, R: 5, S: 5, StrideH: 2, StrideW: 2, PadH: 2, PadW: 2},
		{N: 1, C: 2, H: 3, W: 31, K: 1, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 0, PadW: 0},
		{N: 1, C: 1, H: 1, W: 1, K: 1, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
	} {
		x := make([]float32, p.N*p.C*p.H*p.W)
		for i, v := range randVec(r, len(x), 1) {
			x[i] = float32(v)
		}
		var got [2][]float32
		for i, asm := range []bool{false, true} {
			usePadAsm = asm
			b := NewCPU(3)
			pl := b.plan(p)
			b.xpad = make([]float32, p.N*p.C*pl.plane())
			for j := range b.xpad {
				b.xpad[j] = float32(math.NaN())
			}
			got[i] = append([]float32(nil), b.padInput(x, p, pl)...)
		}
		sameBits(t, fmt.Sprintf("padInput %+v", p), got[1], got[0])
	}
}

// TestElementwiseVectorMatchesGo: the AVX-512 Add, AddReLU and ReLUBackward loops
// give bit-identical results to the Go loops (lengths with ragged tails,
// signed zeros, infinities, NaNs; Add in place).
func TestElementwiseVectorMatchesGo(t *testing.T) {
	if !useBNAsm {
		t.Skip("no vector loops on this CPU")
	}
	defer func(v bool) { useBNAsm = v }(useBNAsm)
	r := NewRNG(23)
	special := []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), 1e-40, -3}
	for _, n := range []int{1, 5, 16, 17, 40, 1 << 15, 1<<15 + 3} {
		vec := func() []float64 {
			v := randVec(r, n, 2)
			for i := 0; i < n; i += 3 {
				v[i] = special[(i/3)%len(special)]
			}
			return v
		}
		a, bv, y := vec(), vec(), vec()
		var outs [2][3][]float32
		for i, asm := range []bool{false, true} {
			useBNAsm = asm
			b := NewCPU(2)
			at := hostTensor(a, n)
			b.Add(at, at, hostTensor(bv, n))
			dx := b.New(n)
			b.ReLUBackward(dx, hostTensor(a, n), hostTensor(y, n))
			ar := hostTensor(a, n)
			b.AddReLU(ar, ar, hostTensor(y, n))
			outs[i] = [3][]float32{at.Data, dx.Data, ar.Data}
		}
		sameBits(t, fmt.Sprint("Add n=", n), outs[1][0], outs[0][0])
		sameBits(t, fmt.Sprint("ReLUBackward n=", n), outs[1][1], outs[0][1])
		sameBits(t, fmt.Sprint("AddReLU n=", n), outs[1][2], outs[0][2])
	}
}

// TestBatchNormStatsOrder: BatchNormStats and the backward statistics
// (plain and ReLU-masked) equal, bit for bit, per-plane laneSums added per
// channel in order of n, for the plane sizes with their own loops (1, 4)
// and others, with 1 and 3 threads.
func TestBatchNormStatsOrder(t *testing.T) {
	r := NewRNG(29)
	for _, hw := range []int{1, 3, 4, 5, 16, 21} {
		n, ch := 5, 3
		x := hostTensor(randVec(r, n*ch*hw, 3), n, ch, hw, 1)
		dy := hostTensor(randVec(r, n*ch*hw, 1), n, ch, hw, 1)
		y := hostTensor(randVec(r, n*ch*hw, 1), n, ch, hw, 1)
		mean, inv := hostTensor(randVec(r, ch, 1), ch), hostTensor(randVec(r, ch, 1), ch)
		masked := make([]float32, len(dy.Data))
		for i, g := range dy.Data {
			if y.Data[i] > 0 {
				masked[i] = g
			}
		}
		want := func(g []float32, useG bool) (s1, s2 []float32) {
			s1, s2 = make([]float32, ch), make([]float32, ch)
			for k := 0; k < ch; k++ {
				mu := float64(mean.Data[k])
				var a, b float64
				for i := 0; i < n; i++ {
					off := (i*ch + k) * hw
					pa, pb := laneSums(hw, func(j int) (float64, float64) {
						v := float64(x.Data[off+j])
						if !useG {
							return v, v * v
						}
						d := float64(g[off+j])
						return d, d * (v - mu)
					})
					a, b = a+pa, b+pb
				}
				s1[k] = float32(a)
				if useG {
					s2[k] = float32(b * float64(inv.Data[k]))
				} else {
					s2[k] = float32(b)
				}
			}
			return s1, s2
		}
		for _, threads := range []int{1, 3} {
			b := NewCPU(threads)
			s1, s2 := b.New(ch), b.New(ch)
			what := fmt.Sprintf("hw=%d threads=%d", hw, threads)
			b.BatchNormStats(s1, s2, x)
			w1, w2 := want(nil, false)
			sameBits(t, what+" sum", s1.Data, w1)
			sameBits(t, what+" sumSq", s2.Data, w2)
			b.BatchNormBackwardStats(s1, s2, dy, x, mean, inv)
			w1, w2 = want(dy.Data, true)
			sameBits(t, what+" sumDy", s1.Data, w1)
			sameBits(t, what+" sumDyXhat", s2.Data, w2)
			g := b.New(dy.Shape...)
			copy(g.Data, dy.Data)
			b.ReLUBatchNormBackwardStats(s1, s2, g, y, x, mean, inv)
			w1, w2 = want(masked, true)
			sameBits(t, what+" masked dy", g.Data, masked)
			sameBits(t, what+" relu sumDy", s1.Data, w1)
			sameBits(t, what+" relu sumDyXhat", s2.Data, w2)
		}
	}
}

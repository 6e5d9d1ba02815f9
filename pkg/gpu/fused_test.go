package gpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// checkBits requires the GPU's float32 bits to equal the CPU's (the sign
// of zero included): the fused ops promise the CPU backend's exact
// results. A NaN must stay a NaN, but its payload is the hardware's: the
// H100 produces the canonical 0x7fffffff where the CPU gives 0x7fc00000
// (seen on the device, 2026-11-27), and IEEE 754 leaves payloads open.
func (e *env) checkBits(name string, x tp) {
	e.t.Helper()
	g, c := e.host(x)
	for i := range g {
		if g[i] != g[i] && c[i] != c[i] {
			continue
		}
		if math.Float32bits(g[i]) != math.Float32bits(c[i]) {
			e.t.Errorf("%s: element %d of %d: gpu %v (%#08x), cpu %v (%#08x)", name, i, len(g),
				g[i], math.Float32bits(g[i]), c[i], math.Float32bits(c[i]))
			return
		}
	}
}

// specials puts NaN, -0, +0 and tiny negatives at fixed places of v, so
// the ReLU's edge cases are exercised on both backends.
func specials(v []float32) []float32 {
	sp := []float32{float32(math.NaN()), float32(math.Copysign(0, -1)), 0, -1e-30, 1e-30}
	for i := range sp {
		if j := i * 7; j < len(v) {
			v[j] = sp[i]
		}
	}
	return v
}

func (e *env) randSpecial(shape ...int) tp {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rng.NormFloat64())
	}
	return e.from(specials(v), shape...)
}

// TestGPUFusedOps compares each nn.FusedOps op with the CPU backend's,
// on shapes that take the float4 path (HW % 4 == 0, aligned), the scalar
// path (odd HW), and views that start off a 16-byte boundary.
func TestGPUFusedOps(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	cf := e.c.(nn.FusedOps)
	for _, s := range [][]int{{4, 3, 5, 5}, {8, 16, 8, 8}, {2, 5, 3, 4}, {3, 7, 11, 13}} {
		n, c := s[0], s[1]
		total := n * c * s[2] * s[3]
		for _, off := range []int{0, 1} {
			name := fmt.Sprint(s, " offset ", off)
			view := func(x tp) tp { return tp{x[0].View(off, s...), x[1].View(off, s...)} }
			// BatchNormReLUForward, with the CPU's statistics on both sides.
			x := view(e.randSpecial(total + off))
			mean, inv, gam, bet := e.rand(c), e.rand(c), e.rand(c), e.rand(c)
			e.g.Mul(inv[0], inv[0], inv[0])
			e.c.Mul(inv[1], inv[1], inv[1])
			y := view(e.out(total + off))
			e.g.BatchNormReLUForward(y[0], x[0], mean[0], inv[0], gam[0], bet[0])
			cf.BatchNormReLUForward(y[1], x[1], mean[1], inv[1], gam[1], bet[1])
			e.checkBits("BatchNormReLUForward "+name, y)
			// in place (y aliases x)
			e.g.BatchNormReLUForward(x[0], x[0], mean[0], inv[0], gam[0], bet[0])
			cf.BatchNormReLUForward(x[1], x[1], mean[1], inv[1], gam[1], bet[1])
			e.checkBits("BatchNormReLUForward in place "+name, x)

			// AddReLU: into a fresh output, then aliasing each input.
			p, q := view(e.randSpecial(total+off)), view(e.rand(total+off))
			z := view(e.out(total + off))
			e.g.AddReLU(z[0], p[0], q[0])
			cf.AddReLU(z[1], p[1], q[1])
			e.checkBits("AddReLU "+name, z)
			e.g.AddReLU(p[0], p[0], q[0])
			cf.AddReLU(p[1], p[1], q[1])
			e.checkBits("AddReLU y=a "+name, p)
			e.g.AddReLU(q[0], p[0], q[0])
			cf.AddReLU(q[1], p[1], q[1])
			e.checkBits("AddReLU y=b "+name, q)

			// ReLUBatchNormBackwardStats: dy masked in place by y (with
			// NaN, ±0 and negatives), then the sums.
			dy, yy, xx := view(e.rand(total+off)), view(e.randSpecial(total+off)), view(e.rand(total+off))
			sdy, sdx := e.out(c), e.out(c)
			e.g.ReLUBatchNormBackwardStats(sdy[0], sdx[0], dy[0], yy[0], xx[0], mean[0], inv[0])
			cf.ReLUBatchNormBackwardStats(sdy[1], sdx[1], dy[1], yy[1], xx[1], mean[1], inv[1])
			e.checkBits("ReLUBatchNormBackwardStats masked dy "+name, dy)
			e.check("ReLUBatchNormBackwardStats sumDy "+name, sdy, oneRounding)
			e.check("ReLUBatchNormBackwardStats sumDyXhat "+name, sdx, oneRounding)
		}
	}
}

// TestGPUElementwiseEdges: the separate ops' vector and scalar paths on
// NaN, ±0 and views off a 16-byte boundary, bit for bit with the CPU.
func TestGPUElementwiseEdges(t *testing.T) {
	e := newEnv(t, PrecisionFP32)
	s := []int{2, 3, 6, 4}
	total := 2 * 3 * 6 * 4
	for _, off := range []int{0, 1, 2, 3} {
		name := fmt.Sprint("offset ", off)
		view := func(x tp) tp { return tp{x[0].View(off, s...), x[1].View(off, s...)} }
		x, w := view(e.randSpecial(total+off)), view(e.rand(total+off))
		y := view(e.out(total + off))
		e.g.ReLU(y[0], x[0])
		e.c.ReLU(y[1], x[1])
		e.checkBits("ReLU "+name, y)
		dx := view(e.out(total + off))
		e.g.ReLUBackward(dx[0], w[0], x[0])
		e.c.ReLUBackward(dx[1], w[1], x[1])
		e.checkBits("ReLUBackward "+name, dx)
		z := view(e.out(total + off))
		e.g.Add(z[0], x[0], w[0])
		e.c.Add(z[1], x[1], w[1])
		e.checkBits("Add "+name, z)
		mean, inv, gam, bet := e.rand(3), e.rand(3), e.rand(3), e.rand(3)
		e.g.BatchNormForward(y[0], w[0], mean[0], inv[0], gam[0], bet[0])
		e.c.BatchNormForward(y[1], w[1], mean[1], inv[1], gam[1], bet[1])
		e.checkBits("BatchNormForward "+name, y)
		e.g.BatchNormBackward(dx[0], z[0], w[0], mean[0], inv[0], gam[0], bet[0], mean[0], 48)
		e.c.BatchNormBackward(dx[1], z[1], w[1], mean[1], inv[1], gam[1], bet[1], mean[1], 48)
		e.checkBits("BatchNormBackward "+name, dx)
	}
}

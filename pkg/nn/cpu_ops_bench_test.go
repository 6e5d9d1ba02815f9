package nn

import (
	"fmt"
	"testing"
)

// BenchmarkStemOps times the per-op passes around the convolutions of the
// imagenet stem at 32x32 inputs, batch 128 (BatchNorm statistics, apply
// and backward, the fused ReLU variants, max-pool forward and backward) on
// each plane size of the network, in CPU-ms per op
// (RINGTRAIN_BENCH_THREADS threads, default 1).
func BenchmarkStemOps(b *testing.B) {
	for _, s := range []struct{ c, h int }{{64, 16}, {64, 8}, {128, 4}, {256, 2}, {512, 1}} {
		be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
		r := NewRNG(1)
		n, c, h := 128, s.c, s.h
		x := hostTensor(randVec(r, n*c*h*h, 1), n, c, h, h)
		dy := hostTensor(randVec(r, n*c*h*h, 1), n, c, h, h)
		y, dx := be.New(n, c, h, h), be.New(n, c, h, h)
		mean, inv := hostTensor(randVec(r, c, 0.1), c), hostTensor(randVec(r, c, 1), c)
		gamma, beta := hostTensor(randVec(r, c, 1), c), hostTensor(randVec(r, c, 1), c)
		s1, s2 := be.New(c), be.New(c)
		be.BatchNormReLUForward(y, x, mean, inv, gamma, beta)
		ops := []struct {
			name string
			f    func()
		}{
			{"bnStats", func() { be.BatchNormStats(s1, s2, x) }},
			{"bnReLUFwd", func() { be.BatchNormReLUForward(y, x, mean, inv, gamma, beta) }},
			{"reluBnBwdStats", func() { be.ReLUBatchNormBackwardStats(s1, s2, dy, y, x, mean, inv) }},
			{"bnBwd", func() { be.BatchNormBackward(dx, dy, x, mean, inv, gamma, s1, s2, n*h*h) }},
			{"addReLU", func() { be.AddReLU(dx, x, dy) }},
		}
		if h == 16 {
			p := PoolParams{N: n, C: c, H: h, W: h, Kernel: 3, Stride: 2, Pad: 1}
			py, am := be.New(n, c, p.P(), p.Q()), be.New(n, c, p.P(), p.Q())
			pdy := hostTensor(randVec(r, n*c*p.P()*p.Q(), 1), n, c, p.P(), p.Q())
			ops = append(ops, struct {
				name string
				f    func()
			}{"maxPool", func() { be.MaxPool2d(py, am, x, p) }}, struct {
				name string
				f    func()
			}{"maxPoolBwd", func() { be.MaxPool2dBackward(dx, pdy, am, p) }})
			be.MaxPool2d(py, am, x, p)
		}
		for _, op := range ops {
			b.Run(fmt.Sprintf("C%d_%dx%d/%s", c, h, h, op.name), func(b *testing.B) {
				op.f()
				c0 := cpuSeconds()
				for b.Loop() {
					op.f()
				}
				b.ReportMetric((cpuSeconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// BenchmarkPadInput times the copy of a convolution input into padded
// planes (3x3, pad 1) for the small planes of the imagenet stem, batch 128,
// in CPU-ms per call.
func BenchmarkPadInput(b *testing.B) {
	for _, s := range []struct{ c, h, stride int }{{64, 8, 1}, {128, 4, 1}, {256, 2, 1}, {64, 8, 2}, {128, 4, 2}} {
		p := ConvParams{N: 128, C: s.c, H: s.h, W: s.h, K: s.c, R: 3, S: 3, StrideH: s.stride, StrideW: s.stride, PadH: 1, PadW: 1}
		be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
		x := randVec(NewRNG(1), p.N*p.C*p.H*p.W, 1)
		xs := make([]float32, len(x))
		for i, v := range x {
			xs[i] = float32(v)
		}
		pl := be.plan(p)
		b.Run(fmt.Sprintf("C%d_%dx%d_s%d", p.C, p.H, p.W, s.stride), func(b *testing.B) {
			be.padInput(xs, p, pl)
			c0 := cpuSeconds()
			for b.Loop() {
				be.padInput(xs, p, pl)
			}
			b.ReportMetric((cpuSeconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
		})
	}
}

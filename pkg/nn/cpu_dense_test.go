package nn

import (
	"fmt"
	"testing"
)

// TestDenseConv: convolutions whose every output window covers the whole
// input plane run as dense products; they match the float64 reference in
// all three ops (the weight gradient accumulated onto a non-zero dw), are
// bit-identical for 1 and 3 threads, and the unrolled loops of the 2x2
// shape give the generic loops' bits.
func TestDenseConv(t *testing.T) {
	r := NewRNG(41)
	for _, p := range []ConvParams{
		{N: 5, C: 7, H: 2, W: 2, K: 6, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},   // ResNet's 2x2 planes
		{N: 3, C: 70, H: 2, W: 2, K: 9, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},  // C*HW past one KC block
		{N: 33, C: 4, H: 2, W: 2, K: 40, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, // K*PQ past one panel
		{N: 4, C: 3, H: 1, W: 2, K: 5, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},   // 1x2: the taps of kernel rows 0 and 2 unused
		{N: 4, C: 3, H: 2, W: 1, K: 5, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},   // 2x1
		{N: 2, C: 3, H: 2, W: 3, K: 4, R: 5, S: 5, StrideH: 1, StrideW: 1, PadH: 2, PadW: 2},   // 5x5 over 2x3
		{N: 3, C: 2, H: 2, W: 2, K: 3, R: 4, S: 4, StrideH: 2, StrideW: 2, PadH: 2, PadW: 2},   // stride 2
	} {
		if !NewCPU(1).dense(p) {
			t.Fatalf("%+v: not taken as dense", p)
		}
		P, Q := p.P(), p.Q()
		x := randVec(r, p.N*p.C*p.H*p.W, 1)
		w := randVec(r, p.K*p.C*p.R*p.S, 1)
		dy := randVec(r, p.N*p.K*P*Q, 1)
		dw0 := randVec(r, len(w), 1)
		var outs [3][3][]float32
		for i, threads := range []int{1, 3, 1} {
			b := NewCPU(threads)
			b.denseGeneric = i == 2 // the third run: the generic loops
			y, dx := b.New(p.N, p.K, P, Q), b.New(p.N, p.C, p.H, p.W)
			dw := hostTensor(dw0, p.K, p.C, p.R, p.S)
			wt := hostTensor(w, p.K, p.C, p.R, p.S)
			b.Conv2d(y, hostTensor(x, p.N, p.C, p.H, p.W), wt, p)
			b.Conv2dBackwardData(dx, hostTensor(dy, p.N, p.K, P, Q), wt, p)
			b.Conv2dBackwardFilter(dw, hostTensor(x, p.N, p.C, p.H, p.W), hostTensor(dy, p.N, p.K, P, Q), p)
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
			sameBits(t, what+" unrolled vs generic "+name, outs[0][j], outs[2][j])
		}
	}
}

// TestDenseRule: convolutions with an output window that misses some input
// pixel, or with a single output pixel (pointwise), are not dense.
func TestDenseRule(t *testing.T) {
	for _, p := range []ConvParams{
		{N: 2, C: 3, H: 4, W: 4, K: 4, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, // 4x4 -> 2x2
		{N: 2, C: 3, H: 3, W: 3, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, // 3x3 planes
		{N: 2, C: 3, H: 1, W: 1, K: 4, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, // 1x1: pointwise
		{N: 2, C: 3, H: 2, W: 2, K: 4, R: 1, S: 1, StrideH: 1, StrideW: 1},                   // 1x1 kernel
		{N: 2, C: 3, H: 2, W: 2, K: 4, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, // 2x2 -> 1x1
	} {
		if NewCPU(1).dense(p) {
			t.Errorf("%+v taken as dense", p)
		}
	}
}

// BenchmarkConvDense compares, for the dense shapes of ResNet-18 (3x3
// convolutions on 2x2 planes), the dense path with the Winograd path,
// interleaved in one process (RINGTRAIN_BENCH_ROUNDS rounds, default 5): it
// reports the median CPU-ms of each and their ratio (winograd/dense > 1:
// dense is faster). RINGTRAIN_BENCH_THREADS sets the threads (default 1).
func BenchmarkConvDense(b *testing.B) {
	rounds := envInt("RINGTRAIN_BENCH_ROUNDS", 5)
	for _, p := range []ConvParams{
		{N: 128, C: 256, H: 2, W: 2, K: 256}, // imagenet stem layer3
		{N: 32, C: 256, H: 2, W: 2, K: 256},
	} {
		p.R, p.S, p.StrideH, p.StrideW, p.PadH, p.PadW = 3, 3, 1, 1, 1, 1
		be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
		r := NewRNG(1)
		x := hostTensor(randVec(r, p.N*p.C*p.H*p.W, 1), p.N, p.C, p.H, p.W)
		w := hostTensor(randVec(r, p.K*p.C*p.R*p.S, 1), p.K, p.C, p.R, p.S)
		y := be.New(p.N, p.K, p.P(), p.Q())
		dx, dw := be.New(x.Shape...), be.New(w.Shape...)
		for _, op := range []struct {
			name string
			f    func()
		}{
			{"fwd", func() { be.Conv2d(y, x, w, p) }},
			{"bwdData", func() { be.Conv2dBackwardData(dx, y, w, p) }},
			{"bwdFilter", func() { be.Conv2dBackwardFilter(dw, x, y, p) }},
		} {
			b.Run(fmt.Sprintf("N%dC%dK%d_%dx%d/%s", p.N, p.C, p.K, p.H, p.W, op.name), func(b *testing.B) {
				var dn, wino []float64
				for i := 0; i < b.N; i++ {
					for r := 0; r < rounds; r++ {
						for _, off := range []bool{false, true} {
							be.noDense = off // the Winograd path instead (256 channels: over its thresholds)
							op.f()
							c0 := cpuSeconds()
							op.f()
							ms := (cpuSeconds() - c0) * 1e3
							be.noDense = false
							if off {
								wino = append(wino, ms)
							} else {
								dn = append(dn, ms)
							}
						}
					}
				}
				d, wn := median(dn), median(wino)
				b.ReportMetric(d, "dense-ms")
				b.ReportMetric(wn, "wino-ms")
				b.ReportMetric(wn/d, "speedup")
			})
		}
	}
}

// TestCol2imPixelGather: col2im's per-pixel gather gives the same bits as
// its plane-buffer loop (the same taps added in the same order), on strided
// and dead-tap shapes, for 1 and 3 threads, and matches the float64
// reference.
func TestCol2imPixelGather(t *testing.T) {
	r := NewRNG(43)
	for _, p := range []ConvParams{
		{N: 3, C: 5, H: 8, W: 8, K: 6, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 2, C: 4, H: 4, W: 4, K: 7, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 2, C: 3, H: 7, W: 5, K: 4, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 2, C: 2, H: 9, W: 9, K: 3, R: 5, S: 5, StrideH: 2, StrideW: 2, PadH: 2, PadW: 2},
		{N: 2, C: 3, H: 6, W: 6, K: 3, R: 3, S: 3, StrideH: 3, StrideW: 3, PadH: 0, PadW: 0},
	} {
		x := randVec(r, p.N*p.C*p.H*p.W, 1)
		w := randVec(r, p.K*p.C*p.R*p.S, 1)
		dy := randVec(r, p.N*p.K*p.P()*p.Q(), 1)
		var outs [2][2][]float32
		for i, max := range []int{-1, 0} { // never gather, then the default
			for j, threads := range []int{1, 3} {
				b := NewCPUWith(CPUOptions{Threads: threads, PixelTermsMax: max})
				dx := b.New(p.N, p.C, p.H, p.W)
				b.Conv2dBackwardData(dx, hostTensor(dy, p.N, p.K, p.P(), p.Q()), hostTensor(w, p.K, p.C, p.R, p.S), p)
				outs[i][j] = dx.Data
			}
		}
		if newConvPlan(p).pixelTerms(p, defaultPixelTermsMax) == nil {
			t.Fatalf("%+v: no per-pixel terms", p)
		}
		what := fmt.Sprintf("%+v", p)
		wdx, _ := convBackRef(dy, x, w, p)
		expectClose(t, what+" dx", outs[1][0], wdx, 2e-6)
		sameBits(t, what+" gather vs plane buffer", outs[1][0], outs[0][0])
		sameBits(t, what+" threads", outs[1][1], outs[1][0])
		sameBits(t, what+" plane buffer threads", outs[0][1], outs[0][0])
	}
}

// BenchmarkCol2im compares col2im's per-pixel gather with its plane-buffer
// loop on the imagenet stem's strided 3x3 shapes (backward-data, batch
// 128), interleaved (RINGTRAIN_BENCH_ROUNDS rounds, default 5), in median
// CPU-ms per op; RINGTRAIN_BENCH_THREADS sets the threads (default 1).
func BenchmarkCol2im(b *testing.B) {
	rounds := envInt("RINGTRAIN_BENCH_ROUNDS", 5)
	for _, p := range []ConvParams{
		{N: 128, C: 64, H: 8, W: 8, K: 128, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
		{N: 128, C: 128, H: 4, W: 4, K: 256, R: 3, S: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1},
	} {
		be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
		r := NewRNG(1)
		w := hostTensor(randVec(r, p.K*p.C*p.R*p.S, 1), p.K, p.C, p.R, p.S)
		dy := hostTensor(randVec(r, p.N*p.K*p.P()*p.Q(), 1), p.N, p.K, p.P(), p.Q())
		dx := be.New(p.N, p.C, p.H, p.W)
		b.Run(fmt.Sprintf("C%dK%d_%dx%d/bwdData", p.C, p.K, p.H, p.W), func(b *testing.B) {
			var gather, plane []float64
			old := be.tune.PixelTermsMax
			defer func() { be.tune.PixelTermsMax = old }()
			for i := 0; i < b.N; i++ {
				for r := 0; r < rounds; r++ {
					for _, max := range []int{old, -1} {
						be.tune.PixelTermsMax = max
						be.Conv2dBackwardData(dx, dy, w, p)
						c0 := cpuSeconds()
						be.Conv2dBackwardData(dx, dy, w, p)
						ms := (cpuSeconds() - c0) * 1e3
						if max < 0 {
							plane = append(plane, ms)
						} else {
							gather = append(gather, ms)
						}
					}
				}
			}
			g, pl := median(gather), median(plane)
			b.ReportMetric(g, "gather-ms")
			b.ReportMetric(pl, "plane-ms")
			b.ReportMetric(pl/g, "speedup")
		})
	}
}

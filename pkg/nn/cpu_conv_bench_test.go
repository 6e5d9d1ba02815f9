package nn

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
)

// cpuSeconds is the process's user+system CPU time: on a machine shared
// with other jobs it moves less than wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkConvOps times the three convolution ops of the CPU backend on
// ResNet-18 shapes at batch 128 (32x32 inputs), one thread, for profiling
// the im2col/col2im side of the convolutions.
func BenchmarkConvOps(b *testing.B) {
	for _, p := range []ConvParams{
		{N: 128, C: 64, H: 8, W: 8, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},    // imagenet stem layer1
		{N: 128, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},  // cifar stem layer1
		{N: 128, C: 128, H: 4, W: 4, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},  // imagenet stem layer2
		{N: 128, C: 256, H: 2, W: 2, K: 256, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},  // imagenet stem layer3
		{N: 128, C: 3, H: 32, W: 32, K: 64, R: 7, S: 7, StrideH: 2, StrideW: 2, PadH: 3, PadW: 3},   // imagenet stem conv1
		{N: 128, C: 512, H: 1, W: 1, K: 512, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},  // imagenet stem layer4
		{N: 32, C: 128, H: 16, W: 16, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, // cifar stem layer2 (batch 32)
		{N: 32, C: 256, H: 8, W: 8, K: 256, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},   // cifar stem layer3 (batch 32)
		{N: 32, C: 512, H: 4, W: 4, K: 512, R: 3, S: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1},   // cifar stem layer4 (batch 32)
	} {
		be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
		r := NewRNG(1)
		x := hostTensor(randVec(r, p.N*p.C*p.H*p.W, 1), p.N, p.C, p.H, p.W)
		w := hostTensor(randVec(r, p.K*p.C*p.R*p.S, 1), p.K, p.C, p.R, p.S)
		y := be.New(p.N, p.K, p.P(), p.Q())
		dx, dw := be.New(x.Shape...), be.New(w.Shape...)
		name := fmt.Sprintf("C%dK%d_%dx%d_k%ds%d", p.C, p.K, p.H, p.W, p.R, p.StrideH)
		flop := 2 * float64(p.N*p.K*p.P()*p.Q()*p.C*p.R*p.S)
		for _, op := range []struct {
			name string
			f    func()
		}{
			{"fwd", func() { be.Conv2d(y, x, w, p) }},
			{"bwdData", func() { be.Conv2dBackwardData(dx, y, w, p) }},
			{"bwdFilter", func() { be.Conv2dBackwardFilter(dw, x, y, p) }},
		} {
			b.Run(name+"/"+op.name, func(b *testing.B) {
				op.f()
				b.ResetTimer()
				c0 := cpuSeconds()
				for i := 0; i < b.N; i++ {
					op.f()
				}
				cpu := cpuSeconds() - c0
				b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(cpu*1e3/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// BenchmarkMaxPool is the imagenet stem's max-pool at batch 128 (32x32
// inputs), one thread.
func BenchmarkMaxPool(b *testing.B) {
	p := PoolParams{N: 128, C: 64, H: 16, W: 16, Kernel: 3, Stride: 2, Pad: 1}
	be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 1))
	x := hostTensor(randVec(NewRNG(1), p.N*p.C*p.H*p.W, 1), p.N, p.C, p.H, p.W)
	y, am := be.New(p.N, p.C, p.P(), p.Q()), be.New(p.N, p.C, p.P(), p.Q())
	c0 := cpuSeconds()
	for b.Loop() {
		be.MaxPool2d(y, am, x, p)
	}
	b.ReportMetric((cpuSeconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
}

// BenchmarkConvWinograd compares, per ResNet-18 3x3 shape and op
// (forward, backward-data, backward-filter), the direct path with the
// Winograd path, interleaved in one process (direct, Winograd, direct, ...
// for RINGTRAIN_BENCH_ROUNDS rounds, default 5): it reports the median
// CPU-ms of each and their ratio (direct/Winograd > 1: Winograd is
// faster). The channel rules are bypassed so that every shape is measured.
func BenchmarkConvWinograd(b *testing.B) {
	rounds := envInt("RINGTRAIN_BENCH_ROUNDS", 5)
	for _, p := range []ConvParams{
		{N: 128, C: 64, H: 8, W: 8, K: 64},     // imagenet stem layer1
		{N: 128, C: 128, H: 4, W: 4, K: 128},   // imagenet stem layer2
		{N: 128, C: 256, H: 2, W: 2, K: 256},   // imagenet stem layer3
		{N: 128, C: 64, H: 32, W: 32, K: 64},   // cifar stem layer1
		{N: 128, C: 128, H: 16, W: 16, K: 128}, // cifar stem layer2
		{N: 128, C: 256, H: 8, W: 8, K: 256},   // cifar stem layer3
		{N: 128, C: 512, H: 4, W: 4, K: 512},   // cifar stem layer4
		{N: 128, C: 32, H: 16, W: 16, K: 32},   // narrow layers (width-reduced models)
		{N: 128, C: 16, H: 16, W: 16, K: 16},
		{N: 128, C: 8, H: 16, W: 16, K: 8},
	} {
		p.R, p.S, p.StrideH, p.StrideW, p.PadH, p.PadW = 3, 3, 1, 1, 1, 1
		be := winogradCPU(envInt("RINGTRAIN_BENCH_THREADS", 1), CPUOptions{})
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
			b.Run(fmt.Sprintf("C%dK%d_%dx%d/%s", p.C, p.K, p.H, p.W, op.name), func(b *testing.B) {
				var direct, wino []float64
				for i := 0; i < b.N; i++ {
					for r := 0; r < rounds; r++ {
						for _, off := range []bool{true, false} {
							be.SetWinograd(!off)
							op.f()
							c0 := cpuSeconds()
							op.f()
							if ms := (cpuSeconds() - c0) * 1e3; off {
								direct = append(direct, ms)
							} else {
								wino = append(wino, ms)
							}
						}
					}
				}
				d, wn := median(direct), median(wino)
				b.ReportMetric(d, "direct-ms")
				b.ReportMetric(wn, "wino-ms")
				b.ReportMetric(d/wn, "speedup")
			})
		}
	}
}

// median of v (v is reordered).
func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

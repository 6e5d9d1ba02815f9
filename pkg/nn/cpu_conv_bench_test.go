package nn

import (
	"fmt"
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

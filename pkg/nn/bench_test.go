package nn

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchTrainStep measures forward + loss + backward + an SGD-like update
// (Axpy over the flat tensors) of one model and reports images/s.
func benchTrainStep(b *testing.B, cfg ResNetConfig, batch, size int) {
	be := NewCPU(envInt("RINGTRAIN_BENCH_THREADS", 0))
	m, err := NewResNet(be, cfg)
	if err != nil {
		b.Fatal(err)
	}
	r := NewRNG(1)
	x := hostTensor(randVec(r, batch*3*size*size, 1), batch, 3, size, size)
	labels := make([]int32, batch)
	for i := range labels {
		labels[i] = int32(i % m.Config().Classes)
	}
	ce := &CrossEntropy{}
	step := func() {
		logits, err := m.Forward(x)
		if err != nil {
			b.Fatal(err)
		}
		_, dl, err := ce.Compute(be, logits, labels)
		if err != nil {
			b.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			b.Fatal(err)
		}
		be.Axpy(m.ParamsFlat(), -1e-3, m.GradsFlat())
	}
	step() // warm-up: buffers are allocated on the first step
	b.ResetTimer()
	start, c0 := time.Now(), cpuSeconds()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "images/s")
	b.ReportMetric((cpuSeconds()-c0)*1e3/float64(b.N), "cpu-ms/step")
}

// BenchmarkTrainStepResNet18 is ResNet-18 (imagenet stem, 1000 classes) at
// RINGTRAIN_BENCH_SIZE (default 224) with batch RINGTRAIN_BENCH_BATCH
// (default 32) on RINGTRAIN_BENCH_THREADS goroutines (default GOMAXPROCS).
func BenchmarkTrainStepResNet18(b *testing.B) {
	benchTrainStep(b, ResNetConfig{Depth: 18, Stem: "imagenet", Seed: 1},
		envInt("RINGTRAIN_BENCH_BATCH", 32), envInt("RINGTRAIN_BENCH_SIZE", 224))
}

// BenchmarkTrainStepResNet18CIFAR is ResNet-18 with the cifar stem on
// 32x32 images, 10 classes.
func BenchmarkTrainStepResNet18CIFAR(b *testing.B) {
	benchTrainStep(b, ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Seed: 1},
		envInt("RINGTRAIN_BENCH_BATCH", 32), 32)
}

// TestResNet18Batch128Memory runs one full-size ResNet-18 training step at
// batch 128 (3x224x224, imagenet stem) and checks the heap stays bounded.
// It takes minutes on a laptop: set RINGTRAIN_LONG=1 to run it.
func TestResNet18Batch128Memory(t *testing.T) {
	if os.Getenv("RINGTRAIN_LONG") == "" {
		t.Skip("set RINGTRAIN_LONG=1 to run the full-size ResNet-18 batch-128 step")
	}
	const batch, size = 128, 224
	be := NewCPU(0)
	m, err := NewResNet(be, ResNetConfig{Depth: 18, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRNG(1)
	x := hostTensor(randVec(r, batch*3*size*size, 1), batch, 3, size, size)
	labels := make([]int32, batch)
	for i := range labels {
		labels[i] = int32(i * 7 % 1000)
	}
	ce := &CrossEntropy{}
	var peak uint64
	for step := 0; step < 2; step++ {
		start := time.Now()
		logits, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		loss, dl, err := ce.Compute(be, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		if err := m.CheckFinite(); err != nil {
			t.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapSys)
		t.Logf("step %d: loss %.4f, %.1fs (%.1f images/s), heap in use %.2f GiB, heap from OS %.2f GiB",
			step, loss, time.Since(start).Seconds(), batch/time.Since(start).Seconds(),
			float64(ms.HeapInuse)/(1<<30), float64(ms.HeapSys)/(1<<30))
	}
	// Activations saved for backward are about 2.6 GiB at this size.
	if peak > 6<<30 {
		t.Errorf("heap reached %.2f GiB", float64(peak)/(1<<30))
	}
}

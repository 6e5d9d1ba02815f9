package nn

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestSteadyStateAllocations checks that after the first step a training
// step allocates no tensors: activations, gradient temporaries and backend
// scratch are reused (what remains is small bookkeeping).
func TestSteadyStateAllocations(t *testing.T) {
	b := NewCPU(2)
	m, err := NewResNet(b, ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 8, Classes: 10, Dropout: 0.1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	in := []int{16, 3, 32, 32}
	x, labels := testInput(NewRNG(2), in)
	xt := hostTensor(x, in...)
	ce := &CrossEntropy{}
	step := func() {
		logits, err := m.Forward(xt)
		if err != nil {
			t.Fatal(err)
		}
		_, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
	}
	step()
	// A smaller last batch reuses the larger buffers.
	small := hostTensor(x[:numel(in)/2], 8, 3, 32, 32)
	if _, err := m.Forward(small); err != nil {
		t.Fatal(err)
	}
	step()
	// No GC while measuring: it would empty sync.Pools (GEMM's packing
	// buffers live in one) and count their refill against the step.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const steps = 3
	for i := 0; i < steps; i++ {
		step()
	}
	runtime.ReadMemStats(&after)
	perStep := (after.TotalAlloc - before.TotalAlloc) / steps
	// The first conv's output alone is 16*8*32*32*4 = 512 KiB; what may
	// remain is bookkeeping (goroutine closures, tensor views).
	if perStep > 128<<10 {
		t.Errorf("a steady-state step allocates %d bytes", perStep)
	}
	t.Logf("steady-state step: %d bytes, %d allocations", perStep, (after.Mallocs-before.Mallocs)/steps)
}

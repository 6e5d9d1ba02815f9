package gpu

import (
	"errors"
	"strings"
	"testing"
)

// hotKernels run over whole activation tensors in every step: a spill to
// local memory there costs the step.
var hotKernels = []string{"k_nhwc_partial", "k_nhwc_bn_apply", "k_nhwc_bn_backward", "k_bf16_add", "k_bf16_relu_bwd",
	"k_chan_finish_wide", "k_sgd"}

// TestKernelResources: on a GPU, every kernel of the module has a
// resource report, fits at least one block of 256 threads per
// multiprocessor where it may have that many, and the hot kernels keep
// their arrays in registers (no local memory). Elsewhere the report is
// refused with errors.ErrUnsupported.
func TestKernelResources(t *testing.T) {
	names := kernelSignatures(kernelSource())
	for _, n := range hotKernels {
		if _, ok := names[n]; !ok {
			t.Fatalf("hot kernel %s is not in the source", n)
		}
	}
	b := openGPU(t, PrecisionBF16)
	ks, err := b.KernelResources(0)
	if b.info.Arch == "host" {
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("the emulator's report: %v, want errors.ErrUnsupported", err)
		}
		t.Skip("the resource report needs a CUDA device")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != len(names) {
		t.Errorf("%d kernels reported, the module has %d", len(ks), len(names))
	}
	hot := map[string]bool{}
	for _, n := range hotKernels {
		hot[n] = true
	}
	for _, k := range ks {
		if hot[k.Name] {
			t.Log(k)
		}
		if _, ok := names[k.Name]; !ok {
			t.Errorf("reported kernel %s is not in the source", k.Name)
		}
		if k.Registers <= 0 || k.MaxThreads <= 0 {
			t.Errorf("%s: %d registers, %d max threads", k.Name, k.Registers, k.MaxThreads)
		}
		if k.MaxThreads >= 256 && k.BlocksPerSM < 1 {
			t.Errorf("%s: no block of 256 threads fits a multiprocessor", k.Name)
		}
		if hot[k.Name] && k.LocalBytes != 0 {
			t.Errorf("%s: %d bytes of local memory per thread (spills or an array indexed at run time)", k.Name, k.LocalBytes)
		}
		delete(hot, k.Name)
	}
	if len(hot) > 0 {
		t.Errorf("hot kernels missing from the report: %v", strings.Join(keys(hot), " "))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

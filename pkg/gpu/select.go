package gpu

import (
	"errors"
	"fmt"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// SelectBackend returns the backend for a --device flag value:
//   - "cpu": nn.NewCPU(threads);
//   - "cuda" (or "gpu"): the CUDA backend of opts, or Open's error;
//   - "auto" (or ""): the CUDA backend when a usable GPU is found, else the
//     CPU backend, after calling log with the reason.
//
// Any other name is an error wrapping ErrDevice. log may be nil.
func SelectBackend(device string, threads int, opts Options, log func(format string, args ...any)) (nn.Backend, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	switch device {
	case "cpu":
		return nn.NewCPU(threads), nil
	case "cuda", "gpu":
		b, err := Open(opts)
		if err != nil {
			return nil, fmt.Errorf("gpu: --device %s: %w", device, err)
		}
		return b, nil
	case "auto", "":
		b, err := Open(opts)
		if err == nil {
			i := b.Info()
			log("device auto: using CUDA device %d (%s, %s, precision %s)", i.Ordinal, i.Name, i.Arch, b.Precision())
			return b, nil
		}
		if errors.Is(err, ErrOptions) {
			return nil, err
		}
		if opts.Precision != "" && opts.Precision != PrecisionFP32 {
			log("device auto: precision %s applies to a GPU only; the CPU backend computes in fp32", opts.Precision)
		}
		log("device auto: using the CPU backend: no usable CUDA GPU: %v", err)
		return nn.NewCPU(threads), nil
	}
	return nil, fmt.Errorf("%w: %q (want cuda, cpu or auto)", ErrDevice, device)
}

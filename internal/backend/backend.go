// Package backend opens the compute backend a binary asks for. It is apart
// from internal/cli so that the coordinator, which computes nothing, does
// not link the engine or the GPU backend.
package backend

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Open opens the compute backend for device ("cpu", "cuda", "auto") with
// threads CPU goroutines (<= 0: GOMAXPROCS) and, on a GPU, the options o
// (o.Precision "" = fp32; the library search of o.LibDir, o.LibPath and
// o.PythonRoots). auto falls back to the CPU (fp32) with a log line
// saying why.
func Open(device string, threads int, o gpu.Options, log *zap.Logger) (nn.Backend, error) {
	return gpu.SelectBackend(device, threads, o, func(format string, args ...any) {
		log.Info(fmt.Sprintf(format, args...))
	})
}

package cli

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/pkg/gpu"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Backend opens the compute backend for device ("cpu", "cuda", "auto");
// auto falls back to the CPU with a log line saying why.
func Backend(device string, threads int, log *zap.Logger) (nn.Backend, error) {
	return gpu.SelectBackend(device, threads, gpu.Options{}, func(format string, args ...any) {
		log.Info(fmt.Sprintf(format, args...))
	})
}

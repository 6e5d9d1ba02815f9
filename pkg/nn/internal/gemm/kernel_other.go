//go:build !amd64

package gemm

// archKernels: no assembly kernels on this architecture.
func archKernels() []*kernel { return nil }

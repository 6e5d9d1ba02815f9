package gpu

import (
	"fmt"
	"path/filepath"

	"github.com/ebitengine/purego"
)

// cuBLAS constants (cublas_api.h, library_types.h).
const (
	cublasOpN            = 0
	cublasOpT            = 1
	cublasDefaultMath    = 0
	cublasTF32TensorOp   = 3
	cudaR32F             = 0
	cudaR16BF            = 14
	cublasCompute32F     = 68
	cublasCompute32FTF32 = 77
	cublasGemmDefault    = -1
	cublasGemmDefaultTOp = 99
)

// cublas holds the cuBLAS entry points. Every function returns a
// cublasStatus_t (0 = CUBLAS_STATUS_SUCCESS).
type cublas struct {
	lib *library

	cublasCreate          func(h *uintptr) int32
	cublasDestroy         func(h uintptr) int32
	cublasGetVersion      func(h uintptr, v *int32) int32
	cublasSetStream       func(h uintptr, s uintptr) int32
	cublasSetMathMode     func(h uintptr, mode int32) int32
	cublasGetStatusString func(code int32) string
	cublasSgemm           func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
	cublasGemmEx          func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, atype int32, lda int32, b uint64, btype int32, ldb int32, beta *float32, c uint64, ctype int32, ldc int32, compute int32, algo int32) int32
}

var cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}

// loadCUBLAS opens cuBLAS; before each candidate in a directory it preloads
// that directory's cuBLASLt (same major version) so that wheels without an
// RPATH still resolve it.
func loadCUBLAS(dirs []string) (*cublas, error) {
	pre := func(dir string) {
		for _, n := range []string{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"} {
			p := filepath.Join(dir, n)
			if fileExists(p) {
				_, _ = purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL) // best effort: cuBLAS's own dlopen reports the real failure
			}
		}
	}
	lib, err := openLibrary("cuBLAS", cublasNames, dirs, pre)
	if err != nil {
		return nil, err
	}
	c := &cublas{lib: lib}
	for _, s := range []struct {
		f     any
		names []string
	}{
		{&c.cublasCreate, []string{"cublasCreate_v2"}},
		{&c.cublasDestroy, []string{"cublasDestroy_v2"}},
		{&c.cublasGetVersion, []string{"cublasGetVersion_v2"}},
		{&c.cublasSetStream, []string{"cublasSetStream_v2"}},
		{&c.cublasSetMathMode, []string{"cublasSetMathMode"}},
		{&c.cublasSgemm, []string{"cublasSgemm_v2"}},
		{&c.cublasGemmEx, []string{"cublasGemmEx"}},
	} {
		if err := lib.symAny(s.f, s.names...); err != nil {
			return nil, err
		}
	}
	if lib.symAny(&c.cublasGetStatusString, "cublasGetStatusString") != nil {
		c.cublasGetStatusString = nil
	}
	return c, nil
}

func (c *cublas) check(call string, code int32) error {
	if code == 0 {
		return nil
	}
	text := ""
	if c.cublasGetStatusString != nil {
		text = c.cublasGetStatusString(code)
	}
	return &wrapped{msg: fmt.Sprintf("%s: %s failed with cublasStatus %d (%s)", ErrCUBLAS, call, code, text), base: ErrCUBLAS}
}

package gpu

import (
	"unsafe"
)

// karg is one kernel argument: kind 'p' (device pointer, 8 bytes), 'i'
// (32-bit int or unsigned), 'f' (float), 'd' (double), and its bits.
type karg struct {
	kind byte
	v    uint64
}

// dim3 is a CUDA grid or block shape.
type dim3 [3]uint32

// gemmCall is one row-major GEMM, C = alpha*op(A)*op(B) + beta*C, with
// A and B in float32 or bf16 (bf16Operands) and C in float32.
type gemmCall struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        uint64
	lda, ldb, ldc  int
	bf16Operands   bool
	bf16Out        bool // C is bf16 (needs bf16Operands; beta must be 0)
}

// deviceAPI is everything the backend asks of the GPU. cudaDevice is the
// real one; tests use a recording fake to check the Go side (launch
// arguments against the kernels' C signatures, pool reuse) without a GPU.
// All work is stream-ordered on one stream.
type deviceAPI interface {
	allocator
	// launch enqueues kernel name.
	launch(name string, grid, block dim3, args []karg) error
	// gemm enqueues a row-major GEMM (cuBLAS).
	gemm(g gemmCall) error
	// memsetD32 sets n 32-bit words at ptr to v.
	memsetD32(ptr uint64, v uint32, n uint64) error
	// copyDtoD copies bytes between device buffers.
	copyDtoD(dst, src, bytes uint64) error
	// upload copies host memory to the device; src may be reused on return.
	upload(dst uint64, src unsafe.Pointer, bytes uint64) error
	// download waits for queued work, then copies device memory to host.
	download(dst unsafe.Pointer, src uint64, bytes uint64) error
	// hostAlloc returns bytes of page-locked host memory, freed by close.
	hostAlloc(bytes uint64) (unsafe.Pointer, error)
	// downloadAsync queues a copy of device memory to host behind the
	// work issued so far and returns a ticket for waitDownload.
	downloadAsync(dst unsafe.Pointer, src uint64, bytes uint64) (int, error)
	// waitDownload waits until ticket's copy has landed and releases the
	// ticket.
	waitDownload(ticket int) error
	// sync waits for queued work.
	sync() error
	// enter binds the device to the calling OS thread (which the caller
	// has locked) for the duration of one op.
	enter() error
	// close releases every device resource except pool blocks.
	close() error
}

// Package gpu is ringtrain's CUDA backend: an implementation of nn.Backend
// whose tensors live in NVIDIA GPU memory.
//
// It builds with CGO_ENABLED=0. At run time it opens the CUDA driver
// (libcuda.so.1), NVRTC and cuBLAS with dlopen (through purego), so one
// static binary runs on CPU-only machines (Open fails with ErrNoDevice or
// ErrLibraryNotFound, and SelectBackend falls back to the CPU) and on GPU
// nodes. Libraries are searched in a fixed order: Options.LibDir,
// $RINGTRAIN_CUDA_LIB_DIR, $LD_LIBRARY_PATH, the standard system and CUDA
// directories, Python environments' site-packages/nvidia/*/lib, and finally
// the dynamic loader's own search by soname.
//
// Kernels are CUDA C sources embedded in the binary (kernels/*.cu), compiled
// by NVRTC for the device's compute capability on first use and cached on
// disk under os.UserCacheDir()/ringtrain/kernels, keyed by a hash of the
// source, the architecture and the NVRTC version.
//
// Promises:
//   - Every op of nn.Backend, with the semantics stated there. Convolutions
//     are im2col + one cuBLAS GEMM per chunk of images; linear layers are
//     cuBLAS GEMMs; batch norm, pooling, loss, optimizers and reductions are
//     our own kernels.
//   - Deterministic: no kernel uses floating-point atomics; every reduction
//     has a fixed partition and a fixed tree order, and all work runs on one
//     stream, so the same inputs give bit-identical outputs on every call.
//   - Precision "fp32" (default; cuBLAS in plain fp32, no TF32), "tf32"
//     (cuBLAS TF32 tensor-core math for GEMMs), or "bf16" (convolution GEMM
//     operands rounded to bf16, fp32 accumulation and fp32 outputs; all
//     other tensors, master weights and optimizer state stay fp32).
//   - No per-step device allocations in steady state: tensors and scratch
//     come from a size-class memory pool.
//   - Errors are sticky: the first CUDA, NVRTC or cuBLAS failure is kept,
//     every later op becomes a no-op, and Sync returns that error.
//
// A Backend's methods must be called from one goroutine at a time (the
// nn.Backend contract); each call binds the CUDA context to the calling OS
// thread for its duration.
package gpu

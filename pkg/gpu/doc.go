// Package gpu is ringtrain's CUDA backend: an implementation of nn.Backend
// whose tensors live in NVIDIA GPU memory.
//
// It builds with CGO_ENABLED=0. At run time it opens the CUDA driver
// (libcuda.so.1), NVRTC, cuBLAS and, when present, cuDNN with dlopen
// (through purego), so one
// static binary runs on CPU-only machines (Open fails with ErrNoDevice or
// ErrLibraryNotFound, and SelectBackend falls back to the CPU) and on GPU
// nodes. Libraries are searched in a fixed order: Options.LibDir,
// Options.LibPath, the standard system and CUDA directories, Python
// environments' site-packages/nvidia/*/lib (the usual locations, then
// Options.PythonRoots'), and finally the dynamic loader's own search by
// soname. The package reads no environment variables: the binaries fill
// LibPath and PythonRoots from $RINGTRAIN_CUDA_LIB_DIR, $LD_LIBRARY_PATH,
// $VIRTUAL_ENV and $HOME (cmd/internal/env).
//
// Kernels are CUDA C sources embedded in the binary (kernels/*.cu), compiled
// by NVRTC for the device's compute capability on first use and cached on
// disk under os.UserCacheDir()/ringtrain/kernels, keyed by a hash of the
// source, the architecture, the NVRTC version and the options. They are
// compiled with --fmad=false: NVRTC never contracts a*b+c into an FMA, so
// each kernel rounds after every operation as pkg/nn's Go code does, and
// writes fmaf where the CPU fuses (torch's add(alpha=) and addcmul).
//
// Promises:
//   - Every op of nn.Backend, with the semantics stated there. Convolutions
//     use cuDNN's legacy API when libcudnn loads (Options.Conv "auto"; per
//     shape and direction, cuDNN's heuristic choice among the admissible
//     algorithms: deterministic always, and in fp32 plain FMA math without
//     FFT/Winograd), else im2col + one cuBLAS GEMM per chunk of images;
//     linear layers are cuBLAS GEMMs; batch norm, pooling, loss, optimizers
//     and reductions are our own kernels, computed operation by operation
//     as the CPU backend (bit-identical elementwise results).
//   - Deterministic: no kernel uses floating-point atomics; every reduction
//     has a fixed partition and a fixed tree order, and all compute runs on
//     one stream, so the same inputs give bit-identical outputs on every
//     call. A second stream only copies (nn.CopyStream, copystream.go:
//     uploads from page-locked memory ordered against the compute stream
//     by fences only, which the caller places).
//   - Precision "fp32" (default; cuBLAS and cuDNN in plain fp32, no TF32),
//     "tf32" (TF32 tensor-core math for GEMMs and convolutions), or "bf16"
//     (convolution operands rounded to bf16 with fp32 accumulation; with
//     cuDNN, NHWC bf16 copies of x, w and dy around each convolution and a
//     bf16 result widened back; all other tensors, master weights and
//     optimizer state stay fp32).
//   - No per-step device allocations in steady state: tensors and scratch
//     come from a size-class memory pool.
//   - The device ring (ipc.go, kernels/ring.cu): Backend implements
//     pkg/allreduce's Device. IPCExport/IPCOpen share device allocations
//     between processes of one host (CUDA IPC; a handle of another GPU
//     opens with lazy peer access when the two are peers, else in that
//     GPU's primary context here, copy-only: RingPull reaches it with
//     cuMemcpyPeerAsync), and RingAdd, RingCopy, RingDiv and RingSum64
//     are the host ring's float operations, bit for bit, so a same-host
//     ring of GPU workers reduces device to device.
//   - A training step needs one wait (step.go): nn.DeviceCounter keeps the
//     loss, the correct count and NaN/Inf counts on the device;
//     nn.PinnedUploader uploads from page-locked memory without staging.
//   - CUDA graphs (graph.go, nn.GraphCapturer, with Options.Graphs): ops
//     between BeginCapture and EndCapture are recorded and replayed by
//     Graph.Launch with the captured arguments and addresses; a capture
//     that needs the host or allocates fails without a sticky error, and a
//     graph launched after any pool traffic fails with nn.ErrGraphStale.
//   - Errors are sticky: the first CUDA, NVRTC or cuBLAS failure is kept,
//     every later op becomes a no-op, and Sync returns that error.
//
// A Backend's methods must be called from one goroutine at a time (the
// nn.Backend contract); each call binds the CUDA context to the calling OS
// thread for its duration.
package gpu

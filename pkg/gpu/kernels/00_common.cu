// common: types and helpers shared by every kernel file. The Go side
// concatenates kernels/*.cu in name order (this file first) and compiles
// them as one NVRTC program.
//
// Conventions: flat element counts are below 2^31 (checked on the host),
// so indices are unsigned 32-bit; every elementwise kernel is a grid-stride
// loop, correct for any grid size. No kernel uses floating-point atomics.

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define GRID_LOOP(i, n) \
  for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (u32)(n); i += blockDim.x * gridDim.x)

#define FINF __int_as_float(0x7f800000)

// f2bf rounds to the nearest bf16, ties to even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16 f2bf(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16)(u >> 16);
}

// relu32 as pkg/nn's CPU backend: NaN kept, -0 and negatives become +0.
__device__ __forceinline__ float relu32(float v) {
  u32 u = __float_as_uint(v);
  u32 keep = ((u >> 31) == 0u || (u & 0x7fffffffu) > 0x7f800000u) ? 0xffffffffu : 0u;
  return __uint_as_float(u & keep);
}

// posmask: all ones where y > 0 (not NaN, not +-0, not negative).
__device__ __forceinline__ u32 posmask(float y) {
  return y > 0.f ? 0xffffffffu : 0u;
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, float v) { *p = f2bf(v); }

// Fixed-order block reduction over blockDim.x (a power of two <= 1024)
// values in shared memory; the result is in sh[0] for every thread.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  u32 t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] = sh[t] + sh[t + s];
    __syncthreads();
  }
  T r = sh[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ float block_max(float v, float* sh) {
  u32 t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] = fmaxf(sh[t], sh[t + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

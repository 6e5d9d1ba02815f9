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

// chan_store writes channel c's finished sums: out0[c] = s0 and, when
// out1 is not null, out1[c] = s1 (times scale1[c] when scale1 is not
// null); with accumulate they are added instead.
__device__ __forceinline__ void chan_store(u32 c, double s0, double s1, const float* scale1, float* out0,
                                           float* out1, int accumulate) {
  if (scale1) s1 *= (double)scale1[c];
  if (accumulate) {
    out0[c] += (float)s0;
    if (out1) out1[c] += (float)s1;
  } else {
    out0[c] = (float)s0;
    if (out1) out1[c] = (float)s1;
  }
}

// tap_out is the output index o in [0, n) whose window reads input index
// i through tap k (o*stride - pad + k == i), or -1 when there is none.
__device__ __forceinline__ int tap_out(int i, int pad, int k, int stride, int n) {
  int v = i + pad - k;
  if (v < 0 || v % stride != 0) return -1;
  int o = v / stride;
  return o < n ? o : -1;
}

// pool_windows sets [*o0, *o1] to the outputs (of n) whose K-wide windows
// of stride S (padding pad) contain input index i.
__device__ __forceinline__ void pool_windows(int i, int pad, int K, int S, int n, int* o0, int* o1) {
  int l = i + pad - K + 1;
  *o0 = l <= 0 ? 0 : (l + S - 1) / S;
  *o1 = min((i + pad) / S, n - 1);
}

__device__ __forceinline__ float bf2f(bf16 h) { return __uint_as_float((u32)h << 16); }

// load32 reads one element as a float (bf16 widened exactly).
__device__ __forceinline__ float load32(const float* p) { return *p; }
__device__ __forceinline__ float load32(const bf16* p) { return bf2f(*p); }

// window_max returns the maximum of output (p, q)'s K x K window (stride S,
// padding pad) of an H x W plane whose element (h, w) is xp[(h*W + w)*step],
// with torch's rules: padding is -inf, the first maximum in row-major
// window order wins, a NaN wins; *bi receives the winner's h*W + w.
template <typename T>
__device__ __forceinline__ float window_max(const T* xp, u64 step, u32 p, u32 q, u32 H, u32 W, int K, int S, int pad,
                                            int* bi) {
  int h0 = (int)p * S - pad, w0 = (int)q * S - pad;
  int hs = max(h0, 0), ws = max(w0, 0);
  int he = min(h0 + K, (int)H), we = min(w0 + K, (int)W);
  float best = -FINF;
  *bi = hs * (int)W + ws;
  for (int h = hs; h < he; h++) {
    for (int w = ws; w < we; w++) {
      float v = load32(xp + (u64)(h * (int)W + w) * step);
      if (v > best || v != v) {
        best = v;
        *bi = h * (int)W + w;
      }
    }
  }
  return best;
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

// elementwise: ReLU, add, axpy, scale, mul, channel bias, casts.

extern "C" __global__ void k_relu(float* y, const float* x, u32 n) {
  GRID_LOOP(i, n) { y[i] = relu32(x[i]); }  // keeps NaN, as pkg/nn's CPU backend
}

// dx = dy where y > 0 else 0 (dx may alias dy).
extern "C" __global__ void k_relu_bwd(float* dx, const float* dy, const float* y, u32 n) {
  GRID_LOOP(i, n) { dx[i] = y[i] > 0.f ? dy[i] : 0.f; }
}

extern "C" __global__ void k_add(float* y, const float* a, const float* b, u32 n) {
  GRID_LOOP(i, n) { y[i] = a[i] + b[i]; }
}

extern "C" __global__ void k_axpy(float* y, float alpha, const float* x, u32 n) {
  GRID_LOOP(i, n) { y[i] += alpha * x[i]; }
}

extern "C" __global__ void k_scale(float* x, float alpha, u32 n) {
  GRID_LOOP(i, n) { x[i] *= alpha; }
}

extern "C" __global__ void k_mul(float* y, const float* a, const float* b, u32 n) {
  GRID_LOOP(i, n) { y[i] = a[i] * b[i]; }
}

// y[i] += b[(i / inner) % C]: channel bias for (N,C,H,W) with inner = H*W,
// and the row bias of a linear layer with inner = 1, C = O.
extern "C" __global__ void k_add_bias(float* y, const float* b, u32 C, u32 inner, u32 n) {
  GRID_LOOP(i, n) { y[i] += b[(i / inner) % C]; }
}

extern "C" __global__ void k_cast_bf16(bf16* y, const float* x, u32 n) {
  GRID_LOOP(i, n) { y[i] = f2bf(x[i]); }
}

// out (B, A, L) = in (A, B, L) transposed in its two leading dimensions.
template <typename T>
__device__ void permute_impl(T* out, const float* in, u32 A, u32 B, u32 L) {
  u32 n = A * B * L;
  GRID_LOOP(i, n) {
    u32 l = i % L;
    u32 t = i / L;
    u32 a = t % A;
    u32 b = t / A;
    store(&out[i], in[(a * B + b) * L + l]);
  }
}
extern "C" __global__ void k_permute_f32(float* out, const float* in, u32 A, u32 B, u32 L) { permute_impl(out, in, A, B, L); }
extern "C" __global__ void k_permute_bf16(bf16* out, const float* in, u32 A, u32 B, u32 L) { permute_impl(out, in, A, B, L); }

// count of NaN/Inf elements, added (integer atomics: deterministic) to *out.
extern "C" __global__ void k_count_nonfinite(const float* x, u32 n, u32* out) {
  __shared__ u32 sh[256];
  u32 c = 0;
  GRID_LOOP(i, n) {
    if ((__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u) c++;
  }
  u32 s = block_sum<u32>(c, sh);
  if (threadIdx.x == 0 && s != 0) atomicAdd(out, s);
}

// Layout changes around cuDNN's bf16 convolutions. out (N, HW, C) bf16 =
// in (N, C, HW) float, rounded (x, dy, and weights with N=K, HW=R*S).
extern "C" __global__ void k_nchw_to_nhwc_bf16(bf16* out, const float* in, u32 N, u32 C, u32 HW) {
  u32 n = N * C * HW;
  GRID_LOOP(i, n) {
    u32 c = i % C;
    u32 t = i / C;
    u32 p = t % HW;
    u32 b = t / HW;
    out[i] = f2bf(in[((u64)b * C + c) * HW + p]);
  }
}

// out (N, C, HW) float =, or += when accumulate, in (N, HW, C) bf16.
extern "C" __global__ void k_nhwc_bf16_to_nchw(float* out, const bf16* in, u32 N, u32 C, u32 HW, int accumulate) {
  u32 n = N * C * HW;
  GRID_LOOP(i, n) {
    u32 p = i % HW;
    u32 t = i / HW;
    u32 c = t % C;
    u32 b = t / C;
    float v = __uint_as_float((u32)in[((u64)b * HW + p) * C + c] << 16);
    out[i] = accumulate ? out[i] + v : v;
  }
}

// fused: a ReLU folded into the pass of its neighbour (nn.FusedOps), and
// 16-byte (float4) variants of the hot elementwise passes. Every element
// is computed by the same float32 expression, in the same order, as the
// separate scalar kernels and pkg/nn's CPU backend: bit-identical results.
//
// The _v4 kernels take n4 = n/4 quads and need every pointer 16-byte
// aligned (checked on the host); kernels with a channel index also need
// HW % 4 == 0 so a quad never straddles two channels. Elements past 4*n4
// (n % 4 of them) are done one by one by the first threads of the grid.

// y = relu(x*alpha + shift), alpha = invStd*gamma, shift = beta - mean*alpha.
extern "C" __global__ void k_bn_relu_forward(float* y, const float* x, const float* mean, const float* invstd,
                                             const float* gamma, const float* beta, u32 C, u32 HW, u32 n) {
  GRID_LOOP(i, n) {
    u32 c = (i / HW) % C;
    float alpha = invstd[c] * gamma[c];
    float shift = beta[c] - mean[c] * alpha;
    y[i] = relu32(x[i] * alpha + shift);
  }
}

// As k_bn_forward (relu = 0) or k_bn_relu_forward (relu = 1), four at a
// time; HW % 4 == 0 and n == 4*n4.
extern "C" __global__ void k_bn_forward_v4(float4* y, const float4* x, const float* mean, const float* invstd,
                                           const float* gamma, const float* beta, u32 C, u32 HW4, u32 n4,
                                           int relu) {
  GRID_LOOP(q, n4) {
    u32 c = (q / HW4) % C;
    float alpha = invstd[c] * gamma[c];
    float shift = beta[c] - mean[c] * alpha;
    float4 v = x[q];
    float4 o;
    o.x = v.x * alpha + shift;
    o.y = v.y * alpha + shift;
    o.z = v.z * alpha + shift;
    o.w = v.w * alpha + shift;
    if (relu) {
      o.x = relu32(o.x);
      o.y = relu32(o.y);
      o.z = relu32(o.z);
      o.w = relu32(o.w);
    }
    y[q] = o;
  }
}

// y = relu(a + b); y may alias a or b (each element is read, then written,
// by one thread).
extern "C" __global__ void k_add_relu(float* y, const float* a, const float* b, u32 n) {
  GRID_LOOP(i, n) { y[i] = relu32(a[i] + b[i]); }
}

// y = a + b (relu = 0) or relu(a + b) (relu = 1), four at a time, then
// the n - 4*n4 tail one by one.
extern "C" __global__ void k_add_v4(float4* y, const float4* a, const float4* b, u32 n4, u32 n, int relu) {
  GRID_LOOP(q, n4) {
    float4 u = a[q], v = b[q];
    float4 o;
    o.x = u.x + v.x;
    o.y = u.y + v.y;
    o.z = u.z + v.z;
    o.w = u.w + v.w;
    if (relu) {
      o.x = relu32(o.x);
      o.y = relu32(o.y);
      o.z = relu32(o.z);
      o.w = relu32(o.w);
    }
    y[q] = o;
  }
  u32 t = blockIdx.x * blockDim.x + threadIdx.x;
  u32 i = 4u * n4 + t;
  if (i < n) {
    float* ys = (float*)y;
    float s = ((const float*)a)[i] + ((const float*)b)[i];
    ys[i] = relu ? relu32(s) : s;
  }
}

// dx = dy where y > 0 else +0, four at a time, then the tail (dx may alias dy).
extern "C" __global__ void k_relu_bwd_v4(float4* dx, const float4* dy, const float4* y, u32 n4, u32 n) {
  GRID_LOOP(q, n4) {
    float4 g = dy[q], v = y[q];
    float4 o;
    o.x = __uint_as_float(__float_as_uint(g.x) & posmask(v.x));
    o.y = __uint_as_float(__float_as_uint(g.y) & posmask(v.y));
    o.z = __uint_as_float(__float_as_uint(g.z) & posmask(v.z));
    o.w = __uint_as_float(__float_as_uint(g.w) & posmask(v.w));
    dx[q] = o;
  }
  u32 t = blockIdx.x * blockDim.x + threadIdx.x;
  u32 i = 4u * n4 + t;
  if (i < n) {
    ((float*)dx)[i] = __uint_as_float(__float_as_uint(((const float*)dy)[i]) & posmask(((const float*)y)[i]));
  }
}

// As k_bn_backward, four at a time; HW % 4 == 0 and n == 4*n4.
extern "C" __global__ void k_bn_backward_v4(float4* dx, const float4* dy, const float4* x, const float* mean,
                                            const float* invstd, const float* gamma, const float* sumdy,
                                            const float* sumdyxhat, u32 C, u32 HW4, u32 n4, double m) {
  GRID_LOOP(q, n4) {
    u32 c = (q / HW4) % C;
    float is = invstd[c];
    float proj = (float)((double)sumdyxhat[c] * (double)is / m);
    float gradMean = (float)((double)sumdy[c] / m);
    float ws = is * gamma[c];
    float mu = mean[c];
    float4 g = dy[q], v = x[q];
    float4 o;
    o.x = (g.x - (v.x - mu) * proj - gradMean) * ws;
    o.y = (g.y - (v.y - mu) * proj - gradMean) * ws;
    o.z = (g.z - (v.z - mu) * proj - gradMean) * ws;
    o.w = (g.w - (v.w - mu) * proj - gradMean) * ws;
    dx[q] = o;
  }
}

// BN backward statistics with the ReLU mask applied first, in place on dy:
// g = dy where y > 0 else +0 (written back to dy), s0 = sum g,
// s1 = sum g*(x-mean) (k_chan_finish multiplies by invStd). Same partition
// and order as k_chan_partial mode 1.
extern "C" __global__ void k_chan_partial_relu(float* dy, const float* y, const float* x, const float* mean,
                                               u32 N, u32 C, u32 HW, u32 splits, double* part) {
  __shared__ double sh[256];
  u32 c = blockIdx.y, j = blockIdx.x;
  u32 M = N * HW;
  u32 chunk = (M + splits - 1) / splits;
  u32 lo = j * chunk;
  u32 hi = min(M, lo + chunk);
  double mu = (double)mean[c];
  double s0 = 0.0, s1 = 0.0;
  for (u32 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    u32 nn = i / HW;
    u32 hw = i - nn * HW;
    u32 idx = (nn * C + c) * HW + hw;
    float g = __uint_as_float(__float_as_uint(dy[idx]) & posmask(y[idx]));
    dy[idx] = g;
    double v = (double)g;
    s0 += v;
    s1 += v * ((double)x[idx] - mu);
  }
  s0 = block_sum<double>(s0, sh);
  s1 = block_sum<double>(s1, sh);
  if (threadIdx.x == 0) {
    part[((u64)c * splits + j) * 2] = s0;
    part[((u64)c * splits + j) * 2 + 1] = s1;
  }
}

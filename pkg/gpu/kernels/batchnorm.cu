// batchnorm: per-channel reductions over (N,C,HW) with M = N*HW elements
// per channel, and the normalisation itself.
//
// Reductions are deterministic: the M elements of a channel are cut into
// `splits` fixed contiguous chunks (grid (splits, C), 256 threads); each
// thread sums its strided elements in float64, the block reduces in a
// fixed tree, and a second kernel adds the chunks in index order.

// mode 0: s0 = sum a, s1 = sum a*a          (BN stats; a = x)
// mode 1: s0 = sum a, s1 = sum a*(b-mean)   (BN backward stats; a = dy, b = x;
//         k_chan_finish multiplies by invstd, as the CPU does)
// mode 2: s0 = sum a                        (bias gradient)
extern "C" __global__ void k_chan_partial(int mode, const float* a, const float* b,
                                          const float* mean, const float* invstd,
                                          u32 N, u32 C, u32 HW, u32 splits, double* part) {
  __shared__ double sh[256];
  u32 c = blockIdx.y, j = blockIdx.x;
  u32 M = N * HW;
  u32 chunk = (M + splits - 1) / splits;
  u32 lo = j * chunk;
  u32 hi = min(M, lo + chunk);
  float mu = 0.f;
  if (mode == 1) mu = mean[c];
  double s0 = 0.0, s1 = 0.0;
  for (u32 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    u32 n = i / HW;
    u32 hw = i - n * HW;
    u32 idx = (n * C + c) * HW + hw;
    double v = (double)a[idx];
    s0 += v;
    if (mode == 0) {
      s1 += v * v;
    } else if (mode == 1) {
      s1 += v * ((double)b[idx] - (double)mu);
    }
  }
  s0 = block_sum<double>(s0, sh);
  s1 = block_sum<double>(s1, sh);
  if (threadIdx.x == 0) {
    part[((u64)c * splits + j) * 2] = s0;
    part[((u64)c * splits + j) * 2 + 1] = s1;
  }
}

// out0[c] (=, or += when accumulate) sum of the chunks' s0; out1 likewise
// for s1 (times scale1[c] when scale1 is not null) when out1 is not null.
extern "C" __global__ void k_chan_finish(const double* part, u32 C, u32 splits, const float* scale1,
                                         float* out0, float* out1, int accumulate) {
  u32 c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double s0 = 0.0, s1 = 0.0;
  for (u32 j = 0; j < splits; j++) {
    s0 += part[((u64)c * splits + j) * 2];
    s1 += part[((u64)c * splits + j) * 2 + 1];
  }
  chan_store(c, s0, s1, scale1, out0, out1, accumulate);
}

// mean, invStd from sums over m elements; running statistics as torch.
extern "C" __global__ void k_bn_stats_finish(float* mean, float* invstd, float* rmean, float* rvar,
                                             const float* sum, const float* sumsq, u32 C,
                                             double m, float momentum, float eps) {
  u32 c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double mu = (double)sum[c] / m;
  double var = (double)sumsq[c] / m - mu * mu;
  if (var < 0.0) var = 0.0;
  mean[c] = (float)mu;
  invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
  double mom = (double)momentum;
  if (rmean) rmean[c] = (float)(mom * mu + (1.0 - mom) * (double)rmean[c]);
  if (rvar) {
    double unb = m > 1.0 ? var * m / (m - 1.0) : var;
    rvar[c] = (float)(mom * unb + (1.0 - mom) * (double)rvar[c]);
  }
}

extern "C" __global__ void k_bn_invstd(float* invstd, const float* v, u32 C, float eps) {
  u32 c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  invstd[c] = (float)(1.0 / sqrt((double)v[c] + (double)eps));
}

extern "C" __global__ void k_bn_forward(float* y, const float* x, const float* mean, const float* invstd,
                                        const float* gamma, const float* beta, u32 C, u32 HW, u32 n) {
  // torch's CPU formula, as pkg/nn: alpha = invStd*gamma,
  // shift = beta - mean*alpha, y = x*alpha + shift.
  GRID_LOOP(i, n) {
    u32 c = (i / HW) % C;
    float alpha = invstd[c] * gamma[c];
    float shift = beta[c] - mean[c] * alpha;
    y[i] = x[i] * alpha + shift;
  }
}

// dx = gamma*invStd*(dy - sumDy/m - xhat*sumDyXhat/m), in torch's CPU
// form as pkg/nn: proj = sumDyXhat*invStd/m and gradMean = sumDy/m (in
// double, rounded once), dx = (dy - (x-mean)*proj - gradMean) * (invStd*gamma).
extern "C" __global__ void k_bn_backward(float* dx, const float* dy, const float* x, const float* mean,
                                         const float* invstd, const float* gamma, const float* sumdy,
                                         const float* sumdyxhat, u32 C, u32 HW, u32 n, double m) {
  GRID_LOOP(i, n) {
    u32 c = (i / HW) % C;
    float is = invstd[c];
    float proj = (float)((double)sumdyxhat[c] * (double)is / m);
    float gradMean = (float)((double)sumdy[c] / m);
    float ws = is * gamma[c];
    dx[i] = (dy[i] - (x[i] - mean[c]) * proj - gradMean) * ws;
  }
}

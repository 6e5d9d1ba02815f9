// nhwc: kernels over "resident" bf16 activations, the layout the bf16
// precision keeps between layers (see resident.go): a tensor of logical
// shape (N, C, H, W) is stored as bf16 in (N, H*W, C) order, so element
// (row m = n*HW + hw, channel c) is at m*C + c. Every kernel here needs
// C % 8 == 0 and 16-byte aligned pointers (checked on the host): a thread
// moves one uint4, eight channels of one row. Arithmetic is float32
// (statistics float64), rounded to bf16 once when stored.

__device__ __forceinline__ void unpack8(uint4 v, float* f) {
  f[0] = __uint_as_float(v.x << 16);
  f[1] = __uint_as_float(v.x & 0xffff0000u);
  f[2] = __uint_as_float(v.y << 16);
  f[3] = __uint_as_float(v.y & 0xffff0000u);
  f[4] = __uint_as_float(v.z << 16);
  f[5] = __uint_as_float(v.z & 0xffff0000u);
  f[6] = __uint_as_float(v.w << 16);
  f[7] = __uint_as_float(v.w & 0xffff0000u);
}

__device__ __forceinline__ u32 pack2(float lo, float hi) { return (u32)f2bf(lo) | ((u32)f2bf(hi) << 16); }

__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 v;
  v.x = pack2(f[0], f[1]);
  v.y = pack2(f[2], f[3]);
  v.z = pack2(f[4], f[5]);
  v.w = pack2(f[6], f[7]);
  return v;
}

__device__ __forceinline__ uint4 u4(u32 x, u32 y, u32 z, u32 w) {
  uint4 v;
  v.x = x;
  v.y = y;
  v.z = z;
  v.w = w;
  return v;
}

// relu_mask8 keeps each bf16 of a where the matching bf16 of y is > 0
// (sign clear, not zero, not NaN) and makes it +0 elsewhere.
__device__ __forceinline__ uint4 relu_mask8(uint4 va, uint4 vy) {
  u32 wa[4] = {va.x, va.y, va.z, va.w};
  u32 wy[4] = {vy.x, vy.y, vy.z, vy.w};
  for (int h = 0; h < 4; h++) {
    u32 r = 0;
    for (int s = 0; s < 2; s++) {
      u32 yb = (wy[h] >> (16 * s)) & 0xffffu;
      bool pos = (yb & 0x8000u) == 0u && yb != 0u && (yb & 0x7fffu) <= 0x7f80u;
      if (pos) r |= wa[h] & (0xffffu << (16 * s));
    }
    wa[h] = r;
  }
  return u4(wa[0], wa[1], wa[2], wa[3]);
}

// nhwc_acc adds one row's eight channels to the running sums (see
// k_nhwc_partial's modes; vb is not read in mode 0).
__device__ __forceinline__ void nhwc_acc(int mode, uint4 va, uint4 vb, const float* mu, double* s0, double* s1) {
  float fa[8];
  unpack8(va, fa);
  if (mode == 0) {
    for (int k = 0; k < 8; k++) {
      double v = (double)fa[k];
      s0[k] += v;
      s1[k] += v * v;
    }
  } else {
    float fb[8];
    unpack8(vb, fb);
    for (int k = 0; k < 8; k++) {
      double v = (double)fa[k];
      s0[k] += v;
      s1[k] += v * ((double)fb[k] - (double)mu[k]);
    }
  }
}

// Per-channel sums over the M rows of a resident tensor, cut into
// `splits` fixed contiguous row chunks (grid (splits), any block size).
// A block's threads take channel groups of 8 (g = t % G, G = C/8) and row
// lanes (t / G); each thread sums its rows in float64, the lanes are added
// in lane order, and the chunk's sums go to part[(c*splits + j)*2 + {0,1}]
// (k_chan_finish's layout, which adds the chunks in order).
// mode 0: s0 = sum a, s1 = sum a*a            (BN statistics; a = x)
// mode 1: s0 = sum a, s1 = sum a*(b - mean)   (BN backward; a = dy, b = x)
// mode 2: as mode 1 after the ReLU mask: a = a where y > 0 else +0, written
//         back to a (ReLU backward fused into BN backward statistics).
// A thread loads NHWC_ROWS rows before it adds any of them (in row order,
// so the sums are those of the one-row loop): one 16-byte load in flight
// per thread left the memory system mostly idle.
#define NHWC_MAXT 256
#define NHWC_ROWS 4
extern "C" __global__ void k_nhwc_partial(int mode, bf16* a, const bf16* b, const bf16* y, const float* mean,
                                          u32 M, u32 C, u32 splits, double* part) {
  __shared__ double sh[NHWC_MAXT * 16];
  u32 j = blockIdx.x;
  u32 G = C >> 3;
  u32 T = blockDim.x;
  u32 chunk = (M + splits - 1) / splits;
  u32 lo = j * chunk;
  u32 hi = min(M, lo + chunk);
  u32 L = G >= T ? 1u : T / G;  // row lanes
  u32 t = threadIdx.x;
  u32 lane = G >= T ? 0u : t / G;
  // Groups this thread owns: t % G when lanes > 1, else t, t+T, ...
  for (u32 g = (G >= T ? t : t % G); g < G; g += (G >= T ? T : G)) {
    double s0[8], s1[8];
    float mu[8];
    for (int k = 0; k < 8; k++) {
      s0[k] = 0.0;
      s1[k] = 0.0;
      mu[k] = mode == 0 ? 0.f : mean[g * 8 + k];
    }
    if (lane < L) {
      u32 m = lo + lane;
      for (; m + (NHWC_ROWS - 1) * L < hi; m += NHWC_ROWS * L) {
        uint4 va[NHWC_ROWS], vb[NHWC_ROWS], vy[NHWC_ROWS];
        for (int r = 0; r < NHWC_ROWS; r++) {
          u64 off = (u64)(m + r * L) * C + g * 8;
          va[r] = *(const uint4*)(a + off);
          vb[r] = mode == 0 ? u4(0, 0, 0, 0) : *(const uint4*)(b + off);
          vy[r] = mode == 2 ? *(const uint4*)(y + off) : u4(0, 0, 0, 0);
        }
        for (int r = 0; r < NHWC_ROWS; r++) {
          if (mode == 2) {
            va[r] = relu_mask8(va[r], vy[r]);
            *(uint4*)(a + (u64)(m + r * L) * C + g * 8) = va[r];
          }
          nhwc_acc(mode, va[r], vb[r], mu, s0, s1);
        }
      }
      for (; m < hi; m += L) {
        u64 off = (u64)m * C + g * 8;
        uint4 va = *(const uint4*)(a + off);
        uint4 vb = mode == 0 ? u4(0, 0, 0, 0) : *(const uint4*)(b + off);
        if (mode == 2) {
          va = relu_mask8(va, *(const uint4*)(y + off));
          *(uint4*)(a + off) = va;
        }
        nhwc_acc(mode, va, vb, mu, s0, s1);
      }
    }
    if (L == 1) {
      for (int k = 0; k < 8; k++) {
        u64 c = (u64)g * 8 + k;
        part[(c * splits + j) * 2] = s0[k];
        part[(c * splits + j) * 2 + 1] = s1[k];
      }
      continue;
    }
    if (lane < L) {
      for (int k = 0; k < 8; k++) {
        sh[(lane * G + g) * 16 + k] = s0[k];
        sh[(lane * G + g) * 16 + 8 + k] = s1[k];
      }
    }
    __syncthreads();
    if (lane == 0) {
      for (int k = 0; k < 8; k++) {
        double r0 = 0.0, r1 = 0.0;
        for (u32 l = 0; l < L; l++) {
          r0 += sh[(l * G + g) * 16 + k];
          r1 += sh[(l * G + g) * 16 + 8 + k];
        }
        u64 c = (u64)g * 8 + k;
        part[(c * splits + j) * 2] = r0;
        part[(c * splits + j) * 2 + 1] = r1;
      }
    }
  }
}

// Per-channel coefficients of the BN passes (C threads), float32 as the
// fp32 kernels compute them per element:
// mode 0 (forward): co[c] = alpha = invStd*gamma, co[C+c] = shift = beta - mean*alpha.
// mode 1 (backward): co[c] = proj = sumDyXhat*invStd/m (double, rounded
// once), co[C+c] = gradMean = sumDy/m, co[2C+c] = invStd*gamma, co[3C+c] = mean.
extern "C" __global__ void k_bn_coef(int mode, float* co, const float* mean, const float* invstd, const float* gamma,
                                     const float* beta, const float* sumdy, const float* sumdyxhat, u32 C, double m) {
  u32 c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float is = invstd[c];
  if (mode == 0) {
    float alpha = is * gamma[c];
    co[c] = alpha;
    co[C + c] = beta[c] - mean[c] * alpha;
  } else {
    co[c] = (float)((double)sumdyxhat[c] * (double)is / m);
    co[C + c] = (float)((double)sumdy[c] / m);
    co[2 * C + c] = is * gamma[c];
    co[3 * C + c] = mean[c];
  }
}

// y = x*alpha + shift (then ReLU when relu), co from k_bn_coef mode 0.
// n8 = n/8 groups; y may alias x.
extern "C" __global__ void k_nhwc_bn_apply(uint4* y, const uint4* x, const float* co, u32 C, u32 n8, int relu) {
  u32 G = C >> 3;
  GRID_LOOP(i, n8) {
    u32 c0 = (i % G) * 8;
    float f[8];
    unpack8(x[i], f);
    for (int k = 0; k < 8; k++) {
      float o = f[k] * co[c0 + k] + co[C + c0 + k];
      f[k] = relu ? relu32(o) : o;
    }
    y[i] = pack8(f);
  }
}

// dx = (dy - (x - mean)*proj - gradMean) * (invStd*gamma), co from
// k_bn_coef mode 1; dx may alias dy.
extern "C" __global__ void k_nhwc_bn_backward(uint4* dx, const uint4* dy, const uint4* x, const float* co, u32 C,
                                              u32 n8) {
  u32 G = C >> 3;
  GRID_LOOP(i, n8) {
    u32 c0 = (i % G) * 8;
    float g[8], v[8];
    unpack8(dy[i], g);
    unpack8(x[i], v);
    for (int k = 0; k < 8; k++) {
      u32 c = c0 + k;
      g[k] = (g[k] - (v[k] - co[3 * C + c]) * co[c] - co[C + c]) * co[2 * C + c];
    }
    dx[i] = pack8(g);
  }
}

// Layout-free bf16 elementwise passes over n8 groups of 8.

// y = relu(x); y may alias x.
extern "C" __global__ void k_bf16_relu(uint4* y, const uint4* x, u32 n8) {
  GRID_LOOP(i, n8) {
    float f[8];
    unpack8(x[i], f);
    for (int k = 0; k < 8; k++) f[k] = relu32(f[k]);
    y[i] = pack8(f);
  }
}

// y = a + b (then ReLU when relu); y may alias a or b.
extern "C" __global__ void k_bf16_add(uint4* y, const uint4* a, const uint4* b, u32 n8, int relu) {
  GRID_LOOP(i, n8) {
    float u[8], v[8];
    unpack8(a[i], u);
    unpack8(b[i], v);
    for (int k = 0; k < 8; k++) {
      float s = u[k] + v[k];
      u[k] = relu ? relu32(s) : s;
    }
    y[i] = pack8(u);
  }
}

// dx = dy where y > 0 else +0; dx may alias dy.
extern "C" __global__ void k_bf16_relu_bwd(uint4* dx, const uint4* dy, const uint4* y, u32 n8) {
  GRID_LOOP(i, n8) {
    float g[8], v[8];
    unpack8(dy[i], g);
    unpack8(y[i], v);
    for (int k = 0; k < 8; k++) g[k] = __uint_as_float(__float_as_uint(g[k]) & posmask(v[k]));
    dx[i] = pack8(g);
  }
}

// y (N, C) float = mean over hw of x (resident, N*HW rows), summed in
// float64 in hw order; one thread per (n, c), consecutive threads on
// consecutive channels.
extern "C" __global__ void k_nhwc_gap(float* y, const bf16* x, u32 N, u32 C, u32 HW) {
  GRID_LOOP(i, N * C) {
    u32 c = i % C;
    u32 n = i / C;
    const bf16* xp = x + (u64)n * HW * C + c;
    double s = 0.0;
    for (u32 k = 0; k < HW; k++) s += (double)bf2f(xp[(u64)k * C]);
    y[i] = (float)(s / (double)HW);
  }
}

// Max-pool over resident x (N, H*W, C) into resident y (N, P*Q, C), with
// k_maxpool's rules (-inf padding, first maximum in row-major window
// order, NaN wins); argmax (N, P*Q, C) float holds the h*W+w of the max.
extern "C" __global__ void k_nhwc_maxpool(bf16* y, float* argmax, const bf16* x, u32 N, u32 C, u32 H, u32 W, u32 P,
                                          u32 Q, int K, int S, int pad) {
  GRID_LOOP(i, N * P * Q * C) {
    u32 c = i % C;
    u32 t = i / C;
    u32 q = t % Q;
    u32 p = (t / Q) % P;
    u32 n = t / (P * Q);
    int bi;
    float best = window_max(x + (u64)n * H * W * C + c, C, p, q, H, W, K, S, pad, &bi);
    y[i] = f2bf(best);
    argmax[i] = (float)bi;
  }
}

// dx (resident) = 0 then dx[argmax] += dy, as k_maxpool_bwd's gather in
// (p, q) row-major order, on resident dy and dx.
extern "C" __global__ void k_nhwc_maxpool_bwd(bf16* dx, const bf16* dy, const float* argmax, u32 N, u32 C, u32 H,
                                              u32 W, u32 P, u32 Q, int K, int S, int pad) {
  GRID_LOOP(i, N * H * W * C) {
    u32 c = i % C;
    u32 t = i / C;
    u32 hw = t % (H * W);
    u32 n = t / (H * W);
    int h = (int)(hw / W), w = (int)(hw % W);
    int p0, p1, q0, q1;
    pool_windows(h, pad, K, S, (int)P, &p0, &p1);
    pool_windows(w, pad, K, S, (int)Q, &q0, &q1);
    u64 base = (u64)n * P * Q * C + c;
    float acc = 0.f;
    for (int p = p0; p <= p1; p++) {
      for (int q = q0; q <= q1; q++) {
        u64 o = base + (u64)(p * (int)Q + q) * C;
        if ((int)argmax[o] == (int)hw) acc += bf2f(dy[o]);
      }
    }
    dx[i] = f2bf(acc);
  }
}

// As k_chan_finish for many chunks: one block per channel (grid C); the
// block's threads sum the chunks j = t, t+T, ... in order, then a fixed
// tree adds the threads' sums (block_sum), so the result depends on the
// chunk count and block size only.
extern "C" __global__ void k_chan_finish_wide(const double* part, u32 C, u32 splits, const float* scale1,
                                              float* out0, float* out1, int accumulate) {
  __shared__ double sh[256];
  u32 c = blockIdx.x;
  double s0 = 0.0, s1 = 0.0;
  for (u32 j = threadIdx.x; j < splits; j += blockDim.x) {
    s0 += part[((u64)c * splits + j) * 2];
    s1 += part[((u64)c * splits + j) * 2 + 1];
  }
  s0 = block_sum<double>(s0, sh);
  s1 = block_sum<double>(s1, sh);
  if (threadIdx.x == 0) chan_store(c, s0, s1, scale1, out0, out1, accumulate);
}

// Convolutions of resident tensors as GEMMs (gemmconv.go).
//
// col (N*P*Q, R*S*C) bf16 row-major: row (n, p, q), column (r*S + s)*C + c
// holds x[n, p*sh - ph + r, q*sw - pw + s, c] of resident x, 0 outside
// the image. One thread moves 8 channels.
extern "C" __global__ void k_nhwc_im2col(uint4* col, const uint4* x, u32 N, u32 C, u32 H, u32 W, u32 R, u32 S,
                                         u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  u32 G = C >> 3;
  GRID_LOOP(i, N * P * Q * R * S * G) {
    u32 t = i;
    u32 g = t % G; t /= G;
    u32 s = t % S; t /= S;
    u32 r = t % R; t /= R;
    u32 q = t % Q; t /= Q;
    u32 p = t % P;
    u32 n = t / P;
    int h = (int)p * sh - ph + (int)r;
    int w = (int)q * sw - pw + (int)s;
    uint4 v;
    v.x = 0u;
    v.y = 0u;
    v.z = 0u;
    v.w = 0u;
    if (h >= 0 && h < (int)H && w >= 0 && w < (int)W) v = x[(((u64)n * H + (u32)h) * W + (u32)w) * G + g];
    col[i] = v;
  }
}

// dx (resident) = bf16 of the float32 sum, r then s ascending, of the
// dcol (N*P*Q, R*S*C) float entries that k_nhwc_im2col took from each
// pixel (a gather: one thread per dx element).
extern "C" __global__ void k_nhwc_col2im(bf16* dx, const float* dcol, u32 N, u32 C, u32 H, u32 W, u32 R, u32 S,
                                         u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  u32 RSC = R * S * C;
  GRID_LOOP(i, N * H * W * C) {
    u32 c = i % C;
    u32 t = i / C;
    int w = (int)(t % W); t /= W;
    int h = (int)(t % H);
    u32 n = t / H;
    float acc = 0.f;
    for (u32 r = 0; r < R; r++) {
      int p = tap_out(h, ph, (int)r, sh, (int)P);
      if (p < 0) continue;
      for (u32 s = 0; s < S; s++) {
        int q = tap_out(w, pw, (int)s, sw, (int)Q);
        if (q < 0) continue;
        acc += dcol[(((u64)n * P + (u32)p) * Q + (u32)q) * RSC + (r * S + s) * C + c];
      }
    }
    dx[i] = f2bf(acc);
  }
}

// dw (K, C, R*S) float += src (K, R*S, C) float.
extern "C" __global__ void k_krsc_to_kcrs_acc(float* dw, const float* src, u32 K, u32 C, u32 RS) {
  GRID_LOOP(i, K * C * RS) {
    u32 rs = i % RS;
    u32 t = i / RS;
    u32 c = t % C;
    u32 k = t / C;
    dw[i] += src[((u64)k * RS + rs) * C + c];
  }
}

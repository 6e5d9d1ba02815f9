// conv: im2col / col2im for convolutions done as GEMMs.
//
// col layout: (C*R*S, G*P*Q) row-major, row (c*R + r)*S + s, column
// g*P*Q + p*Q + q, for a chunk of G images of x (G,C,H,W). With the weight
// viewed as (K, C*R*S), W x col is (K, G*P*Q).

template <typename T>
__device__ void im2col_impl(T* col, const float* x, u32 G, u32 C, u32 H, u32 W, u32 R, u32 S,
                            u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  u32 n = C * R * S * G * P * Q;
  GRID_LOOP(i, n) {
    u32 t = i;
    u32 q = t % Q; t /= Q;
    u32 p = t % P; t /= P;
    u32 g = t % G; t /= G;
    u32 s = t % S; t /= S;
    u32 r = t % R;
    u32 c = t / R;
    int h = (int)p * sh - ph + (int)r;
    int w = (int)q * sw - pw + (int)s;
    float v = 0.f;
    if (h >= 0 && h < (int)H && w >= 0 && w < (int)W) v = x[((g * C + c) * H + (u32)h) * W + (u32)w];
    store(&col[i], v);
  }
}

extern "C" __global__ void k_im2col_f32(float* col, const float* x, u32 G, u32 C, u32 H, u32 W, u32 R,
                                        u32 S, u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  im2col_impl(col, x, G, C, H, W, R, S, P, Q, sh, sw, ph, pw);
}
extern "C" __global__ void k_im2col_bf16(bf16* col, const float* x, u32 G, u32 C, u32 H, u32 W, u32 R,
                                         u32 S, u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  im2col_impl(col, x, G, C, H, W, R, S, P, Q, sh, sw, ph, pw);
}

// dx (G,C,H,W) = sum of the dcol entries that im2col took from each pixel
// (assign). A gather: one thread per dx element, r then s ascending.
extern "C" __global__ void k_col2im(float* dx, const float* dcol, u32 G, u32 C, u32 H, u32 W, u32 R,
                                    u32 S, u32 P, u32 Q, int sh, int sw, int ph, int pw) {
  u32 n = G * C * H * W;
  u32 GPQ = G * P * Q;
  GRID_LOOP(i, n) {
    u32 t = i;
    int w = (int)(t % W); t /= W;
    int h = (int)(t % H); t /= H;
    u32 c = t % C;
    u32 g = t / C;
    float acc = 0.f;
    for (u32 r = 0; r < R; r++) {
      int p = tap_out(h, ph, (int)r, sh, (int)P);
      if (p < 0) continue;
      for (u32 s = 0; s < S; s++) {
        int q = tap_out(w, pw, (int)s, sw, (int)Q);
        if (q < 0) continue;
        acc += dcol[((c * R + r) * S + s) * GPQ + g * P * Q + (u32)p * Q + (u32)q];
      }
    }
    dx[i] = acc;
  }
}

// pooling: max-pool (torch's rules: -inf padding, first maximum wins, NaN
// propagates) and global average pooling.

extern "C" __global__ void k_maxpool(float* y, float* argmax, const float* x, u32 NC, u32 H, u32 W,
                                     u32 P, u32 Q, int K, int S, int pad) {
  u32 n = NC * P * Q;
  GRID_LOOP(i, n) {
    u32 q = i % Q;
    u32 p = (i / Q) % P;
    u32 nc = i / (P * Q);
    int bi;
    float best = window_max(x + (u64)nc * H * W, 1, p, q, H, W, K, S, pad, &bi);
    y[i] = best;
    argmax[i] = (float)bi;
  }
}

// dx = 0 then dx[argmax] += dy, as a gather: each input pixel sums, in
// (p, q) row-major order, the dy of the windows whose argmax it is.
extern "C" __global__ void k_maxpool_bwd(float* dx, const float* dy, const float* argmax, u32 NC, u32 H,
                                         u32 W, u32 P, u32 Q, int K, int S, int pad) {
  u32 n = NC * H * W;
  GRID_LOOP(i, n) {
    u32 hw = i % (H * W);
    u32 nc = i / (H * W);
    int h = (int)(hw / W), w = (int)(hw % W);
    int p0, p1, q0, q1;
    pool_windows(h, pad, K, S, (int)P, &p0, &p1);
    pool_windows(w, pad, K, S, (int)Q, &q0, &q1);
    const float* dyp = dy + (u64)nc * P * Q;
    const float* ap = argmax + (u64)nc * P * Q;
    float acc = 0.f;
    for (int p = p0; p <= p1; p++) {
      for (int q = q0; q <= q1; q++) {
        if ((int)ap[p * (int)Q + q] == (int)hw) acc += dyp[p * (int)Q + q];
      }
    }
    dx[i] = acc;
  }
}

extern "C" __global__ void k_gap(float* y, const float* x, u32 NC, u32 HW) {
  GRID_LOOP(i, NC) {
    const float* xp = x + (u64)i * HW;
    double s = 0.0;
    for (u32 k = 0; k < HW; k++) s += (double)xp[k];
    y[i] = (float)(s / (double)HW);
  }
}

extern "C" __global__ void k_gap_bwd(float* dx, const float* dy, u32 NC, u32 HW) {
  u32 n = NC * HW;
  float inv = 1.f / (float)HW;  // as pkg/nn: dy * (1/HW)
  GRID_LOOP(i, n) { dx[i] = dy[i / HW] * inv; }
}

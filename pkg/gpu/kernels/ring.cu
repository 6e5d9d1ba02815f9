// ring: the reductions of pkg/allreduce's device ring (same-host GPU
// workers), each the same float operations in the same order as the host
// ring's Go code, so that both give the same bits.

// dst[i] = dst[i] + src[i] (the reduce-scatter step: own partial sum plus
// the left neighbour's), then dst[i] = dst[i] / div when div != 0 (the
// segment owner's Mean: float32 division, as the host ring's owned()).
extern "C" __global__ void k_ring_add(float* dst, const float* src, u32 n, float div) {
  GRID_LOOP(i, n) {
    float v = dst[i] + src[i];
    if (div != 0.f) v = v / div;
    dst[i] = v;
  }
}

// dst[i] = src[i] / div (the reducer's average of the extra vectors).
extern "C" __global__ void k_ring_div(float* dst, const float* src, u32 n, float div) {
  GRID_LOOP(i, n) { dst[i] = src[i] / div; }
}

// dst[i] = float(sum over k = 0..w-1 of double(all[k*l + i]), divided by
// w when mean): the small path's local sum in rank order, rounded once.
extern "C" __global__ void k_ring_sum64(float* dst, const float* all, u32 l, u32 w, u32 mean) {
  GRID_LOOP(i, l) {
    double s = 0.0;
    for (u32 k = 0; k < w; k++) s += (double)all[(u64)k * l + i];
    if (mean) s /= (double)w;
    dst[i] = (float)s;
  }
}

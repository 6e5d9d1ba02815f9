// step: counts a training step keeps on the device (nn.DeviceCounter).

// *out += the number of rows n of logits (N, K) whose label's logit is
// not NaN and ranks first: no other logit is larger, NaN, or equal at a
// lower class index (pkg/nn's topKHost with k = 1). One thread per row;
// integer atomics only (the count is exact and order-free).
extern "C" __global__ void k_top1_count(const float* logits, const int* labels, u32 N, u32 K, u32* out) {
  GRID_LOOP(n, N) {
    const float* row = logits + (u64)n * K;
    int y = labels[n];
    float v = row[y];
    if (v != v) continue;
    u32 rank = 0;
    for (u32 j = 0; j < K; j++) {
      float u = row[j];
      if (u > v || (u == v && (int)j < y) || u != u) rank++;
    }
    if (rank == 0) atomicAdd(out, 1u);
  }
}

// loss: softmax cross-entropy with label smoothing (torch's
// CrossEntropyLoss(label_smoothing=eps), mean reduction).
//
// One block (128 threads) per row: loss_n = -(1-eps)*logp[y] - eps/K*sum_k logp[k];
// dlogits = (softmax - (1-eps)*onehot - eps/K) * gradScale / N.

extern "C" __global__ void k_xent_rows(const float* logits, const int* labels, u32 N, u32 K, float eps,
                                       float gradScale, float* rowloss, float* dlogits, float* probs) {
  __shared__ double shd[128];
  __shared__ float shf[128];
  u32 n = blockIdx.x;
  const float* l = logits + (u64)n * K;
  float mx = -FINF;
  for (u32 k = threadIdx.x; k < K; k += blockDim.x) mx = fmaxf(mx, l[k]);
  mx = block_max(mx, shf);
  double se = 0.0, sl = 0.0;
  for (u32 k = threadIdx.x; k < K; k += blockDim.x) {
    se += exp((double)l[k] - (double)mx);
    sl += (double)l[k];
  }
  se = block_sum<double>(se, shd);
  sl = block_sum<double>(sl, shd);
  double lse = (double)mx + log(se);
  int y = labels[n];
  if (threadIdx.x == 0) {
    double nll = lse - (double)l[y];
    double smooth = lse - sl / (double)K;  // -(1/K) sum_k logp[k]
    rowloss[n] = (float)((1.0 - (double)eps) * nll + (double)eps * smooth);
  }
  // In double, rounded once, as pkg/nn's CPU kernel.
  double scale = (double)gradScale / (double)N;
  double de = (double)eps;
  for (u32 k = threadIdx.x; k < K; k += blockDim.x) {
    double p = exp((double)l[k] - lse);
    if (probs) probs[(u64)n * K + k] = (float)p;
    if (dlogits) {
      double g = p - de / (double)K;
      if ((int)k == y) g -= 1.0 - de;
      dlogits[(u64)n * K + k] = (float)(g * scale);
    }
  }
}

// loss[0] = mean of rowloss[0..N) (one block of 256 threads, fixed order).
extern "C" __global__ void k_mean(float* loss, const float* rowloss, u32 N) {
  __shared__ double sh[256];
  double s = 0.0;
  for (u32 i = threadIdx.x; i < N; i += blockDim.x) s += (double)rowloss[i];
  s = block_sum<double>(s, sh);
  if (threadIdx.x == 0) loss[0] = (float)(s / (double)N);
}

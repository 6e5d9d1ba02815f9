// optim: one update of p given g, torch.optim's single-tensor
// (foreach=False) updates, written operation by operation as pkg/nn's CPU
// kernels (cpu_optim.go) so that both backends round identically: fmaf
// where torch's t.add(u, alpha=a) fuses, fmaf(v*u1, u2, t) for addcmul
// (t + v*u1*u2: the product v*u1 rounded, the rest fused), and explicit round-to-nearest
// intrinsics (__fmul_rn, __fadd_rn, ...) everywhere else, which the
// compiler never contracts into FMAs. Scalars derived in Python (1-beta1,
// lr/bc1, 1-lr*wd, ...) are computed in float64 on the host and passed in.

// torch.optim.SGD. damp1 = 1-dampening, negLR = -lr; first: the momentum
// buffer starts as d (undampened).
extern "C" __global__ void k_sgd(float* p, const float* g, float* buf, u32 n, float negLR, float mom,
                                 float damp1, float wd, int nesterov, int first) {
  GRID_LOOP(i, n) {
    float d = g[i];
    if (wd != 0.f) d = fmaf(p[i], wd, d);
    if (mom != 0.f) {
      float b = d;
      if (!first) b = fmaf(d, damp1, __fmul_rn(buf[i], mom));
      buf[i] = b;
      d = nesterov ? fmaf(b, mom, d) : b;
    }
    p[i] = fmaf(d, negLR, p[i]);
  }
}

// torch.optim.Adam (decoupled 0) / AdamW (decoupled 1).
// omb1 = 1-beta1, omb2 = 1-beta2, decay = 1-lr*wd, negStep = -lr/(1-beta1^t),
// bc2sqrt = sqrt(1-beta2^t).
extern "C" __global__ void k_adam(float* p, const float* g, float* m, float* v, float* vmax, u32 n,
                                  float b1, float b2, float omb1, float omb2, float eps, float wd, float decay,
                                  int decoupled, int amsgrad, float negStep, float bc2sqrt) {
  GRID_LOOP(i, n) {
    float pi = p[i];
    float d = g[i];
    if (decoupled) {
      pi = __fmul_rn(pi, decay);
    } else if (wd != 0.f) {
      d = fmaf(pi, wd, d);
    }
    float mi = fmaf(d, omb1, __fmul_rn(m[i], b1));
    float vi = fmaf(__fmul_rn(omb2, d), d, __fmul_rn(v[i], b2));
    m[i] = mi;
    v[i] = vi;
    if (amsgrad) {
      float vm = vmax[i];
      if (vi > vm || vi != vi) vm = vi;
      vmax[i] = vm;
      vi = vm;
    }
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2sqrt), eps);
    p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(negStep, mi), denom));
  }
}

// torch.optim.Adagrad. negCLR = -lr / (1 + (t-1)*lr_decay).
extern "C" __global__ void k_adagrad(float* p, const float* g, float* sum, u32 n, float negCLR, float wd, float eps) {
  GRID_LOOP(i, n) {
    float d = g[i];
    if (wd != 0.f) d = fmaf(p[i], wd, d);
    float s = fmaf(d, d, sum[i]);
    sum[i] = s;
    float std = __fadd_rn(__fsqrt_rn(s), eps);
    p[i] = __fadd_rn(p[i], __fdiv_rn(__fmul_rn(negCLR, d), std));
  }
}

// torch.optim.RMSprop. oma = 1-alpha, negLR = -lr.
extern "C" __global__ void k_rmsprop(float* p, const float* g, float* sq, float* buf, float* gavg, u32 n,
                                     float negLR, float alpha, float oma, float eps, float wd, float mom,
                                     int centered) {
  GRID_LOOP(i, n) {
    float d = g[i];
    if (wd != 0.f) d = fmaf(p[i], wd, d);
    float s = fmaf(__fmul_rn(oma, d), d, __fmul_rn(sq[i], alpha));
    sq[i] = s;
    float avg;
    if (centered) {
      float ga = fmaf(d, oma, __fmul_rn(gavg[i], alpha));
      gavg[i] = ga;
      avg = __fsqrt_rn(fmaf(-ga, ga, s));  // square_avg.addcmul(ga, ga, value=-1)
    } else {
      avg = __fsqrt_rn(s);
    }
    avg = __fadd_rn(avg, eps);
    if (mom > 0.f) {
      float b = __fadd_rn(__fmul_rn(buf[i], mom), __fdiv_rn(d, avg));
      buf[i] = b;
      p[i] = fmaf(b, negLR, p[i]);
    } else {
      p[i] = __fadd_rn(p[i], __fdiv_rn(__fmul_rn(negLR, d), avg));
    }
  }
}

package nn

// ConvParams describes a 2-D convolution (no dilation, no groups: ResNet
// needs neither). Input x is (N,C,H,W), weight w is (K,C,R,S), output y is
// (N,K,P,Q) with P = (H+2*PadH-R)/StrideH+1, Q = (W+2*PadW-S)/StrideW+1.
type ConvParams struct {
	N, C, H, W       int
	K, R, S          int
	StrideH, StrideW int
	PadH, PadW       int
}

// P is the output height.
func (p ConvParams) P() int { return (p.H+2*p.PadH-p.R)/p.StrideH + 1 }

// Q is the output width.
func (p ConvParams) Q() int { return (p.W+2*p.PadW-p.S)/p.StrideW + 1 }

// PoolParams describes a max-pool window over (N,C,H,W).
type PoolParams struct {
	N, C, H, W     int
	Kernel, Stride int
	Pad            int
}

// P is the output height (floor mode, as torch's default).
func (p PoolParams) P() int { return (p.H+2*p.Pad-p.Kernel)/p.Stride + 1 }

// Q is the output width.
func (p PoolParams) Q() int { return (p.W+2*p.Pad-p.Kernel)/p.Stride + 1 }

// SGDParams are torch.optim.SGD's hyper-parameters.
type SGDParams struct {
	LR, Momentum, Dampening, WeightDecay float32
	Nesterov                             bool
}

// AdamParams are torch.optim.Adam's (Decoupled=false) or AdamW's
// (Decoupled=true) hyper-parameters. Step is the 1-based step count after
// this update (torch's state["step"]).
type AdamParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Decoupled                          bool
	AMSGrad                            bool
	Step                               int
}

// AdagradParams are torch.optim.Adagrad's; Step is 1-based, as Adam's.
type AdagradParams struct {
	LR, LRDecay, WeightDecay, Eps float32
	Step                          int
}

// RMSpropParams are torch.optim.RMSprop's.
type RMSpropParams struct {
	LR, Alpha, Eps, WeightDecay, Momentum float32
	Centered                              bool
}

// Backend is where tensors live and operations run: the CPU backend in this
// package, the CUDA backend in pkg/gpu.
//
// Contract for every op:
//   - Shapes are checked by the layer that calls the op, once, when the
//     layer is built or first sees an input shape; ops may assume valid
//     shapes (a backend may re-check them and panic on a programming error).
//   - Outputs are preallocated by the caller; ops never allocate tensors
//     visible to the caller. A backend may keep internal scratch memory,
//     grown on demand and reused (no per-step allocations in steady state).
//   - "assign" outputs are overwritten, "accumulate" outputs get +=.
//   - Results are deterministic: the same inputs give bit-identical outputs
//     on every call, whatever the number of threads (CPU) or scheduling.
//   - Ops may run asynchronously on a device; Sync waits for them and
//     returns the first asynchronous error. ToHost implies Sync.
//   - Unless stated otherwise, an output must not alias an input.
//
// The methods of one Backend are called from one goroutine at a time.
type Backend interface {
	// Name is "cpu", "cuda", ...
	Name() string

	// ---- memory ----

	// New returns a zero-filled tensor in this backend's memory.
	New(shape ...int) *Tensor
	// Free releases a tensor's storage (a no-op for host memory). Views of
	// it must not be used afterwards.
	Free(t *Tensor)
	// FromHost copies len(src) == dst.Numel() values into dst.
	FromHost(dst *Tensor, src []float32)
	// ToHost copies src into dst (len(dst) == src.Numel()), after Sync.
	ToHost(dst []float32, src *Tensor)
	// Copy: dst = src (same numel; shapes may differ).
	Copy(dst, src *Tensor)
	// Fill: every element of t = v.
	Fill(t *Tensor, v float32)
	// Sync waits for queued work and returns the first error it raised.
	Sync() error

	// ---- convolution: x (N,C,H,W), w (K,C,R,S), y (N,K,P,Q) ----

	// Conv2d: y = conv(x, w) (assign). No bias: Conv2d layers with a bias
	// add it with AddChannelBias.
	Conv2d(y, x, w *Tensor, p ConvParams)
	// Conv2dBackwardData: dx = dL/dx given dy (assign).
	Conv2dBackwardData(dx, dy, w *Tensor, p ConvParams)
	// Conv2dBackwardFilter: dw += dL/dw given x and dy (accumulate).
	Conv2dBackwardFilter(dw, x, dy *Tensor, p ConvParams)
	// AddChannelBias: y[n,c,...] += b[c] for y (N,C,H,W) (H*W may be 1).
	AddChannelBias(y, b *Tensor)
	// ChannelBiasBackward: db[c] += sum over n,h,w of dy[n,c,h,w].
	ChannelBiasBackward(db, dy *Tensor)

	// ---- linear: x (N,I), w (O,I), b (O), y (N,O) ----

	// Linear: y = x w^T + b (assign); b may be nil.
	Linear(y, x, w, b *Tensor)
	// LinearBackward: dx = dy w (assign, skipped when dx is nil);
	// dw += dy^T x and db += column sums of dy (accumulate; each skipped when nil).
	LinearBackward(dx, dw, db, dy, x, w *Tensor)

	// ---- batch normalisation over (N,C,H,W), per channel c; M = N*H*W ----
	// Split in two halves so that SyncBatchNorm can all-reduce the
	// per-channel sums between them.

	// BatchNormStats: sum[c] = Σ x, sumSq[c] = Σ x² over n,h,w (assign),
	// accumulated in at least float64-equivalent precision on the CPU.
	BatchNormStats(sum, sumSq, x *Tensor)
	// BatchNormForward: given mean[c] and invStd[c] = 1/sqrt(var_biased+eps),
	// y = (x - mean) * invStd * gamma + beta (assign).
	BatchNormForward(y, x, mean, invStd, gamma, beta *Tensor)
	// BatchNormBackwardStats: sumDy[c] = Σ dy, sumDyXhat[c] = Σ dy*(x-mean)*invStd (assign).
	BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *Tensor)
	// BatchNormBackward, given the (possibly all-reduced) sums and the total
	// count m of elements per channel they cover:
	// dx = gamma*invStd*(dy - sumDy/m - xhat*sumDyXhat/m) (assign);
	// dgamma += sumDyXhat_local, dbeta += sumDy_local are NOT done here:
	// the layer adds them with Axpy from its local sums.
	BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *Tensor, m int)
	// BatchNormStatsFinish turns per-channel sums over m elements into
	// mean, invStd (eps inside the sqrt, biased variance), and updates the
	// running statistics in place as torch does:
	// runMean = (1-momentum)*runMean + momentum*mean,
	// runVar  = (1-momentum)*runVar  + momentum*var_biased*m/(m-1).
	// runMean/runVar may be nil (no tracking).
	BatchNormStatsFinish(mean, invStd, runMean, runVar, sum, sumSq *Tensor, m int, momentum, eps float32)
	// BatchNormInvStd: invStd[c] = 1/sqrt(v[c]+eps) (for evaluation with
	// running statistics, then BatchNormForward with mean = runMean).
	BatchNormInvStd(invStd, v *Tensor, eps float32)

	// ---- elementwise ----

	// ReLU: y = max(x, 0) (y may alias x).
	ReLU(y, x *Tensor)
	// ReLUBackward: dx = dy where y > 0, else 0 (dx may alias dy).
	ReLUBackward(dx, dy, y *Tensor)
	// Add: y = a + b (y may alias a or b).
	Add(y, a, b *Tensor)
	// Axpy: y += alpha*x.
	Axpy(y *Tensor, alpha float32, x *Tensor)
	// Scale: x *= alpha.
	Scale(x *Tensor, alpha float32)
	// Mul: y = a * b elementwise (y may alias a or b); used by dropout.
	Mul(y, a, b *Tensor)

	// ---- pooling ----

	// MaxPool2d: y (N,C,P,Q) = window max of x; argmax (same shape as y)
	// records the flat h*W+w index of the max inside its (n,c) plane, as a
	// float32 (exact for planes below 2^24 elements). Padding is -inf; ties
	// go to the first maximum in row-major window order (torch's rule).
	MaxPool2d(y, argmax, x *Tensor, p PoolParams)
	// MaxPool2dBackward: dx = 0 then dx[argmax] += dy (assign).
	MaxPool2dBackward(dx, dy, argmax *Tensor, p PoolParams)
	// GlobalAvgPool: y (N,C) = mean over h,w of x (N,C,H,W).
	GlobalAvgPool(y, x *Tensor)
	// GlobalAvgPoolBackward: dx[n,c,h,w] = dy[n,c]/(H*W) (assign).
	GlobalAvgPoolBackward(dx, dy *Tensor)

	// ---- loss ----

	// SoftmaxCrossEntropy: logits (N,K), labels in [0,K). Returns nothing;
	// writes loss (1 element) = mean over n of the label-smoothed cross
	// entropy (torch.nn.CrossEntropyLoss(label_smoothing=smoothing)), and,
	// when dlogits is not nil, dlogits = d(loss)/d(logits) * gradScale
	// (assign). probs (N,K) receives softmax(logits) when not nil.
	SoftmaxCrossEntropy(loss, dlogits, probs, logits *Tensor, labels []int32, smoothing, gradScale float32)

	// ---- optimizers: one update of p given g, state tensors alongside,
	// exactly as torch.optim's single-tensor (foreach=False) path ----

	// SGDStep; buf is the momentum buffer; first = no momentum buffer yet
	// (torch initialises it to the gradient, undampened).
	SGDStep(p, g, buf *Tensor, o SGDParams, first bool)
	// AdamStep; m, v exp averages, vMax used only with AMSGrad.
	AdamStep(p, g, m, v, vMax *Tensor, o AdamParams)
	// AdagradStep; sum is the squared-gradient accumulator.
	AdagradStep(p, g, sum *Tensor, o AdagradParams)
	// RMSpropStep; sq is square_avg, buf the momentum buffer (Momentum>0),
	// gAvg the grad average (Centered).
	RMSpropStep(p, g, sq, buf, gAvg *Tensor, o RMSpropParams)

	// ---- checks ----

	// CountNonFinite returns how many elements of t are NaN or ±Inf.
	CountNonFinite(t *Tensor) int
}

// CopyTicket names one copy issued by AsyncCopier.ToHostAsync.
type CopyTicket int

// AsyncCopier is an optional capability of device backends: copies to the
// host that overlap with the compute issued after them. A data-parallel
// trainer copies each gradient out as soon as backward has issued it, so
// the all-reduce of the first buckets runs while the device is still
// computing the rest of backward.
type AsyncCopier interface {
	// PinnedHost returns n float32s of page-locked host memory, valid
	// until the backend is closed (the copies into it run asynchronously).
	PinnedHost(n int) ([]float32, error)
	// ToHostAsync queues a copy of src into dst behind all work issued
	// so far and returns without waiting. dst must not be read, and src
	// not written, before WaitCopy of the ticket returns.
	ToHostAsync(dst []float32, src *Tensor) CopyTicket
	// WaitCopy waits until the ticket's copy has landed in host memory
	// and reports the backend's sticky error, if any. Every ticket is
	// waited for exactly once.
	WaitCopy(t CopyTicket) error
}

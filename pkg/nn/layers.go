package nn

import (
	"fmt"
	"math"
)

// Layers with explicit Forward and Backward, written side by side.
//
// Every layer follows the same contract:
//   - Forward(x) checks x's shape, computes the output into a buffer the
//     layer owns (allocated on the first forward of a shape and reused; an
//     in-place layer returns x itself), and saves exactly what Backward needs.
//     The output stays valid until the layer's next Forward.
//   - Backward(dy, needDx) checks dy against the last output shape,
//     accumulates (+=) the gradients of its unfrozen parameters, announces
//     each parameter as ready (largest index first), and returns dx (assign)
//     when needDx, else nil. dx is a temporary from the model's gradient pool
//     (or dy itself for in-place and pass-through layers); the caller gives it
//     back with env.release once consumed.
//
// Layers are created by NewResNet through a builder that lays all their
// parameters out in one flat tensor.

// env is what the layers of one model share: the backend, the pool of
// gradient temporaries and the grad-ready hook.
type env struct {
	b     Backend
	pool  tensorPool
	hook  func(paramIndex int)
	index map[*Param]int
}

func newEnv(b Backend) *env { return &env{b: b, index: map[*Param]int{}} }

// ready announces that p's gradient is final for this backward.
func (e *env) ready(p *Param) {
	if p != nil && e.hook != nil {
		e.hook(e.index[p])
	}
}

// temp draws a temporary tensor from the pool.
func (e *env) temp(shape ...int) *Tensor { return e.pool.get(e.b, shape...) }

// release gives t back to the pool unless it shares storage with keep
// (a layer that returned its own input). Tensors not from the pool are ignored.
func (e *env) release(t, keep *Tensor) {
	if t != nil && !sameStorage(t, keep) {
		e.pool.put(t)
	}
}

// unit is one step of a sequential model: a layer or a residual block.
type unit interface {
	Forward(x *Tensor) (*Tensor, error)
	Backward(dy *Tensor, needDx bool) (*Tensor, error)
	// OutShape is the output shape for input shape in, or an ErrShape error.
	OutShape(in []int) ([]int, error)
	// params are the unit's parameters in state_dict order.
	params() []*Param
	// summarize appends torchsummary rows for input shape in.
	summarize(in []int, s *summaryTable) ([]int, error)
	free()
}

func want4D(what string, in []int, c int) error {
	if len(in) != 4 || in[1] != c || in[0] < 1 || in[2] < 1 || in[3] < 1 {
		return fmt.Errorf("%w: %s input has shape %v, want (N,%d,H,W)", ErrShape, what, in, c)
	}
	return nil
}

func checkDy(what string, dy, y *Tensor) error {
	if y == nil {
		return fmt.Errorf("%w: %s", ErrNoForward, what)
	}
	return CheckShape(what+" output gradient", dy.Shape, y.Shape)
}

// ---------------------------------------------------------------- Conv2d

// Conv2d is torch.nn.Conv2d without groups or dilation.
// x (N,C,H,W) -> y (N,K,P,Q); Weight (K,C,R,S), Bias (K) or nil.
type Conv2d struct {
	Name                      string
	Weight, Bias              *Param
	InC, OutC, Kernel, Stride int
	Pad                       int

	e *env
	x *Tensor    // saved input (N,C,H,W)
	p ConvParams // shape of the last forward
	y actBuf     // (N,K,P,Q)
}

func (l *Conv2d) convParams(in []int) (ConvParams, error) {
	if err := want4D(l.Name, in, l.InC); err != nil {
		return ConvParams{}, err
	}
	p := ConvParams{N: in[0], C: in[1], H: in[2], W: in[3], K: l.OutC, R: l.Kernel, S: l.Kernel,
		StrideH: l.Stride, StrideW: l.Stride, PadH: l.Pad, PadW: l.Pad}
	if in[2]+2*l.Pad < l.Kernel || in[3]+2*l.Pad < l.Kernel {
		return p, fmt.Errorf("%w: %s: input %dx%d too small for a %dx%d kernel with padding %d",
			ErrShape, l.Name, in[2], in[3], l.Kernel, l.Kernel, l.Pad)
	}
	return p, nil
}

// OutShape implements unit.
func (l *Conv2d) OutShape(in []int) ([]int, error) {
	p, err := l.convParams(in)
	if err != nil {
		return nil, err
	}
	return []int{p.N, p.K, p.P(), p.Q()}, nil
}

// Forward: y = conv(x, Weight) (+ Bias).
func (l *Conv2d) Forward(x *Tensor) (*Tensor, error) {
	p, err := l.convParams(x.Shape)
	if err != nil {
		return nil, err
	}
	y := l.y.get(l.e.b, p.N, p.K, p.P(), p.Q())
	l.e.b.Conv2d(y, x, l.Weight.Value, p)
	if l.Bias != nil {
		l.e.b.AddChannelBias(y, l.Bias.Value)
	}
	l.x, l.p = x, p
	return y, nil
}

// Backward: dBias += Σ dy, dWeight += x ⋆ dy, dx = dy ⋆ Weight^T.
func (l *Conv2d) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy(l.Name, dy, l.y.view); err != nil {
		return nil, err
	}
	b := l.e.b
	if l.Bias != nil {
		if !l.Bias.Frozen {
			b.ChannelBiasBackward(l.Bias.Grad, dy)
		}
		l.e.ready(l.Bias)
	}
	if !l.Weight.Frozen {
		b.Conv2dBackwardFilter(l.Weight.Grad, l.x, dy, l.p)
	}
	l.e.ready(l.Weight)
	if !needDx {
		return nil, nil
	}
	dx := l.e.temp(l.x.Shape...)
	b.Conv2dBackwardData(dx, dy, l.Weight.Value, l.p)
	return dx, nil
}

func (l *Conv2d) params() []*Param {
	if l.Bias != nil {
		return []*Param{l.Weight, l.Bias}
	}
	return []*Param{l.Weight}
}

func (l *Conv2d) free() { l.y.free(l.e.b); l.x = nil }

// FusedOps is an optional Backend capability: a ReLU folded into the pass
// of its neighbour. Each op computes bit-for-bit what the separate ops
// compute (same float32 operations in the same order), with one pass over
// memory fewer. Layers check for it with a type assertion and fall back to
// the separate ops; pkg/gpu need not implement it.
type FusedOps interface {
	// BatchNormReLUForward: BatchNormForward(y, x, ...) then ReLU(y, y).
	BatchNormReLUForward(y, x, mean, invStd, gamma, beta *Tensor)
	// AddReLU: Add(y, a, b) then ReLU(y, y); y may alias a or b.
	AddReLU(y, a, b *Tensor)
	// ReLUBatchNormBackwardStats: ReLUBackward(dy, dy, y) (dy is masked in
	// place) then BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd).
	ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *Tensor)
}

// ----------------------------------------------------------- BatchNorm2d

// BatchNorm2d is torch.nn.BatchNorm2d (affine, tracking running stats),
// optionally synchronised across workers (SyncBatchNorm) by a ChannelReducer.
// x (N,C,H,W) -> y (N,C,H,W); Weight, Bias, RunningMean, RunningVar (C).
type BatchNorm2d struct {
	Name                    string
	C                       int
	Weight, Bias            *Param
	RunningMean, RunningVar *Buffer
	Tracked                 *Buffer // num_batches_tracked (Count)
	Momentum, Eps           float32
	Train                   bool
	Reducer                 ChannelReducer

	e          *env
	x          *Tensor // saved input
	trained    bool    // the last forward used batch statistics
	m          int     // elements per channel the statistics cover (global under SyncBN)
	y          actBuf
	mean       *Tensor // (C) batch mean, saved
	invStd     *Tensor // (C) 1/sqrt(var+eps), saved
	sum, sumSq *Tensor // (C) forward sums
	sumDy      *Tensor // (C) local Σ dy
	sumDyXhat  *Tensor // (C) local Σ dy*xhat
	gSumDy     *Tensor // (C) all-reduced Σ dy (SyncBN), or zero in eval
	gSumDyXhat *Tensor // (C) all-reduced Σ dy*xhat (SyncBN), or zero in eval
	pack       []float32

	// Fusion with an in-place ReLU that follows (set by the builder):
	// Forward then applies the ReLU itself (FusedOps), and the ReLU's
	// Backward leaves its mask to this layer's Backward.
	relu   *ReLU
	maskDy *Tensor // dy whose ReLU mask (by maskY) is still to be applied
	maskY  *Tensor
}

// countSplit packs a count into two float32 values that add exactly across
// workers (each part stays below 2^24 for totals up to 2^36).
const countSplit = 4096

func (l *BatchNorm2d) alloc() {
	if l.mean != nil {
		return
	}
	b := l.e.b
	l.mean, l.invStd = b.New(l.C), b.New(l.C)
	l.sum, l.sumSq = b.New(l.C), b.New(l.C)
	l.sumDy, l.sumDyXhat = b.New(l.C), b.New(l.C)
	l.gSumDy, l.gSumDyXhat = b.New(l.C), b.New(l.C)
	l.pack = make([]float32, 2*l.C+2)
}

// OutShape implements unit.
func (l *BatchNorm2d) OutShape(in []int) ([]int, error) {
	if err := want4D(l.Name, in, l.C); err != nil {
		return nil, err
	}
	return append([]int(nil), in...), nil
}

// reduce all-reduces a and b (C each) and, when withCount, the count m;
// results are written back into a and b.
func (l *BatchNorm2d) reduce(a, b *Tensor, m int, withCount bool) (int, error) {
	be := l.e.b
	pk := l.pack[:2*l.C]
	if withCount {
		pk = l.pack[:2*l.C+2]
		pk[2*l.C], pk[2*l.C+1] = float32(m/countSplit), float32(m%countSplit)
	}
	be.ToHost(pk[:l.C], a)
	be.ToHost(pk[l.C:2*l.C], b)
	if err := l.Reducer.AllReduceSum(pk); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrReduce, l.Name, err)
	}
	be.FromHost(a, pk[:l.C])
	be.FromHost(b, pk[l.C:2*l.C])
	if withCount {
		m = int(pk[2*l.C])*countSplit + int(pk[2*l.C+1])
	}
	return m, nil
}

// Forward: training uses the batch statistics (all-reduced under SyncBN)
// and updates the running ones; evaluation uses the running statistics.
// y = (x - mean) * invStd * Weight + Bias.
func (l *BatchNorm2d) Forward(x *Tensor) (*Tensor, error) {
	if _, err := l.OutShape(x.Shape); err != nil {
		return nil, err
	}
	l.alloc()
	b := l.e.b
	n, _, hw := planeSize(x)
	m := n * hw
	y := l.y.get(b, x.Shape...)
	if l.relu != nil {
		l.relu.done = nil
	}
	if l.Train {
		b.BatchNormStats(l.sum, l.sumSq, x)
		if l.Reducer != nil {
			var err error
			if m, err = l.reduce(l.sum, l.sumSq, m, true); err != nil {
				return nil, err
			}
		}
		if m <= 1 {
			return nil, fmt.Errorf("%w: %s got input %v", ErrBatchNorm, l.Name, x.Shape)
		}
		b.BatchNormStatsFinish(l.mean, l.invStd, l.RunningMean.Value, l.RunningVar.Value,
			l.sum, l.sumSq, m, l.Momentum, l.Eps)
		*l.Tracked.Count++
		if f, ok := b.(FusedOps); ok && l.relu != nil && l.relu.InPlace {
			f.BatchNormReLUForward(y, x, l.mean, l.invStd, l.Weight.Value, l.Bias.Value)
			l.relu.done = y
		} else {
			b.BatchNormForward(y, x, l.mean, l.invStd, l.Weight.Value, l.Bias.Value)
		}
	} else {
		b.BatchNormInvStd(l.invStd, l.RunningVar.Value, l.Eps)
		b.BatchNormForward(y, x, l.RunningMean.Value, l.invStd, l.Weight.Value, l.Bias.Value)
	}
	l.x, l.trained, l.m = x, l.Train, m
	return y, nil
}

// Backward: dBias += Σ dy, dWeight += Σ dy*xhat (local sums), and
// dx = Weight*invStd*(dy - Σdy/m - xhat*Σdy*xhat/m) with global sums in
// training; dx = Weight*invStd*dy in evaluation.
func (l *BatchNorm2d) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy(l.Name, dy, l.y.view); err != nil {
		return nil, err
	}
	b := l.e.b
	mean := l.mean
	if !l.trained {
		mean = l.RunningMean.Value
	}
	if f, ok := b.(FusedOps); ok && l.maskDy == dy {
		f.ReLUBatchNormBackwardStats(l.sumDy, l.sumDyXhat, dy, l.maskY, l.x, mean, l.invStd)
	} else {
		if l.maskDy != nil { // a mask left by the ReLU for another dy: apply it alone
			b.ReLUBackward(l.maskDy, l.maskDy, l.maskY)
		}
		b.BatchNormBackwardStats(l.sumDy, l.sumDyXhat, dy, l.x, mean, l.invStd)
	}
	l.maskDy, l.maskY = nil, nil
	if !l.Bias.Frozen {
		b.Axpy(l.Bias.Grad, 1, l.sumDy)
	}
	l.e.ready(l.Bias)
	if !l.Weight.Frozen {
		b.Axpy(l.Weight.Grad, 1, l.sumDyXhat)
	}
	l.e.ready(l.Weight)
	if !needDx {
		return nil, nil
	}
	m := l.m
	if l.trained {
		b.Copy(l.gSumDy, l.sumDy)
		b.Copy(l.gSumDyXhat, l.sumDyXhat)
		if l.Reducer != nil {
			if _, err := l.reduce(l.gSumDy, l.gSumDyXhat, 0, false); err != nil {
				return nil, err
			}
		}
	} else {
		b.Fill(l.gSumDy, 0)
		b.Fill(l.gSumDyXhat, 0)
	}
	dx := l.e.temp(l.x.Shape...)
	b.BatchNormBackward(dx, dy, l.x, mean, l.invStd, l.Weight.Value, l.gSumDy, l.gSumDyXhat, m)
	return dx, nil
}

func (l *BatchNorm2d) params() []*Param { return []*Param{l.Weight, l.Bias} }

func (l *BatchNorm2d) free() {
	b := l.e.b
	l.y.free(b)
	for _, t := range []*Tensor{l.mean, l.invStd, l.sum, l.sumSq, l.sumDy, l.sumDyXhat, l.gSumDy, l.gSumDyXhat} {
		if t != nil {
			b.Free(t)
		}
	}
	l.mean, l.x = nil, nil
}

// ------------------------------------------------------------------ ReLU

// ReLU is torch.nn.ReLU; InPlace overwrites its input (as torchvision's
// ResNet does), which is safe where the producer's Backward does not need
// its own output (BatchNorm2d, the residual add).
type ReLU struct {
	InPlace bool

	e *env
	y actBuf  // own output when not in place
	o *Tensor // the output of the last forward (saved for the mask)

	// Fusion with the BatchNorm2d before it (set by the builder): done is
	// the BN output the BN already passed through the ReLU (FusedOps), and
	// Backward hands its mask to bn when the backend fuses it.
	bn   *BatchNorm2d
	done *Tensor
}

// OutShape implements unit.
func (l *ReLU) OutShape(in []int) ([]int, error) { return append([]int(nil), in...), nil }

// Forward: y = max(x, 0).
func (l *ReLU) Forward(x *Tensor) (*Tensor, error) {
	if l.InPlace && l.done == x { // the BatchNorm2d before applied it
		l.done, l.o = nil, x
		return x, nil
	}
	l.done = nil
	y := x
	if !l.InPlace {
		y = l.y.get(l.e.b, x.Shape...)
	}
	l.e.b.ReLU(y, x)
	l.o = y
	return y, nil
}

// Backward: dx = dy where y > 0, else 0 (in place on dy when InPlace).
func (l *ReLU) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy("relu", dy, l.o); err != nil {
		return nil, err
	}
	if !needDx {
		return nil, nil
	}
	if _, ok := l.e.b.(FusedOps); ok && l.InPlace && l.bn != nil && l.bn.y.view == l.o {
		// The BatchNorm2d's Backward, next, masks dy in place while it
		// computes its sums.
		l.bn.maskDy, l.bn.maskY = dy, l.o
		return dy, nil
	}
	dx := dy
	if !l.InPlace {
		dx = l.e.temp(dy.Shape...)
	}
	l.e.b.ReLUBackward(dx, dy, l.o)
	return dx, nil
}

func (l *ReLU) params() []*Param { return nil }
func (l *ReLU) free()            { l.y.free(l.e.b); l.o = nil }

// fuseBNReLU links every BatchNorm2d directly followed by an in-place ReLU
// in units, so that a backend with FusedOps runs them as one pass.
func fuseBNReLU(units []unit) {
	for i := 0; i+1 < len(units); i++ {
		bn, ok1 := units[i].(*BatchNorm2d)
		r, ok2 := units[i+1].(*ReLU)
		if ok1 && ok2 && r.InPlace {
			bn.relu, r.bn = r, bn
		}
	}
}

// ------------------------------------------------------------- MaxPool2d

// MaxPool2d is torch.nn.MaxPool2d(Kernel, Stride, Pad) (floor mode).
// x (N,C,H,W) -> y (N,C,P,Q).
type MaxPool2d struct {
	Kernel, Stride, Pad int

	e      *env
	p      PoolParams
	y      actBuf // (N,C,P,Q)
	argmax actBuf // (N,C,P,Q) flat index of each max within its plane
	xShape []int
}

func (l *MaxPool2d) poolParams(in []int) (PoolParams, error) {
	if len(in) != 4 || in[0] < 1 || in[1] < 1 {
		return PoolParams{}, fmt.Errorf("%w: maxpool input has shape %v, want (N,C,H,W)", ErrShape, in)
	}
	p := PoolParams{N: in[0], C: in[1], H: in[2], W: in[3], Kernel: l.Kernel, Stride: l.Stride, Pad: l.Pad}
	if p.P() < 1 || p.Q() < 1 {
		return p, fmt.Errorf("%w: maxpool input %dx%d too small", ErrShape, in[2], in[3])
	}
	return p, nil
}

// OutShape implements unit.
func (l *MaxPool2d) OutShape(in []int) ([]int, error) {
	p, err := l.poolParams(in)
	if err != nil {
		return nil, err
	}
	return []int{p.N, p.C, p.P(), p.Q()}, nil
}

// Forward: y = window max of x; saves the argmax.
func (l *MaxPool2d) Forward(x *Tensor) (*Tensor, error) {
	p, err := l.poolParams(x.Shape)
	if err != nil {
		return nil, err
	}
	y := l.y.get(l.e.b, p.N, p.C, p.P(), p.Q())
	am := l.argmax.get(l.e.b, p.N, p.C, p.P(), p.Q())
	l.e.b.MaxPool2d(y, am, x, p)
	l.p, l.xShape = p, x.Shape
	return y, nil
}

// Backward: dx = 0, then dx[argmax] += dy.
func (l *MaxPool2d) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy("maxpool", dy, l.y.view); err != nil {
		return nil, err
	}
	if !needDx {
		return nil, nil
	}
	dx := l.e.temp(l.xShape...)
	l.e.b.MaxPool2dBackward(dx, dy, l.argmax.view, l.p)
	return dx, nil
}

func (l *MaxPool2d) params() []*Param { return nil }
func (l *MaxPool2d) free()            { l.y.free(l.e.b); l.argmax.free(l.e.b) }

// --------------------------------------------------------- GlobalAvgPool

// GlobalAvgPool is torch.nn.AdaptiveAvgPool2d(1): x (N,C,H,W) -> y (N,C,1,1).
type GlobalAvgPool struct {
	e      *env
	y      actBuf
	xShape []int
}

// OutShape implements unit.
func (l *GlobalAvgPool) OutShape(in []int) ([]int, error) {
	if len(in) != 4 || in[0] < 1 {
		return nil, fmt.Errorf("%w: avgpool input has shape %v, want (N,C,H,W)", ErrShape, in)
	}
	return []int{in[0], in[1], 1, 1}, nil
}

// Forward: y[n,c] = mean over h,w of x[n,c].
func (l *GlobalAvgPool) Forward(x *Tensor) (*Tensor, error) {
	out, err := l.OutShape(x.Shape)
	if err != nil {
		return nil, err
	}
	y := l.y.get(l.e.b, out...)
	l.e.b.GlobalAvgPool(y, x)
	l.xShape = x.Shape
	return y, nil
}

// Backward: dx[n,c,h,w] = dy[n,c] / (H*W).
func (l *GlobalAvgPool) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy("avgpool", dy, l.y.view); err != nil {
		return nil, err
	}
	if !needDx {
		return nil, nil
	}
	dx := l.e.temp(l.xShape...)
	l.e.b.GlobalAvgPoolBackward(dx, dy)
	return dx, nil
}

func (l *GlobalAvgPool) params() []*Param { return nil }
func (l *GlobalAvgPool) free()            { l.y.free(l.e.b) }

// --------------------------------------------------------------- Flatten

// Flatten is torch.flatten(x, 1): (N, ...) -> (N, rest), a view.
type Flatten struct {
	xShape []int
	y      *Tensor
}

// OutShape implements unit.
func (l *Flatten) OutShape(in []int) ([]int, error) {
	if len(in) < 1 || in[0] < 1 {
		return nil, fmt.Errorf("%w: flatten input has shape %v", ErrShape, in)
	}
	return []int{in[0], numel(in[1:])}, nil
}

// Forward returns x viewed as (N, rest).
func (l *Flatten) Forward(x *Tensor) (*Tensor, error) {
	out, err := l.OutShape(x.Shape)
	if err != nil {
		return nil, err
	}
	l.xShape = x.Shape
	l.y = x.View(0, out...)
	return l.y, nil
}

// Backward returns dy viewed with the input's shape.
func (l *Flatten) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy("flatten", dy, l.y); err != nil {
		return nil, err
	}
	if !needDx {
		return nil, nil
	}
	return dy.View(0, l.xShape...), nil
}

func (l *Flatten) params() []*Param { return nil }
func (l *Flatten) free()            { l.y = nil }

// --------------------------------------------------------------- Dropout

// Dropout is torch.nn.Dropout(P) (inverted: kept values are scaled by
// 1/(1-P) in training; identity in evaluation). The mask is drawn on the
// host from an RNG seeded by (Seed, Step) and uploaded, so it is the same on
// every backend and after a resume.
type Dropout struct {
	P     float32
	Seed  int64
	Step  int64 // set by the model before each training forward
	Train bool

	e       *env
	active  bool // the last forward applied a mask
	x       *Tensor
	y, mask actBuf
	host    []float32
}

// OutShape implements unit.
func (l *Dropout) OutShape(in []int) ([]int, error) { return append([]int(nil), in...), nil }

// Forward: y = x * mask, mask = 0 with probability P, else 1/(1-P).
func (l *Dropout) Forward(x *Tensor) (*Tensor, error) {
	l.x = x
	l.active = l.Train && l.P > 0
	if !l.active {
		return x, nil
	}
	n := x.Numel()
	l.host = growF32(&l.host, n)
	r := NewRNG(mixSeeds(l.Seed, l.Step, 0x64726f70))
	keep := 1 / (1 - l.P)
	p := float64(l.P)
	for i := range l.host {
		if r.Float64() < p {
			l.host[i] = 0
		} else {
			l.host[i] = keep
		}
	}
	mask := l.mask.get(l.e.b, x.Shape...)
	l.e.b.FromHost(mask, l.host)
	y := l.y.get(l.e.b, x.Shape...)
	l.e.b.Mul(y, x, mask)
	return y, nil
}

// Backward: dx = dy * mask (dy itself in evaluation).
func (l *Dropout) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if l.x == nil {
		return nil, fmt.Errorf("%w: dropout", ErrNoForward)
	}
	if err := CheckShape("dropout output gradient", dy.Shape, l.x.Shape); err != nil {
		return nil, err
	}
	if !needDx {
		return nil, nil
	}
	if !l.active {
		return dy, nil
	}
	dx := l.e.temp(dy.Shape...)
	l.e.b.Mul(dx, dy, l.mask.view)
	return dx, nil
}

func (l *Dropout) params() []*Param { return nil }
func (l *Dropout) free()            { l.y.free(l.e.b); l.mask.free(l.e.b); l.x = nil }

// ---------------------------------------------------------------- Linear

// Linear is torch.nn.Linear: x (N,I) -> y (N,O); Weight (O,I), Bias (O).
type Linear struct {
	Name         string
	In, Out      int
	Weight, Bias *Param

	e *env
	x *Tensor // saved input (N,I)
	y actBuf  // (N,O)
}

// OutShape implements unit.
func (l *Linear) OutShape(in []int) ([]int, error) {
	if len(in) != 2 || in[0] < 1 || in[1] != l.In {
		return nil, fmt.Errorf("%w: %s input has shape %v, want (N,%d)", ErrShape, l.Name, in, l.In)
	}
	return []int{in[0], l.Out}, nil
}

// Forward: y = x Weight^T + Bias.
func (l *Linear) Forward(x *Tensor) (*Tensor, error) {
	out, err := l.OutShape(x.Shape)
	if err != nil {
		return nil, err
	}
	y := l.y.get(l.e.b, out...)
	var bias *Tensor
	if l.Bias != nil {
		bias = l.Bias.Value
	}
	l.e.b.Linear(y, x, l.Weight.Value, bias)
	l.x = x
	return y, nil
}

// Backward: dWeight += dy^T x, dBias += Σ_n dy, dx = dy Weight.
func (l *Linear) Backward(dy *Tensor, needDx bool) (*Tensor, error) {
	if err := checkDy(l.Name, dy, l.y.view); err != nil {
		return nil, err
	}
	var dx, dw, db *Tensor
	if needDx {
		dx = l.e.temp(l.x.Shape...)
	}
	if !l.Weight.Frozen {
		dw = l.Weight.Grad
	}
	if l.Bias != nil && !l.Bias.Frozen {
		db = l.Bias.Grad
	}
	if dx != nil || dw != nil || db != nil {
		l.e.b.LinearBackward(dx, dw, db, dy, l.x, l.Weight.Value)
	}
	l.e.ready(l.Bias)
	l.e.ready(l.Weight)
	return dx, nil
}

func (l *Linear) params() []*Param {
	if l.Bias != nil {
		return []*Param{l.Weight, l.Bias}
	}
	return []*Param{l.Weight}
}

func (l *Linear) free() { l.y.free(l.e.b); l.x = nil }

// ------------------------------------------------------------- builder

// builder creates parameters and buffers in state_dict order, each with its
// initialiser, and then lays them out in flat tensors.
type builder struct {
	e       *env
	params  []*Param
	inits   []func(r *RNG, dst []float32)
	buffers []*Buffer
	bufFill []float32 // initial value of each running buffer
}

func (bd *builder) param(name string, init func(r *RNG, dst []float32), shape ...int) *Param {
	p := &Param{Name: name, Value: &Tensor{Shape: append([]int(nil), shape...)}}
	bd.params = append(bd.params, p)
	bd.inits = append(bd.inits, init)
	return p
}

func (bd *builder) buffer(name string, fill float32, shape ...int) *Buffer {
	buf := &Buffer{Name: name, Value: &Tensor{Shape: append([]int(nil), shape...)}}
	bd.buffers = append(bd.buffers, buf)
	bd.bufFill = append(bd.bufFill, fill)
	return buf
}

func (bd *builder) counter(name string) *Buffer {
	var n int64
	buf := &Buffer{Name: name, Count: &n}
	bd.buffers = append(bd.buffers, buf)
	bd.bufFill = append(bd.bufFill, 0)
	return buf
}

// kaimingNormalFanOut is torchvision's conv init: N(0, 2/(K*R*S)).
func kaimingNormalFanOut(fanOut int) func(*RNG, []float32) {
	std := math.Sqrt(2 / float64(fanOut))
	return func(r *RNG, dst []float32) {
		for i := range dst {
			dst[i] = float32(r.Normal() * std)
		}
	}
}

// uniformFanIn is torch.nn.Linear's (and Conv2d's) default:
// U(-1/sqrt(fanIn), 1/sqrt(fanIn)) for weight and bias.
func uniformFanIn(fanIn int) func(*RNG, []float32) {
	bound := 1 / math.Sqrt(float64(fanIn))
	return func(r *RNG, dst []float32) {
		for i := range dst {
			dst[i] = float32(r.Uniform(-bound, bound))
		}
	}
}

func constant(v float32) func(*RNG, []float32) {
	return func(_ *RNG, dst []float32) {
		for i := range dst {
			dst[i] = v
		}
	}
}

func (bd *builder) conv2d(name string, inC, outC, kernel, stride, pad int, bias bool) *Conv2d {
	l := &Conv2d{Name: name, InC: inC, OutC: outC, Kernel: kernel, Stride: stride, Pad: pad, e: bd.e}
	l.Weight = bd.param(name+".weight", kaimingNormalFanOut(outC*kernel*kernel), outC, inC, kernel, kernel)
	if bias {
		l.Bias = bd.param(name+".bias", uniformFanIn(inC*kernel*kernel), outC)
	}
	return l
}

func (bd *builder) batchNorm(name string, c int) *BatchNorm2d {
	l := &BatchNorm2d{Name: name, C: c, Momentum: 0.1, Eps: 1e-5, Train: true, e: bd.e}
	l.Weight = bd.param(name+".weight", constant(1), c)
	l.Bias = bd.param(name+".bias", constant(0), c)
	l.RunningMean = bd.buffer(name+".running_mean", 0, c)
	l.RunningVar = bd.buffer(name+".running_var", 1, c)
	l.Tracked = bd.counter(name + ".num_batches_tracked")
	return l
}

func (bd *builder) linear(name string, in, out int) *Linear {
	l := &Linear{Name: name, In: in, Out: out, e: bd.e}
	l.Weight = bd.param(name+".weight", uniformFanIn(in), out, in)
	l.Bias = bd.param(name+".bias", uniformFanIn(in), out)
	return l
}

// layout allocates flat tensors for params (values initialised from one RNG
// stream seeded by seed, in order) and grads (zero), and makes every
// Param.Value/Grad a view into them.
func layoutParams(b Backend, params []*Param, inits []func(*RNG, []float32), seed int64) (flat, grads *Tensor) {
	total := 0
	for _, p := range params {
		total += p.Value.Numel()
	}
	host := make([]float32, total)
	r := NewRNG(seed)
	off := 0
	for i, p := range params {
		n := p.Value.Numel()
		inits[i](r, host[off:off+n])
		off += n
	}
	flat, grads = b.New(total), b.New(total)
	b.FromHost(flat, host)
	off = 0
	for _, p := range params {
		shape := p.Value.Shape
		p.Value = flat.View(off, shape...)
		p.Grad = grads.View(off, shape...)
		off += numel(shape)
	}
	return flat, grads
}

// layoutBuffers allocates the flat running-statistics tensor.
func layoutBuffers(b Backend, bufs []*Buffer, fill []float32) *Tensor {
	total := 0
	for _, buf := range bufs {
		if buf.Value != nil {
			total += buf.Value.Numel()
		}
	}
	host := make([]float32, total)
	flat := b.New(total)
	off := 0
	for i, buf := range bufs {
		if buf.Value == nil {
			continue
		}
		n := buf.Value.Numel()
		for j := off; j < off+n; j++ {
			host[j] = fill[i]
		}
		buf.Value = flat.View(off, buf.Value.Shape...)
		off += n
	}
	b.FromHost(flat, host)
	return flat
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Trainer is one replica of the model with everything needed to train and
// evaluate it. It is not safe for concurrent use.
type Trainer struct {
	Spec          job.Spec
	B             nn.Backend
	Model         *nn.Model
	Opt           nn.Optimizer
	Sched         nn.Schedule
	CE            *nn.CrossEntropy
	Train, Test   data.Dataset
	Sampler       *data.Sampler
	StepsPerEpoch int

	// Committed state: Step optimizer steps done; Pos where the next step starts.
	Step int64
	Pos  data.Position

	x        *nn.Tensor // input batch buffer (max local batch)
	xCap     int
	hostGrad []float32 // host mirror of the gradients for device backends
	hostBuf  []float32 // host mirror of the BN buffers for device backends
	metrics  []float32 // [loss*n, correct, n] of this step, averaged with the last bucket

	// Overlap copies a device backend's gradients to the host as
	// backward issues them (nn.AsyncCopier), so that the all-reduce of
	// the first buckets runs while the device computes the rest; off, the
	// gradients are copied in one piece after backward. Off by default:
	// on an H100 shared by two worker processes the overlapped copies
	// made steps 1.3x slower (the two contexts time-slice around every
	// small copy), and a GPU per worker has not been measured yet (see
	// BENCHMARKS.md).
	Overlap bool
	// ForceHostGradients copies a device backend's gradients through
	// host memory even when the world has one worker, where the
	// all-reduce changes nothing and the round trip is skipped by
	// default (tests compare the two paths).
	ForceHostGradients bool
	spans              []allreduce.Span // every parameter's span in the flat gradient
	copies             []gradCopy       // this step's queued gradient copies, in order
	copied             []bool           // by parameter: a copy is queued this step
	order              []int            // emulated compute: the order parameters become ready

	// dev is the device step's state (devstep.go); nil on the CPU, with
	// emulated compute, or on a backend without nn.DeviceCounter.
	dev *devStep
	// pins holds the training loaders' page-locked image buffers (nil:
	// ordinary memory).
	pins *pinnedPool
	// Prefetch uploads a device step's next input batch on the copy
	// stream while the step computes (prefetch.go; batches from Feed).
	// Off, each step uploads its own input on the compute stream before
	// its compute. The results are bit-identical.
	Prefetch bool
	pre      *prefetch // nil until a Feed with Prefetch on
	// Graphs captures a device step's compute (forward, loss, counts,
	// backward) in a graph once shapes and memory are stable and
	// launches it in later steps (graph.go); off by default.
	Graphs bool
	graph  graphState

	// DeviceRing reduces a GPU worker's gradients device to device when
	// its ring neighbours are GPU workers of the same host (see
	// AttachDeviceRing, devring.go); off, or when that cannot be set up,
	// they go through host memory. The results are bit-identical.
	DeviceRing  bool
	devRed      *allreduce.DeviceReducer // the device ring's reducer, when attached
	ringMetrics *nn.Tensor               // the metrics on the device, for devRed
	// Logf, if set, receives the trainer's informational messages.
	Logf func(format string, args ...any)
}

// gradCopy is a queued device-to-host copy of parameter i's gradient.
type gradCopy struct {
	i      int
	ticket nn.CopyTicket
}

// NewTrainer builds model, optimizer, schedule and sampler for spec on b.
func NewTrainer(spec job.Spec, b nn.Backend, train, test data.Dataset) (*Trainer, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	m, err := BuildModel(b, spec, len(train.Classes()))
	if err != nil {
		return nil, err
	}
	opt, err := BuildOptimizer(b, spec, m)
	if err != nil {
		m.Free()
		return nil, err
	}
	s, err := NewSampler(spec, train.Len())
	if err != nil {
		m.Free()
		return nil, err
	}
	spe := s.StepsPerEpoch(spec.GlobalBatch)
	sch, err := BuildSchedule(spec, spe)
	if err != nil {
		m.Free()
		return nil, err
	}
	t := &Trainer{Spec: spec, B: b, Model: m, Opt: opt, Sched: sch,
		CE: &nn.CrossEntropy{Smoothing: float32(spec.LabelSmoothing)}, Train: train, Test: test,
		Sampler: s, StepsPerEpoch: spe, metrics: make([]float32, 3)}
	t.spans = t.gradSpans()
	if m.GradsFlat().OnDevice() {
		t.hostGrad = hostMirror(b, m.GradsFlat().Numel())
		t.hostBuf = hostMirror(b, m.BuffersFlat().Numel())
		t.copied = make([]bool, len(m.Params()))
		if spec.EmulateCompute == nil {
			if t.dev = newDevStep(b, len(train.Classes())); t.dev != nil {
				t.pins = newPinnedPool(b)
				// The device step counts non-finite values on the
				// device instead (read once per step).
				m.SetCheckFinite(false)
			}
		}
	}
	return t, nil
}

// NewSampler is the epoch order of a training set of n samples under spec:
// the one every worker uses, and the one the coordinator counts steps with.
func NewSampler(spec job.Spec, n int) (*data.Sampler, error) {
	return data.NewSampler(n, data.SamplerConfig{Seed: uint64(spec.Seed), Shuffle: spec.Data.Shuffle, DropLast: spec.Data.DropLast})
}

// Close frees the model, the optimizer's state and the device step's buffers.
func (t *Trainer) Close() {
	t.DetachDeviceRing()
	if t.ringMetrics != nil {
		t.B.Free(t.ringMetrics)
		t.ringMetrics = nil
	}
	t.graph.drop()
	t.pre.free(t.B)
	if t.dev != nil {
		t.dev.free(t.B)
	}
	if t.x != nil {
		t.B.Free(t.x)
		t.x = nil
	}
	t.CE.Release()
	if t.Opt != nil {
		t.Opt.Reset() // its state (momentum buffers, ...) lives on the backend too
	}
	t.Model.Free()
}

// Done reports whether the job's length (epochs, max steps) is reached.
func (t *Trainer) Done() bool {
	if t.Spec.MaxSteps > 0 && t.Step >= int64(t.Spec.MaxSteps) {
		return true
	}
	return t.Pos.Epoch >= t.Spec.Epochs
}

// Loader returns a loader of this rank's slices from the committed position.
func (t *Trainer) Loader(ctx context.Context, rank, world int) (*data.Loader, error) {
	return t.loader(ctx, rank, world, 1)
}

// loader is Loader with hold batches valid at once (data.LoaderConfig.Hold).
func (t *Trainer) loader(ctx context.Context, rank, world, hold int) (*data.Loader, error) {
	var tr data.Transform = data.EvalTransform()
	if t.Spec.Data.Augment {
		tr = data.TrainTransform()
	}
	cfg := data.LoaderConfig{Dataset: t.Train, Sampler: t.Sampler, Transform: tr,
		Seed: uint64(t.Spec.Seed), GlobalBatch: t.Spec.GlobalBatch, Rank: rank, World: world,
		Start: t.Pos, StopEpoch: t.Spec.Epochs, Hold: hold}
	if t.pins != nil {
		cfg.Alloc, cfg.Release = t.pins.alloc, t.pins.release
	}
	return data.NewLoader(ctx, cfg)
}

// hostMirror returns n zeroed float32s of host memory for copies from a
// device backend: page-locked when the backend offers it (its copies can
// then run asynchronously), ordinary memory otherwise.
func hostMirror(b nn.Backend, n int) []float32 {
	if ac, ok := b.(nn.AsyncCopier); ok {
		if h, err := ac.PinnedHost(n); err == nil {
			clear(h)
			return h
		}
	}
	return make([]float32, n)
}

// gradSpans lists every parameter's span in the flat gradient.
func (t *Trainer) gradSpans() []allreduce.Span {
	flat := t.Model.GradsFlat()
	spans := make([]allreduce.Span, len(t.Model.Params()))
	for i, p := range t.Model.Params() {
		spans[i] = allreduce.Span{Offset: offsetOf(flat, p.Grad), Len: p.Grad.Numel()}
	}
	return spans
}

// offsetOf is the element offset of view v inside flat.
func offsetOf(flat, v *nn.Tensor) int {
	if flat.OnDevice() {
		return int((v.Ptr - flat.Ptr) / 4)
	}
	if len(v.Data) == 0 {
		return 0
	}
	return int((uintptr(unsafe.Pointer(&v.Data[0])) - uintptr(unsafe.Pointer(&flat.Data[0]))) / 4)
}

// queueCopy queues the copy of parameter i's gradient to the host mirror.
func (t *Trainer) queueCopy(ac nn.AsyncCopier, i int) {
	if t.copied[i] {
		return
	}
	sp := t.spans[i]
	t.copied[i] = true
	t.copies = append(t.copies, gradCopy{i, ac.ToHostAsync(t.hostGrad[sp.Offset:sp.Offset+sp.Len], t.Model.Params()[i].Grad)})
}

// markCopied finishes a step's overlapped copies: the gradients backward
// did not announce (frozen parameters, an empty local batch) and the BN
// buffers are queued too; then each parameter is marked ready for the
// reducer as its copy lands, in the order backward produced them. The
// buffers ride with the last bucket, so they are waited for before the
// final mark. Every ticket is waited for, also after an error.
func (t *Trainer) markCopied(ac nn.AsyncCopier, red *allreduce.Reducer, beforeLast func() error) error {
	for i := len(t.copied) - 1; i >= 0; i-- {
		t.queueCopy(ac, i)
	}
	bufTicket := ac.ToHostAsync(t.hostBuf, t.Model.BuffersFlat())
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for k, c := range t.copies {
		keep(ac.WaitCopy(c.ticket))
		if k == len(t.copies)-1 {
			keep(ac.WaitCopy(bufTicket))
			if beforeLast != nil && first == nil {
				keep(beforeLast())
			}
		}
		if first == nil {
			keep(red.MarkReady(c.i))
		}
	}
	if len(t.copies) == 0 {
		keep(ac.WaitCopy(bufTicket))
		if beforeLast != nil && first == nil {
			keep(beforeLast())
		}
	}
	return first
}

// NewReducer makes the bucketed reducer of this trainer's gradients over
// ring. BN running statistics (average mode) and the step's metrics ride
// with the last bucket.
func (t *Trainer) NewReducer(ring *allreduce.Ring) (*allreduce.Reducer, error) {
	grad, bufs := t.hostGrad, t.hostBuf
	if grad == nil {
		grad, bufs = t.Model.GradsFlat().Data, t.Model.BuffersFlat().Data
	}
	extra := [][]float32{t.metrics}
	if t.Spec.BatchNorm == "average" && len(bufs) > 0 {
		extra = append(extra, bufs)
	}
	return allreduce.NewReducer(ring, grad, t.spans, allreduce.ReducerConfig{
		BucketBytes: int(t.Spec.BucketMB * (1 << 20)), Extra: extra})
}

// StepResult is what one training step measured, over all workers.
type StepResult struct {
	Loss     float64 // mean loss over the global batch
	Correct  int     // correct top-1 predictions over the global batch
	N        int     // samples in the global batch
	LocalN   int
	Comm     allreduce.StepStats
	Duration time.Duration
	LR       float64
	// Phases of the step (DataWait is the caller's to fill in).
	Phases Phases
	End    time.Time // when the step ended
}

// TrainStep runs one step on this rank's slice b: forward, loss, backward
// with the all-reduce of every gradient bucket overlapping it, then the
// identical optimizer step on every replica. On error nothing is
// committed: the caller rolls back (the parameters may be half-updated
// only if the error came from the optimizer itself, which checks
// gradients before touching anything).
func (t *Trainer) TrainStep(ctx context.Context, b *data.Batch, red *allreduce.Reducer, world int) (StepResult, error) {
	if t.devRed != nil && world > 1 {
		return t.trainStepDevice(ctx, b, world)
	}
	start := time.Now()
	res := StepResult{LocalN: b.N, N: b.GlobalSize}
	m := t.Model
	m.SetTrain(true)
	if t.dev == nil {
		m.ZeroGrad() // the device step zeroes them itself (forwardBackward)
	}
	if err := red.Begin(ctx, uint64(t.Step)); err != nil {
		return res, err
	}
	// A device backend's gradients and BN buffers go through host memory
	// for the ring; alone in the world, the all-reduce is the identity
	// (the metrics riding with it are already this worker's), so they stay
	// on the device.
	onDevice := t.hostGrad != nil
	roundTrip := onDevice && (world > 1 || t.ForceHostGradients)
	ac, async := t.B.(nn.AsyncCopier)
	emulated := t.Spec.EmulateCompute != nil
	async = async && roundTrip && t.Overlap && !emulated
	var hookErr error
	switch {
	case emulated:
		m.SetGradReadyHook(nil) // emulatedPass marks the parameters
	case !onDevice:
		m.SetGradReadyHook(func(i int) {
			if err := red.MarkReady(i); err != nil && hookErr == nil {
				hookErr = err
			}
		})
	case async:
		// Each gradient's copy is queued as soon as backward has issued
		// it; the buckets start as the copies land (see markCopied).
		t.copies = t.copies[:0]
		clear(t.copied)
		m.SetGradReadyHook(func(i int) { t.queueCopy(ac, i) })
	default:
		m.SetGradReadyHook(nil)
	}
	devMetrics := t.dev != nil && b.N > 0 && !emulated
	switch {
	case emulated:
		if err := t.emulatedPass(ctx, b, red.MarkReady); err != nil {
			return res, fmt.Errorf("worker: step %d emulated compute: %w", t.Step, err)
		}
	case devMetrics:
		x, y, slot, err := t.stepInput(b, t.graphsWanted(!async))
		if err != nil {
			return res, fmt.Errorf("worker: step %d: %w", t.Step, err)
		}
		m.SetDropoutStep(t.Step)
		if err := t.deviceCompute(x, y, b.N, b.GlobalSize, !async); err != nil {
			return res, err
		}
		// Step s+1's input goes up while this step computes.
		t.afterCompute(ctx, b, slot)
	case b.N > 0:
		if err := t.hostForwardBackward(b); err != nil {
			return res, err
		}
	}
	if b.N == 0 && !emulated {
		t.metrics[0], t.metrics[1], t.metrics[2] = 0, 0, 0
		if t.dev != nil {
			m.ZeroGrad()
			t.B.Fill(t.dev.acc, 0)
			t.afterCompute(ctx, b, -1)
		}
	}
	// With the gradients going through the host, the ring needs this
	// step's metrics before its last bucket: the device step reads its
	// counts (the first of two reads) and checks the input and logits.
	var beforeLast func() error
	if devMetrics && roundTrip {
		beforeLast = func() error {
			if err := t.dev.read(); err != nil {
				return err
			}
			if err := t.dev.check(t.Step); err != nil {
				return err
			}
			t.devMetrics(b.N)
			return nil
		}
	}
	if async {
		if err := t.markCopied(ac, red, beforeLast); err != nil && hookErr == nil {
			hookErr = err
		}
	} else if roundTrip {
		if beforeLast != nil {
			if err := beforeLast(); err != nil {
				return res, err
			}
		}
		t.B.ToHost(t.hostGrad, m.GradsFlat())
		t.B.ToHost(t.hostBuf, m.BuffersFlat())
	}
	if !async && !emulated && (onDevice || b.N == 0) {
		for i := len(m.Params()) - 1; i >= 0; i-- {
			if err := red.MarkReady(i); err != nil && hookErr == nil {
				hookErr = err
			}
		}
	}
	if hookErr != nil {
		return res, hookErr
	}
	waitAt := time.Now()
	stats, err := red.Wait(ctx)
	m.SetGradReadyHook(nil)
	if err != nil {
		return res, err
	}
	res.Comm = stats
	if roundTrip {
		t.B.FromHost(m.GradsFlat(), t.hostGrad)
		t.B.FromHost(m.BuffersFlat(), t.hostBuf)
	}
	if devMetrics {
		// After the all-reduce: a non-finite gradient of any rank.
		t.dev.dc.CountNonFiniteAdd(t.dev.acc, accBadGrads, m.GradsFlat())
	}
	optAt := time.Now()
	nn.ApplySchedule(t.Opt, t.Sched, int(t.Step))
	res.LR = t.Opt.LR()
	if err := t.Opt.Step(); err != nil {
		return res, fmt.Errorf("worker: step %d: %w", t.Step, err)
	}
	if t.dev != nil && !emulated {
		// The step's one wait for the device (with one worker): its
		// counts, read after the update is queued.
		if err := t.dev.read(); err != nil {
			return res, err
		}
		t.pre.stepWaited()
		if devMetrics {
			if err := t.dev.check(t.Step); err != nil {
				return res, err
			}
			if !roundTrip {
				t.devMetrics(b.N)
			}
		}
	} else if err := t.B.Sync(); err != nil {
		return res, err
	}
	return t.finishStep(res, b, world, start, waitAt, optAt), nil
}

// hostForwardBackward runs forward, the loss and backward of a non-empty
// batch b with the counts read on the host, and sets this step's metrics
// before backward: they ride with the last bucket, which launches during
// backward.
func (t *Trainer) hostForwardBackward(b *data.Batch) error {
	m := t.Model
	x := t.input(b)
	m.SetDropoutStep(t.Step)
	logits, err := m.Forward(x)
	if err != nil {
		return fmt.Errorf("worker: step %d forward: %w", t.Step, err)
	}
	t.CE.GradScale = float32(b.N) / float32(b.GlobalSize)
	loss, dl, err := t.CE.Compute(t.B, logits, b.Labels[:b.N])
	if err != nil {
		return fmt.Errorf("worker: step %d loss: %w", t.Step, err)
	}
	correct, err := nn.Accuracy(t.B, logits, b.Labels[:b.N])
	if err != nil {
		return err
	}
	lossSum := float64(loss) * float64(b.N)
	t.metrics[0], t.metrics[1], t.metrics[2] = float32(lossSum), float32(correct), float32(b.N)
	if err := m.Backward(dl); err != nil {
		return fmt.Errorf("worker: step %d backward: %w", t.Step, err)
	}
	return nil
}

// finishStep completes a step's result from the all-reduced metrics (the
// last bucket averaged them: scale by world for the sums) and its phase
// times, and advances the trainer past batch b.
func (t *Trainer) finishStep(res StepResult, b *data.Batch, world int, start, waitAt, optAt time.Time) StepResult {
	w := float64(world)
	res.Loss = float64(t.metrics[0]) * w / float64(max(b.GlobalSize, 1))
	res.Correct = int(float64(t.metrics[1])*w + 0.5)
	t.Step++
	t.Pos = b.Next
	end := time.Now()
	res.Duration, res.End = end.Sub(start), end
	res.Phases = Phases{Compute: waitAt.Sub(start), Exposed: optAt.Sub(waitAt), Optimizer: end.Sub(optAt)}
	return res
}

// devMetrics sets this worker's metrics from the device step's counts
// read back for a local batch of n samples.
func (t *Trainer) devMetrics(n int) {
	h := t.dev.accHost
	t.metrics[0] = float32(float64(h[accLoss]) * float64(n))
	t.metrics[1] = float32(count(h[accCorrect]))
	t.metrics[2] = float32(n)
}

// inputBuf returns the trainer's input buffer viewed as batch b's
// (N, C, H, W), growing it when needed.
func (t *Trainer) inputBuf(b *data.Batch) *nn.Tensor {
	s := b.Shape
	if t.x == nil || t.xCap < b.N || t.x.Dim(1) != s.C || t.x.Dim(2) != s.H || t.x.Dim(3) != s.W {
		if t.x != nil {
			t.B.Free(t.x)
		}
		t.x = t.B.New(b.N, s.C, s.H, s.W)
		t.xCap = b.N
	}
	return t.x.View(0, b.N, s.C, s.H, s.W)
}

func (t *Trainer) input(b *data.Batch) *nn.Tensor {
	s := b.Shape
	x := t.inputBuf(b)
	src := b.X[:b.N*s.Len()]
	if pu, ok := t.B.(nn.PinnedUploader); ok && t.pins.pinned(src) {
		// A training loader's page-locked buffer: one asynchronous copy;
		// the step waits for its work before the loader reuses it.
		pu.FromHostPinned(x, src)
	} else {
		t.B.FromHost(x, src)
	}
	return x
}

// EvalResult is an evaluation over the whole test set (all ranks).
type EvalResult struct {
	Loss     float64
	Accuracy float64
	N        int
}

// Evaluate runs the model in eval mode on this rank's contiguous shard of
// the test set and sums the counts over the ring (nil ring: one worker).
func (t *Trainer) Evaluate(ctx context.Context, ring *allreduce.Ring, rank, world int, tag allreduce.Tag) (EvalResult, error) {
	lo, hi := data.ShardRange(t.Test.Len(), rank, world)
	var lossSum float64
	var correct, n int
	if hi > lo {
		sub := &subset{Dataset: t.Test, idx: seq(lo, hi)}
		ss, err := data.NewSampler(sub.Len(), data.SamplerConfig{})
		if err != nil {
			return EvalResult{}, err
		}
		bs := min(t.Spec.GlobalBatch, 256)
		ld, err := data.NewLoader(ctx, data.LoaderConfig{Dataset: sub, Sampler: ss, Transform: data.EvalTransform(),
			GlobalBatch: bs, Rank: 0, World: 1, StopEpoch: 1})
		if err != nil {
			return EvalResult{}, err
		}
		defer ld.Close()
		t.Model.SetTrain(false)
		defer t.Model.SetTrain(true)
		if t.dev != nil {
			next := func() (*data.Batch, error) {
				b, err := ld.Next(ctx)
				if errors.Is(err, io.EOF) {
					return nil, nil
				}
				return b, err
			}
			lossSum, correct, n, err = t.evaluateDevice(next, (hi-lo+bs-1)/bs)
			if err != nil {
				return EvalResult{}, err
			}
		}
		for t.dev == nil {
			b, err := ld.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return EvalResult{}, err
			}
			if b.N == 0 {
				continue
			}
			logits, err := t.Model.Forward(t.input(b))
			if err != nil {
				return EvalResult{}, err
			}
			ce := nn.CrossEntropy{}
			loss, _, err := ce.Compute(t.B, logits, b.Labels[:b.N])
			if err != nil {
				return EvalResult{}, err
			}
			c, err := nn.Accuracy(t.B, logits, b.Labels[:b.N])
			if err != nil {
				return EvalResult{}, err
			}
			lossSum += float64(loss) * float64(b.N)
			correct += c
			n += b.N
		}
	}
	v := []float32{float32(lossSum), float32(correct), float32(n)}
	if ring != nil && world > 1 {
		if err := ring.AllReduce(ctx, tag, v, allreduce.Sum); err != nil {
			return EvalResult{}, err
		}
	}
	r := EvalResult{N: int(v[2] + 0.5)}
	if r.N > 0 {
		r.Loss = float64(v[0]) / float64(r.N)
		r.Accuracy = float64(v[1]) / float64(r.N)
	}
	return r, nil
}

func seq(lo, hi int) []int {
	s := make([]int, hi-lo)
	for i := range s {
		s[i] = lo + i
	}
	return s
}

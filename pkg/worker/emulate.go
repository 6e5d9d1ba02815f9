package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// ComputeProfile is a measured forward and backward of the real model:
// when each parameter's gradient became ready.
type ComputeProfile struct {
	Forward  time.Duration   // forward + loss
	Backward time.Duration   // backward
	Ready    []time.Duration // by parameter: time after backward started
	Order    []int           // parameters in the order backward made them ready
	// Buckets is the reducer's bucket plan for this model and spec, in
	// launch order (BN buffers and the step's metrics ride with the last).
	Buckets []allreduce.BucketInfo
}

// BucketReady is the fraction of the compute time (forward + backward)
// after which bucket b can start: when its last parameter is ready.
func (p ComputeProfile) BucketReady(b int) float64 {
	fb := float64(p.Forward + p.Backward)
	if fb <= 0 {
		return 1
	}
	var r time.Duration
	for _, i := range p.Buckets[b].Params {
		r = max(r, p.Ready[i])
	}
	return (float64(p.Forward) + float64(r)) / fb
}

// Emulation is the profile as a job.EmulateCompute of the given total
// length (0: the measured one).
func (p ComputeProfile) Emulation(total time.Duration) *job.EmulateCompute {
	fb := p.Forward + p.Backward
	if total <= 0 {
		total = fb
	}
	e := &job.EmulateCompute{Seconds: total.Seconds(), Forward: float64(p.Forward) / float64(max(fb, 1)), Ready: make([]float64, len(p.Ready))}
	for i, r := range p.Ready {
		e.Ready[i] = min(1, max(0, float64(r)/float64(max(p.Backward, 1))))
	}
	return e
}

// MeasureCompute runs reps real forward and backward passes of spec's
// model on b with a batch of batch samples (synthetic inputs) and returns
// the profile of the fastest one (the least disturbed by other load).
func MeasureCompute(ctx context.Context, spec job.Spec, b nn.Backend, batch, reps int) (ComputeProfile, error) {
	spec.EmulateCompute = nil
	spec.GlobalBatch, spec.MinWorkers, spec.MaxWorkers = batch, 1, max(spec.MaxWorkers, 1)
	train, test, err := OpenDatasets(ctx, spec)
	if err != nil {
		return ComputeProfile{}, err
	}
	t, err := NewTrainer(spec, b, train, test)
	if err != nil {
		return ComputeProfile{}, err
	}
	defer t.Close()
	ld, err := t.Loader(ctx, 0, 1)
	if err != nil {
		return ComputeProfile{}, err
	}
	defer ld.Close()
	bt, err := ld.Next(ctx)
	if err != nil {
		return ComputeProfile{}, err
	}
	var best ComputeProfile
	m := t.Model
	m.SetTrain(true)
	for rep := 0; rep < max(reps, 1); rep++ {
		m.ZeroGrad()
		p := ComputeProfile{Ready: make([]time.Duration, len(m.Params()))}
		start := time.Now()
		logits, err := m.Forward(t.input(bt))
		if err != nil {
			return p, err
		}
		_, dl, err := t.CE.Compute(t.B, logits, bt.Labels[:bt.N])
		if err != nil {
			return p, err
		}
		if err := t.B.Sync(); err != nil {
			return p, err
		}
		bwd := time.Now()
		p.Forward = bwd.Sub(start)
		seen := make([]bool, len(p.Ready))
		m.SetGradReadyHook(func(i int) {
			p.Ready[i] = time.Since(bwd)
			p.Order = append(p.Order, i)
			seen[i] = true
		})
		err = m.Backward(dl)
		m.SetGradReadyHook(nil)
		if err != nil {
			return p, err
		}
		if err := t.B.Sync(); err != nil {
			return p, err
		}
		p.Backward = time.Since(bwd)
		for i := len(seen) - 1; i >= 0; i-- { // frozen parameters: ready at the end
			if !seen[i] {
				p.Ready[i] = p.Backward
				p.Order = append(p.Order, i)
			}
		}
		if rep == 0 || p.Forward+p.Backward < best.Forward+best.Backward {
			best = p
		}
	}
	p := best
	ring, err := allreduce.Open(ctx, allreduce.NewInmemNetwork().Transport("p"), allreduce.DefaultConfig("profile", 1, 0, 1), []string{"p"})
	if err != nil {
		return p, err
	}
	defer ring.Close()
	red, err := t.NewReducer(ring)
	if err != nil {
		return p, err
	}
	p.Buckets = red.Buckets()
	return p, nil
}

// emulationOrder is the order in which an emulated backward marks the
// parameters ready: by ready fraction, ties in backward's order.
func emulationOrder(e *job.EmulateCompute) []int {
	idx := make([]int, len(e.Ready))
	for i := range idx {
		idx[i] = len(idx) - 1 - i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case e.Ready[a] < e.Ready[b]:
			return -1
		case e.Ready[a] > e.Ready[b]:
			return 1
		}
		return 0
	})
	return idx
}

// emulatedPass is TrainStep's forward and backward under
// spec.EmulateCompute: it waits, marking each parameter ready (the
// reducer's MarkReady) at
// its emulated time, until the compute time has passed. The step's loss
// and accuracy are zero (no forward ran).
func (t *Trainer) emulatedPass(ctx context.Context, b *data.Batch, markReady func(int) error) error {
	e := t.Spec.EmulateCompute
	if len(e.Ready) != len(t.Model.Params()) {
		return fmt.Errorf("%w: emulate_compute has %d parameters, the model %d", job.ErrInvalid, len(e.Ready), len(t.Model.Params()))
	}
	if t.order == nil {
		t.order = emulationOrder(e)
	}
	t.metrics[0], t.metrics[1], t.metrics[2] = 0, 0, float32(b.N)
	start := time.Now()
	total := time.Duration(e.Seconds * float64(time.Second))
	bwd := time.Duration(float64(total) * e.Forward)
	for _, i := range t.order {
		at := bwd + time.Duration(float64(total-bwd)*e.Ready[i])
		if err := sleepUntil(ctx, start.Add(at)); err != nil {
			return err
		}
		if err := markReady(i); err != nil {
			return err
		}
	}
	return sleepUntil(ctx, start.Add(total))
}

func sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

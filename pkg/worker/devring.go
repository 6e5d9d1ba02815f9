package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// The same-host GPU ring: when every rank's backend is a GPU that can
// share its memory with its neighbours' processes (allreduce.Device, CUDA
// IPC) and every link of the ring goes through shared memory, gradients,
// BN buffers and the step's metrics are reduced device to device by an
// allreduce.DeviceReducer instead of the host round trip: the same
// buckets and the same sum order, so the same bits.

// AttachDeviceRing sets up the device ring for ring when t.DeviceRing is
// on, the world has more than one worker and the backend keeps gradients
// on a device that offers allreduce.Device. It is a collective: every rank
// of the plan calls it right after opening the ring, whatever its backend
// (a rank that will not use the device ring refuses in the collective, so
// a job that mixes CPU and GPU workers, or workers with the switch on and
// off, agrees on the host path instead of waiting). It returns a line for
// the log saying which path the gradients take and why ("" for a world
// of one, or CPU workers whose ring neighbours all are), and on the device
// ring how this rank reads its left neighbour's memory (allreduce.DeviceLink:
// "peer access", or "copies through the device: no peer access between
// A and B" for two GPUs that cannot reach each other); the error is for
// failures of the ring itself (the ring is then broken). A device ring
// that cannot be set up on some rank is not an error: every rank keeps
// the host path and says why.
func (t *Trainer) AttachDeviceRing(ctx context.Context, ring *allreduce.Ring, world int) (string, error) {
	t.DetachDeviceRing()
	if world < 2 {
		return "", nil // alone: nothing to reduce
	}
	dev, isDev := t.B.(allreduce.Device)
	why := ""
	switch {
	case t.hostGrad == nil:
		why = "host tensors"
	case !t.DeviceRing:
		why = "the device ring is switched off (worker run --gpu-ipc=false)"
	case t.Spec.EmulateCompute != nil:
		why = "emulated compute"
	case !isDev:
		why = "the " + t.B.Name() + " backend cannot share device memory"
	}
	if why != "" {
		err := ring.RefuseDevice(ctx, why)
		if !errors.Is(err, allreduce.ErrNoDeviceRing) {
			return "", err
		}
		if t.hostGrad == nil {
			return "", nil // a CPU worker: its gradients are on the host anyway
		}
		return "gradients through host memory: " + why, nil
	}
	if t.ringMetrics == nil {
		t.ringMetrics = t.B.New(len(t.metrics))
	}
	extra := []allreduce.DeviceSpan{{Ptr: uint64(t.ringMetrics.Ptr), Len: t.ringMetrics.Numel()}}
	if bufs := t.Model.BuffersFlat(); t.Spec.BatchNorm == "average" && bufs.Numel() > 0 {
		extra = append(extra, allreduce.DeviceSpan{Ptr: uint64(bufs.Ptr), Len: bufs.Numel()})
	}
	g := t.Model.GradsFlat()
	red, link, err := allreduce.NewDeviceReducer(ctx, ring, dev, allreduce.DeviceSpan{Ptr: uint64(g.Ptr), Len: g.Numel()}, t.spans,
		allreduce.DeviceReducerConfig{BucketBytes: int(t.Spec.BucketMB * (1 << 20)), Extra: extra})
	if errors.Is(err, allreduce.ErrNoDeviceRing) {
		return fmt.Sprintf("gradients through host memory: %v", err), nil
	}
	if err != nil {
		return "", err
	}
	t.devRed = red
	return fmt.Sprintf("gradients device to device (%s)", link), nil
}

// DeviceRingActive reports whether gradients go device to device.
func (t *Trainer) DeviceRingActive() bool { return t.devRed != nil }

// DetachDeviceRing stops using the device ring (before its ring closes).
func (t *Trainer) DetachDeviceRing() {
	if t.devRed != nil {
		t.devRed.Close()
		t.devRed = nil
	}
}

// trainStepDevice is TrainStep on the device ring: forward and backward
// as there (the device step's compute and counts when the backend keeps
// them, devstep.go), then every bucket reduced device to device after
// backward (the metrics ride with the last bucket, through a small device
// vector), then the optimizer step and the checks as there.
func (t *Trainer) trainStepDevice(ctx context.Context, b *data.Batch, world int) (StepResult, error) {
	start := time.Now()
	res := StepResult{LocalN: b.N, N: b.GlobalSize}
	m := t.Model
	m.SetTrain(true)
	m.SetGradReadyHook(nil)
	t.metrics[0], t.metrics[1], t.metrics[2] = 0, 0, 0
	devCounts := t.dev != nil && b.N > 0
	switch {
	case devCounts:
		x, y, slot, err := t.stepInput(b, t.graphsWanted(true))
		if err != nil {
			return res, fmt.Errorf("worker: step %d: %w", t.Step, err)
		}
		m.SetDropoutStep(t.Step)
		if err := t.deviceCompute(x, y, b.N, b.GlobalSize, true); err != nil {
			return res, err
		}
		t.afterCompute(ctx, b, slot) // step s+1's input goes up now
		// The metrics ride with the last bucket: read the counts (and
		// check the input and logits) first, as the host path does.
		if err := t.dev.read(); err != nil {
			return res, err
		}
		if err := t.dev.check(t.Step); err != nil {
			return res, err
		}
		t.devMetrics(b.N)
	case b.N > 0:
		m.ZeroGrad()
		if err := t.hostForwardBackward(b); err != nil {
			return res, err
		}
	default: // an empty local batch: zero gradients and counts
		m.ZeroGrad()
		if t.dev != nil {
			t.B.Fill(t.dev.acc, 0)
			t.afterCompute(ctx, b, -1)
		}
	}
	t.B.FromHost(t.ringMetrics, t.metrics)
	waitAt := time.Now()
	stats, err := t.devRed.Reduce(ctx, uint64(t.Step))
	if err != nil {
		return res, err
	}
	res.Comm = stats
	t.B.ToHost(t.metrics, t.ringMetrics)
	if devCounts {
		// After the all-reduce: a non-finite gradient of any rank.
		t.dev.dc.CountNonFiniteAdd(t.dev.acc, accBadGrads, m.GradsFlat())
	}
	optAt := time.Now()
	nn.ApplySchedule(t.Opt, t.Sched, int(t.Step))
	res.LR = t.Opt.LR()
	if err := t.Opt.Step(); err != nil {
		return res, fmt.Errorf("worker: step %d: %w", t.Step, err)
	}
	if t.dev != nil {
		if err := t.dev.read(); err != nil {
			return res, err
		}
		t.pre.stepWaited()
		if devCounts {
			if err := t.dev.check(t.Step); err != nil {
				return res, err
			}
		}
	} else if err := t.B.Sync(); err != nil {
		return res, err
	}
	return t.finishStep(res, b, world, start, waitAt, optAt), nil
}

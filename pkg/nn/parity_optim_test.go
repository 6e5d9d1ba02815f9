package nn_test

// Optimizer parity: from the golden initial state, `steps` train steps
// (zero grad, forward, cross-entropy, backward, optimizer step) on the
// golden batches for every optimizer of the case; the parameters (checked
// relative to torch's update) and BN buffers must match torch's after the
// last step.

import (
	"fmt"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// newParityOptimizer builds the engine's optimizer (nn.NewSGD, NewAdam, ...)
// for one golden entry of torch.optim constructor arguments, over every
// parameter of the model.
func newParityOptimizer(b nn.Backend, m *nn.Model, o goldenOptimizer) (nn.Optimizer, error) {
	ps := m.Params()
	switch o.Type {
	case "sgd":
		return nn.NewSGD(b, ps, nn.SGDConfig{
			LR: o.LR, Momentum: o.Momentum, Dampening: o.Dampening,
			WeightDecay: o.WeightDecay, Nesterov: o.Nesterov,
		})
	case "adam", "adamw":
		cfg := nn.AdamConfig{
			LR: o.LR, Beta1: o.Betas[0], Beta2: o.Betas[1], Eps: o.Eps,
			WeightDecay: o.WeightDecay, AMSGrad: o.AMSGrad,
		}
		if o.Type == "adamw" {
			return nn.NewAdamW(b, ps, cfg)
		}
		return nn.NewAdam(b, ps, cfg)
	case "adagrad":
		return nn.NewAdagrad(b, ps, nn.AdagradConfig{
			LR: o.LR, LRDecay: o.LRDecay, WeightDecay: o.WeightDecay,
			InitialAccumulatorValue: o.InitAcc, Eps: o.Eps,
		})
	case "rmsprop":
		return nn.NewRMSprop(b, ps, nn.RMSpropConfig{
			LR: o.LR, Alpha: o.Alpha, Eps: o.Eps, WeightDecay: o.WeightDecay,
			Momentum: o.Momentum, Centered: o.Centered,
		})
	}
	return nil, fmt.Errorf("%w: unknown optimizer type %q", errGolden, o.Type)
}

func runOptimCase(t *testing.T, tl *parityTally, c *goldenCase, f *goldenFile) {
	b, m, ok := newParityModel(t, tl, c, f)
	if !ok {
		return
	}
	defer m.Free()
	if c.Steps < 1 || len(c.Optimizers) == 0 {
		tl.fail(t, c.Case, "%d steps and %d optimizers in the metadata", c.Steps, len(c.Optimizers))
		return
	}
	type batch struct {
		x      *nn.Tensor
		labels []int32
	}
	batches := make([]batch, c.Steps)
	for s := range batches {
		x, err := inputTensor(b, f, fmt.Sprintf("batch/%d/input", s), c.InputShape)
		if err != nil {
			tl.fail(t, c.Case+"/batches", "%v", err)
			return
		}
		defer b.Free(x)
		l, err := f.labels(fmt.Sprintf("batch/%d/labels", s))
		if err != nil {
			tl.fail(t, c.Case+"/batches", "%v", err)
			return
		}
		batches[s] = batch{x, l}
	}
	init := map[string][]float32{}
	for _, p := range m.Params() {
		gt, err := f.f32("init/" + p.Name)
		if err != nil {
			tl.fail(t, c.Case+"/init", "%v", err)
			return
		}
		init[p.Name] = gt.F32
	}

	for _, o := range c.Optimizers {
		name := func(s string) string { return c.Case + "/" + o.Name + "/" + s }
		if err := loadState(b, m, f, "init/"); err != nil {
			tl.fail(t, name("init"), "%v", err)
			return
		}
		opt, err := newParityOptimizer(b, m, o)
		if err != nil {
			tl.fail(t, name("optimizer"), "%v", err)
			continue
		}
		ce := &nn.CrossEntropy{Smoothing: float32(c.LabelSmoothing)}
		m.SetTrain(true)
		failed := false
		for s, bt := range batches {
			m.ZeroGrad()
			logits, err := m.Forward(bt.x)
			if err == nil {
				var dlogits *nn.Tensor
				_, dlogits, err = ce.Compute(b, logits, bt.labels)
				if err == nil {
					err = m.Backward(dlogits)
				}
			}
			if err == nil {
				err = opt.Step()
			}
			if err == nil {
				err = nb(b)
			}
			if err != nil {
				tl.fail(t, name(fmt.Sprintf("step%d", s+1)), "%v", err)
				failed = true
				break
			}
		}
		if failed {
			continue
		}
		updTol := tolFor(parityFloorUpdate, c.optNoise(o.Name, "update_worst"))
		bufTol := tolFor(parityFloorOptBuf, c.optNoise(o.Name, "weights_worst"))
		prefix := "opt/" + o.Name + "/"
		for _, p := range m.Params() {
			gt, err := f.f32(prefix + p.Name)
			if err != nil {
				tl.fail(t, name(p.Name), "%v", err)
				continue
			}
			tl.check(t, name(p.Name), host(b, p.Value), gt.F32, init[p.Name], updTol)
		}
		for _, bf := range m.Buffers() {
			if bf.Count != nil {
				gt, err := f.i64(prefix + bf.Name)
				if err != nil || len(gt.I64) != 1 {
					tl.fail(t, name(bf.Name), "no torch value: %v", err)
					continue
				}
				tl.checkExact(t, name(bf.Name), *bf.Count, gt.I64[0])
				continue
			}
			gt, err := f.f32(prefix + bf.Name)
			if err != nil {
				tl.fail(t, name(bf.Name), "%v", err)
				continue
			}
			tl.check(t, name(bf.Name), host(b, bf.Value), gt.F32, nil, bufTol)
		}
	}
}

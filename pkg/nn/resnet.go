package nn

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Model is a ResNet built on a Backend: a sequence of units (stem layers,
// residual blocks, the head) whose parameters live in one flat tensor, in
// torchvision's state_dict order.
//
// A Model is used from one goroutine at a time, like its Backend.
type Model struct {
	cfg     ResNetConfig
	e       *env
	units   []unit
	params  []*Param
	buffers []*Buffer
	flat    *Tensor // all parameter values
	grads   *Tensor // all parameter gradients, same layout
	bufFlat *Tensor // all running means/vars
	bns     []*BatchNorm2d
	drop    *Dropout // nil without dropout
	fc      *Linear
	feat    int // fc input features

	train       bool
	checkFinite bool
	inputGrad   bool
	step        int64 // dropout step of the next training forward

	inShape []int   // last input shape that passed the shape walk
	out     *Tensor // logits of the last forward
	inGrad  actBuf  // dL/dx of the input when inputGrad
	tap     *tap    // SetTap's layer (tap.go); nil when none
}

// ModelDepth parses "resnet18", "resnet34", "resnet50", "resnet101" or
// "resnet152" (case-insensitive) into a depth.
func ModelDepth(name string) (int, error) {
	s := strings.ToLower(strings.TrimSpace(name))
	if d, err := strconv.Atoi(strings.TrimPrefix(s, "resnet")); err == nil && strings.HasPrefix(s, "resnet") {
		if _, ok := stageBlocks[d]; ok {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown model %q (want resnet18, resnet34, resnet50, resnet101 or resnet152)", ErrConfig, name)
}

// stageBlocks is the number of blocks in each of the four stages.
var stageBlocks = map[int][4]int{
	18: {2, 2, 2, 2}, 34: {3, 4, 6, 3},
	50: {3, 4, 6, 3}, 101: {3, 4, 23, 3}, 152: {3, 8, 36, 3},
}

// Normalize fills in defaults (Stem "imagenet", Width 1, Classes 1000) and
// validates the configuration; errors wrap ErrConfig.
func (cfg ResNetConfig) Normalize() (ResNetConfig, error) {
	if _, ok := stageBlocks[cfg.Depth]; !ok {
		return cfg, fmt.Errorf("%w: depth %d (want 18, 34, 50, 101 or 152)", ErrConfig, cfg.Depth)
	}
	switch cfg.Stem {
	case "":
		cfg.Stem = "imagenet"
	case "imagenet", "cifar":
	default:
		return cfg, fmt.Errorf("%w: stem %q (want imagenet or cifar)", ErrConfig, cfg.Stem)
	}
	if cfg.Width == 0 {
		cfg.Width = 1
	}
	if !(cfg.Width > 0) || math.IsInf(cfg.Width, 0) || cfg.Width > 64 {
		return cfg, fmt.Errorf("%w: width multiplier %v (want 0 < width <= 64)", ErrConfig, cfg.Width)
	}
	if cfg.Classes == 0 {
		cfg.Classes = 1000
	}
	if cfg.Classes < 0 {
		return cfg, fmt.Errorf("%w: %d classes", ErrConfig, cfg.Classes)
	}
	if !(cfg.Dropout >= 0 && cfg.Dropout < 1) {
		return cfg, fmt.Errorf("%w: dropout %v (want 0 <= p < 1)", ErrConfig, cfg.Dropout)
	}
	return cfg, nil
}

// scaled is a stage's channel count under the width multiplier.
func scaled(c int, width float64) int { return max(1, int(math.Round(float64(c)*width))) }

// NewResNet builds a ResNet on b with torchvision's layer names and
// initialisation (convs Kaiming normal fan_out, BN 1/0, fc as
// torch.nn.Linear), drawn from an RNG seeded with cfg.Seed. The model starts
// in training mode with finite checks on.
func NewResNet(b Backend, cfg ResNetConfig) (*Model, error) {
	m, bd, err := buildResNet(b, cfg)
	if err != nil {
		return nil, err
	}
	m.flat, m.grads = layoutParams(b, bd.params, bd.inits, m.cfg.Seed)
	m.bufFlat = layoutBuffers(b, bd.buffers, bd.bufFill)
	return m, nil
}

// buildResNet creates the layer structure; parameters and buffers carry
// their shapes but no storage until laid out.
func buildResNet(b Backend, cfg ResNetConfig) (*Model, *builder, error) {
	cfg, err := cfg.Normalize()
	if err != nil {
		return nil, nil, err
	}
	e := newEnv(b)
	bd := &builder{e: e}
	m := &Model{cfg: cfg, e: e, train: true, checkFinite: true}

	planes := [4]int{}
	for i, c := range [4]int{64, 128, 256, 512} {
		planes[i] = scaled(c, cfg.Width)
	}
	inC := planes[0]
	if cfg.Stem == "imagenet" {
		m.units = append(m.units,
			bd.conv2d("conv1", 3, inC, 7, 2, 3, false),
			bd.batchNorm("bn1", inC),
			&ReLU{InPlace: true, e: e},
			&MaxPool2d{Kernel: 3, Stride: 2, Pad: 1, e: e})
	} else {
		m.units = append(m.units,
			bd.conv2d("conv1", 3, inC, 3, 1, 1, false),
			bd.batchNorm("bn1", inC),
			&ReLU{InPlace: true, e: e})
	}
	bottleneck := cfg.Depth >= 50
	for s, nb := range stageBlocks[cfg.Depth] {
		for i := 0; i < nb; i++ {
			stride := 1
			if s > 0 && i == 0 {
				stride = 2
			}
			name := fmt.Sprintf("layer%d.%d", s+1, i)
			if bottleneck {
				m.units = append(m.units, newBottleneck(bd, name, inC, planes[s], stride))
				inC = planes[s] * 4
			} else {
				m.units = append(m.units, newBasicBlock(bd, name, inC, planes[s], stride))
				inC = planes[s]
			}
		}
	}
	m.feat = inC
	m.units = append(m.units, &GlobalAvgPool{e: e}, &Flatten{})
	if cfg.Dropout > 0 {
		m.drop = &Dropout{P: cfg.Dropout, Seed: cfg.Seed, Train: true, e: e}
		m.units = append(m.units, m.drop)
	}
	m.fc = bd.linear("fc", inC, cfg.Classes)
	m.units = append(m.units, m.fc)
	fuseBNReLU(m.units) // the stem's bn1 + relu

	m.params, m.buffers = bd.params, bd.buffers
	m.reindex()
	m.collectBN()
	return m, bd, nil
}

func (m *Model) reindex() {
	m.e.index = make(map[*Param]int, len(m.params))
	for i, p := range m.params {
		m.e.index[p] = i
	}
}

func (m *Model) collectBN() {
	m.bns = nil
	var walk func(u unit)
	walk = func(u unit) {
		switch l := u.(type) {
		case *BatchNorm2d:
			m.bns = append(m.bns, l)
		case *Block:
			for _, v := range l.Main {
				walk(v)
			}
			for _, v := range l.Down {
				walk(v)
			}
		}
	}
	for _, u := range m.units {
		walk(u)
	}
}

// Backend is the backend the model lives on.
func (m *Model) Backend() Backend { return m.e.b }

// Config is the normalised configuration (Classes follows ReplaceHead).
func (m *Model) Config() ResNetConfig { return m.cfg }

// Params are the trainable tensors in state_dict order; a param's index in
// this slice is its paramIndex for SetGradReadyHook. Do not modify the slice.
func (m *Model) Params() []*Param { return m.params }

// Buffers are the BN buffers in state_dict order (running_mean,
// running_var, num_batches_tracked for each BN). Do not modify the slice.
func (m *Model) Buffers() []*Buffer { return m.buffers }

// ParamsFlat is the single tensor every Param.Value is a view of.
func (m *Model) ParamsFlat() *Tensor { return m.flat }

// GradsFlat is the single tensor every Param.Grad is a view of (same layout
// as ParamsFlat).
func (m *Model) GradsFlat() *Tensor { return m.grads }

// BuffersFlat is the single tensor every running_mean/running_var
// Buffer.Value is a view of.
func (m *Model) BuffersFlat() *Tensor { return m.bufFlat }

// NumParams returns the total parameter count and the unfrozen part of it.
func (m *Model) NumParams() (total, trainable int) {
	for _, p := range m.params {
		n := p.Value.Numel()
		total += n
		if !p.Frozen {
			trainable += n
		}
	}
	return total, trainable
}

// SetTrain selects training mode (batch statistics, running-stat updates,
// dropout) or evaluation mode (running statistics, no dropout).
func (m *Model) SetTrain(train bool) {
	m.train = train
	for _, bn := range m.bns {
		bn.Train = train
	}
	if m.drop != nil {
		m.drop.Train = train
	}
}

// Training reports the mode set by SetTrain.
func (m *Model) Training() bool { return m.train }

// SetCheckFinite turns the NaN/Inf checks of Forward on or off (default on).
func (m *Model) SetCheckFinite(on bool) { m.checkFinite = on }

// SetChannelReducer makes every BatchNorm2d a SyncBatchNorm over r (nil:
// local batch statistics).
func (m *Model) SetChannelReducer(r ChannelReducer) {
	for _, bn := range m.bns {
		bn.Reducer = r
	}
}

// SetGradReadyHook installs fn, called during Backward exactly once per
// parameter (frozen ones included) in strictly decreasing index order, as
// soon as that parameter's gradient is final for this backward. On an
// asynchronous backend the producing op has been queued, not necessarily
// finished. fn runs on the goroutine calling Backward and must not call the
// model's Backend concurrently. nil removes the hook.
func (m *Model) SetGradReadyHook(fn func(paramIndex int)) { m.e.hook = fn }

// SetDropoutStep sets the step number of the next training Forward; the
// dropout mask is a function of (Config().Seed, step), and the step advances
// by one per training Forward. Set it when resuming.
func (m *Model) SetDropoutStep(step int64) { m.step = step }

// SetInputGrad makes Backward compute dL/dx for the input (InputGrad), for
// saliency maps; by default backward stops at the lowest trainable layer.
func (m *Model) SetInputGrad(on bool) { m.inputGrad = on }

// InputGrad is dL/dx of the last Backward when SetInputGrad(true), else nil.
// It is owned by the model and valid until the next Backward.
func (m *Model) InputGrad() *Tensor {
	if !m.inputGrad {
		return nil
	}
	return m.inGrad.view
}

// FreezeBackbone marks every parameter except fc.weight and fc.bias Frozen:
// they get no gradient and no optimizer state (transfer learning). BN layers
// still update their running statistics in training mode, as in torch.
func (m *Model) FreezeBackbone() {
	for _, p := range m.params {
		p.Frozen = p != m.fc.Weight && p != m.fc.Bias
	}
}

// Unfreeze clears every Frozen flag.
func (m *Model) Unfreeze() {
	for _, p := range m.params {
		p.Frozen = false
	}
}

// ZeroGrad sets every gradient to zero.
func (m *Model) ZeroGrad() { m.e.b.Fill(m.grads, 0) }

// ReplaceHead replaces fc with a new torch.nn.Linear(features, classes)
// initialised from seed. ParamsFlat and GradsFlat are re-laid out (other
// parameters keep their values, gradients and Frozen flags; the *Param
// pointers stay the same except fc's); rebuild optimizer state and
// all-reduce buckets afterwards.
func (m *Model) ReplaceHead(classes int, seed int64) error {
	if classes < 1 {
		return fmt.Errorf("%w: %d classes", ErrConfig, classes)
	}
	b := m.e.b
	bd := &builder{e: m.e}
	fc := bd.linear("fc", m.feat, classes)
	keep := m.params[:len(m.params)-2]
	prefix := 0
	for _, p := range keep {
		prefix += p.Value.Numel()
	}
	newFC := bd.params
	total := prefix + newFC[0].Value.Numel() + newFC[1].Value.Numel()
	flat, grads := b.New(total), b.New(total)
	b.Copy(flat.View(0, prefix), m.flat.View(0, prefix))
	b.Copy(grads.View(0, prefix), m.grads.View(0, prefix))
	host := make([]float32, total-prefix)
	r := NewRNG(seed)
	nw := newFC[0].Value.Numel()
	bd.inits[0](r, host[:nw])
	bd.inits[1](r, host[nw:])
	b.FromHost(flat.View(prefix, total-prefix), host)
	off := 0
	params := append(append([]*Param(nil), keep...), newFC...)
	for _, p := range params {
		shape := p.Value.Shape
		p.Value, p.Grad = flat.View(off, shape...), grads.View(off, shape...)
		off += numel(shape)
	}
	b.Free(m.flat)
	b.Free(m.grads)
	m.fc.free()
	m.flat, m.grads, m.params = flat, grads, params
	m.fc = fc
	m.units[len(m.units)-1] = fc
	m.cfg.Classes = classes
	m.out, m.inShape = nil, nil
	m.reindex()
	return nil
}

// CheckFinite scans every parameter and buffer and returns an ErrNonFinite
// error naming the first that holds a NaN or Inf.
func (m *Model) CheckFinite() error {
	b := m.e.b
	for _, p := range m.params {
		if n := b.CountNonFinite(p.Value); n > 0 {
			return fmt.Errorf("%w: parameter %s has %d NaN/Inf values", ErrNonFinite, p.Name, n)
		}
	}
	for _, buf := range m.buffers {
		if buf.Value == nil {
			continue
		}
		if n := b.CountNonFinite(buf.Value); n > 0 {
			return fmt.Errorf("%w: buffer %s has %d NaN/Inf values", ErrNonFinite, buf.Name, n)
		}
	}
	return nil
}

// OutShape walks the layers for an input shape, returning the logits shape
// or an ErrShape error naming the first layer that cannot take its input.
func (m *Model) OutShape(in []int) ([]int, error) {
	if len(in) != 4 || in[0] < 1 || in[1] != 3 || in[2] < 1 || in[3] < 1 {
		return nil, fmt.Errorf("%w: model input has shape %v, want (N,3,H,W)", ErrShape, in)
	}
	h := in
	for _, u := range m.units {
		var err error
		if h, err = u.OutShape(h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Forward runs the model on x (N,3,H,W) and returns the logits
// (N,Classes), a tensor owned by the model and valid until the next
// Forward. Shape errors wrap ErrShape; with finite checks on, NaN/Inf in x
// or in the logits wrap ErrNonFinite. In training mode BN running
// statistics are updated and the dropout step advances.
func (m *Model) Forward(x *Tensor) (*Tensor, error) {
	m.out = nil
	if x == nil {
		return nil, fmt.Errorf("%w: nil input", ErrShape)
	}
	if m.inShape == nil || !SameShape(m.inShape, x.Shape) {
		if _, err := m.OutShape(x.Shape); err != nil {
			return nil, err
		}
		m.inShape = append([]int(nil), x.Shape...)
	}
	b := m.e.b
	if m.checkFinite {
		if n := b.CountNonFinite(x); n > 0 {
			return nil, fmt.Errorf("%w: input has %d NaN/Inf values", ErrNonFinite, n)
		}
	}
	if m.drop != nil {
		m.drop.Step = m.step
	}
	h := x
	for i, u := range m.units {
		var err error
		if h, err = u.Forward(h); err != nil {
			return nil, err
		}
		m.tapForward(i, h)
	}
	if m.train {
		m.step++
	}
	if m.checkFinite {
		if n := b.CountNonFinite(h); n > 0 {
			if err := m.CheckFinite(); err != nil {
				return nil, fmt.Errorf("logits have %d NaN/Inf values: %w", n, err)
			}
			return nil, fmt.Errorf("%w: logits have %d NaN/Inf values (activations overflowed)", ErrNonFinite, n)
		}
	}
	m.out = h
	return h, nil
}

// Backward back-propagates dlogits (the shape of the last Forward's logits)
// and accumulates (+=) into the gradients of unfrozen parameters. It stops
// below the lowest unit with an unfrozen parameter unless SetInputGrad(true).
func (m *Model) Backward(dlogits *Tensor) error {
	if m.out == nil {
		return fmt.Errorf("%w: model", ErrNoForward)
	}
	if dlogits == nil {
		return fmt.Errorf("%w: nil logits gradient", ErrShape)
	}
	if err := CheckShape("logits gradient", dlogits.Shape, m.out.Shape); err != nil {
		return err
	}
	e := m.e
	e.pool.reset()
	trainable := make([]bool, len(m.units)) // unit i has an unfrozen param
	below := make([]bool, len(m.units)+1)   // some unit < i has one
	for i, u := range m.units {
		for _, p := range u.params() {
			if !p.Frozen {
				trainable[i] = true
			}
		}
		below[i+1] = below[i] || trainable[i]
	}
	announce := func(upTo int) { // params of units [0, upTo], largest index first
		if e.hook == nil {
			return
		}
		for j := upTo; j >= 0; j-- {
			ps := m.units[j].params()
			for k := len(ps) - 1; k >= 0; k-- {
				e.ready(ps[k])
			}
		}
	}
	h := dlogits
	for i := len(m.units) - 1; i >= 0; i-- {
		m.tapBackward(i, h)
		need := m.inputGrad || below[i] || m.tapAbove(i)
		if !need && !trainable[i] {
			announce(i)
			h = nil
			break
		}
		nh, err := m.units[i].Backward(h, need)
		if err != nil {
			return fmt.Errorf("backward: %w", err)
		}
		if !sameStorage(nh, h) {
			e.release(h, nil)
		}
		h = nh
		if !need {
			announce(i - 1)
			break
		}
	}
	if m.inputGrad && h != nil {
		g := m.inGrad.get(e.b, h.Shape...)
		e.b.Copy(g, h)
	}
	e.release(h, nil)
	return nil
}

// Free releases every tensor of the model; it must not be used afterwards.
func (m *Model) Free() {
	b := m.e.b
	for _, u := range m.units {
		u.free()
	}
	m.e.pool.free(b)
	m.inGrad.free(b)
	m.freeTap()
	for _, t := range []*Tensor{m.flat, m.grads, m.bufFlat} {
		if t != nil {
			b.Free(t)
		}
	}
	m.flat, m.grads, m.bufFlat, m.out = nil, nil, nil, nil
}

package nn

import "fmt"

// SGDConfig holds torch.optim.SGD's hyper-parameters. torch has no default
// learning rate for SGD; DefaultSGDConfig fills in the others.
type SGDConfig struct {
	LR          float64
	Momentum    float64
	Dampening   float64
	WeightDecay float64
	Nesterov    bool
}

// DefaultSGDConfig is torch.optim.SGD(params, lr): no momentum, no
// dampening, no weight decay.
func DefaultSGDConfig(lr float64) SGDConfig { return SGDConfig{LR: lr} }

// Validate applies torch's checks: lr > 0 (0 is refused here as a missing
// setting), momentum, dampening and weight decay >= 0, and Nesterov only
// with momentum > 0 and zero dampening.
func (c SGDConfig) Validate() error {
	if err := checkLR("sgd", c.LR); err != nil {
		return err
	}
	if err := nonNeg("sgd", "momentum", c.Momentum, "dampening", c.Dampening, "weight_decay", c.WeightDecay); err != nil {
		return err
	}
	if c.Nesterov && (c.Momentum <= 0 || c.Dampening != 0) {
		return fmt.Errorf("%w: sgd: Nesterov momentum requires a momentum and zero dampening", ErrConfig)
	}
	return nil
}

// SGD is torch.optim.SGD: stochastic gradient descent with optional
// momentum, dampening, Nesterov momentum and (coupled) weight decay. Its
// per-parameter state is "momentum_buffer", created on the parameter's
// first step with momentum (initialised to the gradient, undampened).
type SGD struct {
	optimBase
	cfg SGDConfig
}

var (
	_ Optimizer      = (*SGD)(nil)
	_ MomentumSetter = (*SGD)(nil)
)

// NewSGD returns an SGD optimizer over params whose state lives on b.
func NewSGD(b Backend, params []*Param, cfg SGDConfig) (*SGD, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &SGD{cfg: cfg}
	base, err := newOptimBase("sgd", b, params, cfg.LR, s)
	if err != nil {
		return nil, err
	}
	s.optimBase = base
	return s, nil
}

// Config returns the hyper-parameters, with LR and Momentum as they are now.
func (s *SGD) Config() SGDConfig {
	c := s.cfg
	c.LR = s.lr
	return c
}

// Momentum implements MomentumSetter.
func (s *SGD) Momentum() float64 { return s.cfg.Momentum }

// SetMomentum implements MomentumSetter (values < 0 are clamped to 0).
func (s *SGD) SetMomentum(m float64) { s.cfg.Momentum = max(m, 0) }

func (s *SGD) slotNames() (required, optional []string) {
	return nil, []string{"momentum_buffer"}
}

func (s *SGD) slotInit(string) float32 { return 0 }

func (s *SGD) update(p *Param, st *paramState) {
	var o SGDParams
	setHyper(&o.LR, s.lr)
	setHyper(&o.Momentum, s.cfg.Momentum)
	setHyper(&o.Dampening, s.cfg.Dampening)
	setHyper(&o.WeightDecay, s.cfg.WeightDecay)
	o.Nesterov = s.cfg.Nesterov
	var buf *Tensor
	first := false
	if s.cfg.Momentum != 0 {
		buf = st.slots["momentum_buffer"]
		if buf == nil {
			buf = s.newSlot(p, "momentum_buffer")
			st.slots["momentum_buffer"] = buf
			first = true
		}
	}
	s.b.SGDStep(p.Value, p.Grad, buf, o, first)
}

package nn

// RMSpropConfig holds torch.optim.RMSprop's hyper-parameters.
type RMSpropConfig struct {
	LR          float64
	Alpha       float64
	Eps         float64
	WeightDecay float64
	Momentum    float64
	Centered    bool
}

// DefaultRMSpropConfig is torch.optim.RMSprop's defaults: lr 1e-2, alpha
// 0.99, eps 1e-8, no weight decay, no momentum, not centered.
func DefaultRMSpropConfig() RMSpropConfig {
	return RMSpropConfig{LR: 1e-2, Alpha: 0.99, Eps: 1e-8}
}

// Validate applies torch's checks: lr > 0, everything else >= 0.
func (c RMSpropConfig) Validate() error {
	if err := checkLR("rmsprop", c.LR); err != nil {
		return err
	}
	return nonNeg("rmsprop", "alpha", c.Alpha, "eps", c.Eps, "weight_decay", c.WeightDecay, "momentum", c.Momentum)
}

// RMSprop is torch.optim.RMSprop. Per-parameter state: "square_avg",
// "momentum_buffer" (Momentum > 0), "grad_avg" (Centered) and the step
// count, all created on the parameter's first step.
type RMSprop struct {
	optimBase
	cfg RMSpropConfig
}

var (
	_ Optimizer      = (*RMSprop)(nil)
	_ MomentumSetter = (*RMSprop)(nil)
)

// NewRMSprop returns an RMSprop optimizer over params whose state lives on
// b. Start from DefaultRMSpropConfig.
func NewRMSprop(b Backend, params []*Param, cfg RMSpropConfig) (*RMSprop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &RMSprop{cfg: cfg}
	base, err := newOptimBase("rmsprop", b, params, cfg.LR, r)
	if err != nil {
		return nil, err
	}
	r.optimBase = base
	return r, nil
}

// Config returns the hyper-parameters, with LR and Momentum as they are now.
func (r *RMSprop) Config() RMSpropConfig {
	c := r.cfg
	c.LR = r.lr
	return c
}

// Momentum implements MomentumSetter.
func (r *RMSprop) Momentum() float64 { return r.cfg.Momentum }

// SetMomentum implements MomentumSetter (values < 0 are clamped to 0). A
// momentum buffer is created, at zero as in torch, on the next step of a
// parameter that lacks one.
func (r *RMSprop) SetMomentum(m float64) { r.cfg.Momentum = max(m, 0) }

func (r *RMSprop) slotNames() (required, optional []string) {
	required = []string{"square_avg"}
	if r.cfg.Momentum > 0 {
		required = append(required, "momentum_buffer")
	} else {
		optional = append(optional, "momentum_buffer")
	}
	if r.cfg.Centered {
		required = append(required, "grad_avg")
	}
	return required, optional
}

func (r *RMSprop) slotInit(string) float32 { return 0 }

func (r *RMSprop) update(p *Param, st *paramState) {
	var o RMSpropParams
	setHyper(&o.LR, r.lr)
	setHyper(&o.Alpha, r.cfg.Alpha)
	setHyper(&o.Eps, r.cfg.Eps)
	setHyper(&o.WeightDecay, r.cfg.WeightDecay)
	setHyper(&o.Momentum, r.cfg.Momentum)
	o.Centered = r.cfg.Centered
	r.b.RMSpropStep(p.Value, p.Grad, st.slots["square_avg"], st.slots["momentum_buffer"], st.slots["grad_avg"], o)
}

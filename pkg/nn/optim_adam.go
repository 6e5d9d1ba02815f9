package nn

import "fmt"

// AdamConfig holds torch.optim.Adam's and AdamW's hyper-parameters.
type AdamConfig struct {
	LR          float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
	AMSGrad     bool
}

// DefaultAdamConfig is torch.optim.Adam's defaults: lr 1e-3, betas
// (0.9, 0.999), eps 1e-8, no weight decay.
func DefaultAdamConfig() AdamConfig {
	return AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// DefaultAdamWConfig is torch.optim.AdamW's defaults: Adam's, with weight
// decay 1e-2.
func DefaultAdamWConfig() AdamConfig {
	c := DefaultAdamConfig()
	c.WeightDecay = 1e-2
	return c
}

// Validate applies torch's checks: lr > 0, eps >= 0, 0 <= betas < 1,
// weight decay >= 0.
func (c AdamConfig) Validate(algo string) error {
	if err := checkLR(algo, c.LR); err != nil {
		return err
	}
	if err := nonNeg(algo, "eps", c.Eps, "weight_decay", c.WeightDecay, "beta1", c.Beta1, "beta2", c.Beta2); err != nil {
		return err
	}
	if c.Beta1 >= 1 || c.Beta2 >= 1 {
		return fmt.Errorf("%w: %s: betas (%v, %v) must be < 1", ErrConfig, algo, c.Beta1, c.Beta2)
	}
	return nil
}

// adamCore is Adam and AdamW. Per-parameter state: "exp_avg",
// "exp_avg_sq", "max_exp_avg_sq" (AMSGrad) and the step count.
type adamCore struct {
	optimBase
	cfg       AdamConfig
	decoupled bool
}

// Adam is torch.optim.Adam (L2 weight decay added to the gradient).
type Adam struct{ adamCore }

// AdamW is torch.optim.AdamW (decoupled weight decay: p *= 1 - lr*wd
// before the Adam update).
type AdamW struct{ adamCore }

var (
	_ Optimizer      = (*Adam)(nil)
	_ Optimizer      = (*AdamW)(nil)
	_ MomentumSetter = (*Adam)(nil)
	_ MomentumSetter = (*AdamW)(nil)
)

// NewAdam returns an Adam optimizer over params whose state lives on b.
// Start from DefaultAdamConfig.
func NewAdam(b Backend, params []*Param, cfg AdamConfig) (*Adam, error) {
	a := &Adam{}
	if err := a.init("adam", b, params, cfg, false); err != nil {
		return nil, err
	}
	return a, nil
}

// NewAdamW returns an AdamW optimizer over params whose state lives on b.
// Start from DefaultAdamWConfig.
func NewAdamW(b Backend, params []*Param, cfg AdamConfig) (*AdamW, error) {
	a := &AdamW{}
	if err := a.init("adamw", b, params, cfg, true); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *adamCore) init(algo string, b Backend, params []*Param, cfg AdamConfig, decoupled bool) error {
	if err := cfg.Validate(algo); err != nil {
		return err
	}
	a.cfg, a.decoupled = cfg, decoupled
	base, err := newOptimBase(algo, b, params, cfg.LR, a)
	if err != nil {
		return err
	}
	a.optimBase = base
	return nil
}

// Config returns the hyper-parameters, with LR and Beta1 as they are now.
func (a *adamCore) Config() AdamConfig {
	c := a.cfg
	c.LR = a.lr
	return c
}

// Momentum implements MomentumSetter: Adam's momentum is beta1.
func (a *adamCore) Momentum() float64 { return a.cfg.Beta1 }

// SetMomentum implements MomentumSetter; m is clamped to [0, 1).
func (a *adamCore) SetMomentum(m float64) {
	if !(m >= 0) {
		m = 0
	}
	if m >= 1 {
		m = 0.9999999
	}
	a.cfg.Beta1 = m
}

func (a *adamCore) slotNames() (required, optional []string) {
	if a.cfg.AMSGrad {
		return []string{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, nil
	}
	return []string{"exp_avg", "exp_avg_sq"}, nil
}

func (a *adamCore) slotInit(string) float32 { return 0 }

func (a *adamCore) update(p *Param, st *paramState) {
	var o AdamParams
	setHyper(&o.LR, a.lr)
	setHyper(&o.Beta1, a.cfg.Beta1)
	setHyper(&o.Beta2, a.cfg.Beta2)
	setHyper(&o.Eps, a.cfg.Eps)
	setHyper(&o.WeightDecay, a.cfg.WeightDecay)
	o.Decoupled = a.decoupled
	o.AMSGrad = a.cfg.AMSGrad
	o.Step = int(st.step)
	a.b.AdamStep(p.Value, p.Grad, st.slots["exp_avg"], st.slots["exp_avg_sq"], st.slots["max_exp_avg_sq"], o)
}

package nn

// AdagradConfig holds torch.optim.Adagrad's hyper-parameters.
type AdagradConfig struct {
	LR                      float64
	LRDecay                 float64
	WeightDecay             float64
	InitialAccumulatorValue float64
	Eps                     float64
}

// DefaultAdagradConfig is torch.optim.Adagrad's defaults: lr 1e-2, no lr
// decay, no weight decay, accumulator starting at 0, eps 1e-10.
func DefaultAdagradConfig() AdagradConfig { return AdagradConfig{LR: 1e-2, Eps: 1e-10} }

// Validate applies torch's checks: lr > 0, everything else >= 0.
func (c AdagradConfig) Validate() error {
	if err := checkLR("adagrad", c.LR); err != nil {
		return err
	}
	return nonNeg("adagrad", "lr_decay", c.LRDecay, "weight_decay", c.WeightDecay,
		"initial_accumulator_value", c.InitialAccumulatorValue, "eps", c.Eps)
}

// Adagrad is torch.optim.Adagrad (dense gradients). Per-parameter state:
// "sum" (starting at InitialAccumulatorValue) and the step count.
type Adagrad struct {
	optimBase
	cfg AdagradConfig
}

var _ Optimizer = (*Adagrad)(nil)

// NewAdagrad returns an Adagrad optimizer over params whose state lives on
// b. Start from DefaultAdagradConfig.
func NewAdagrad(b Backend, params []*Param, cfg AdagradConfig) (*Adagrad, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Adagrad{cfg: cfg}
	base, err := newOptimBase("adagrad", b, params, cfg.LR, a)
	if err != nil {
		return nil, err
	}
	a.optimBase = base
	return a, nil
}

// Config returns the hyper-parameters, with LR as it is now.
func (a *Adagrad) Config() AdagradConfig {
	c := a.cfg
	c.LR = a.lr
	return c
}

func (a *Adagrad) slotNames() (required, optional []string) { return []string{"sum"}, nil }

func (a *Adagrad) slotInit(string) float32 { return float32(a.cfg.InitialAccumulatorValue) }

func (a *Adagrad) update(p *Param, st *paramState) {
	var o AdagradParams
	setHyper(&o.LR, a.lr)
	setHyper(&o.LRDecay, a.cfg.LRDecay)
	setHyper(&o.WeightDecay, a.cfg.WeightDecay)
	setHyper(&o.Eps, a.cfg.Eps)
	o.Step = int(st.step)
	a.b.AdagradStep(p.Value, p.Grad, st.slots["sum"], o)
}

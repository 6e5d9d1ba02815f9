// Package schedule holds the learning-rate schedules, with
// torch.optim.lr_scheduler semantics, as pure functions of the step index.
// It depends on nothing but the standard library, so the coordinator can
// show a job's learning rate without linking the training engine; pkg/nn
// re-exports every name (nn.Schedule, nn.NewStepLR, ...).
package schedule

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrConfig is wrapped by errors about invalid schedule settings (the
// same value as nn.ErrConfig).
var ErrConfig = errors.New("nn: invalid configuration")

// Learning-rate schedules with torch.optim.lr_scheduler semantics.
//
// A Schedule is a pure function of the step index: LR(t) is the learning
// rate torch's scheduler would have set after t calls of scheduler.step(),
// i.e. the rate to use for the (t+1)-th optimizer step when the scheduler
// is stepped once per optimizer step (or for epoch t when it is stepped per
// epoch). Resuming a run is therefore just asking for LR(t) again.
//
// Each schedule uses torch's closed form (_get_closed_form_lr where torch
// has one). torch's default, chainable path computes the same values
// recursively (lr_t = lr_{t-1} * factor_t); the two differ only by float64
// rounding, around 1e-16 relative, which the float32 update kernels almost
// never see. OneCycleLR is closed-form in torch too, so it matches exactly.
// Invalid settings give errors wrapping ErrConfig.

// Schedule gives the learning rate for a step index t >= 0 (negative t is
// treated as 0). Implementations are immutable and safe for concurrent use.
type Schedule interface {
	LR(t int) float64
}

// MomentumSchedule is implemented by schedules that also cycle momentum
// (OneCycle): Momentum returns the value for step t and whether cycling is on.
type MomentumSchedule interface {
	Momentum(t int) (float64, bool)
}

func checkBase(name string, base float64) error {
	if !(base >= 0) || math.IsInf(base, 0) {
		return fmt.Errorf("%w: %s: base learning rate %v must be finite and >= 0", ErrConfig, name, base)
	}
	return nil
}

// ConstantLR keeps the base rate: the "no schedule" schedule.
type ConstantLR float64

// LR implements Schedule.
func (c ConstantLR) LR(int) float64 { return float64(c) }

// StepLR is torch.optim.lr_scheduler.StepLR: the rate is multiplied by
// Gamma every StepSize steps, LR(t) = Base * Gamma^floor(t/StepSize).
type StepLR struct {
	base     float64
	stepSize int
	gamma    float64
}

// NewStepLR returns StepLR(step_size=stepSize, gamma=gamma) over base
// (torch's default gamma is 0.1).
func NewStepLR(base float64, stepSize int, gamma float64) (*StepLR, error) {
	if err := checkBase("StepLR", base); err != nil {
		return nil, err
	}
	if stepSize <= 0 {
		return nil, fmt.Errorf("%w: StepLR: step size %d must be > 0", ErrConfig, stepSize)
	}
	if !(gamma >= 0) || math.IsInf(gamma, 0) {
		return nil, fmt.Errorf("%w: StepLR: gamma %v must be finite and >= 0", ErrConfig, gamma)
	}
	return &StepLR{base: base, stepSize: stepSize, gamma: gamma}, nil
}

// LR implements Schedule.
func (s *StepLR) LR(t int) float64 {
	t = max(t, 0)
	return s.base * math.Pow(s.gamma, float64(t/s.stepSize))
}

// MultiStepLR is torch.optim.lr_scheduler.MultiStepLR: the rate is
// multiplied by Gamma at each milestone, LR(t) = Base * Gamma^(number of
// milestones <= t). A milestone listed twice counts twice, as in torch.
type MultiStepLR struct {
	base       float64
	milestones []int // sorted
	gamma      float64
}

// NewMultiStepLR returns MultiStepLR(milestones, gamma) over base.
func NewMultiStepLR(base float64, milestones []int, gamma float64) (*MultiStepLR, error) {
	if err := checkBase("MultiStepLR", base); err != nil {
		return nil, err
	}
	if !(gamma >= 0) || math.IsInf(gamma, 0) {
		return nil, fmt.Errorf("%w: MultiStepLR: gamma %v must be finite and >= 0", ErrConfig, gamma)
	}
	ms := append([]int(nil), milestones...)
	sort.Ints(ms)
	if len(ms) > 0 && ms[0] <= 0 {
		return nil, fmt.Errorf("%w: MultiStepLR: milestone %d must be > 0", ErrConfig, ms[0])
	}
	return &MultiStepLR{base: base, milestones: ms, gamma: gamma}, nil
}

// LR implements Schedule.
func (s *MultiStepLR) LR(t int) float64 {
	n := sort.SearchInts(s.milestones, max(t, 0)+1) // milestones <= t (bisect_right)
	return s.base * math.Pow(s.gamma, float64(n))
}

// CosineAnnealingLR is torch.optim.lr_scheduler.CosineAnnealingLR in its
// closed form: LR(t) = EtaMin + (Base-EtaMin)*(1+cos(pi*t/TMax))/2. Past
// TMax it rises again with period 2*TMax, as torch's recursion does.
type CosineAnnealingLR struct {
	base, etaMin float64
	tMax         int
}

// NewCosineAnnealingLR returns CosineAnnealingLR(T_max=tMax, eta_min=etaMin) over base.
func NewCosineAnnealingLR(base float64, tMax int, etaMin float64) (*CosineAnnealingLR, error) {
	if err := checkBase("CosineAnnealingLR", base); err != nil {
		return nil, err
	}
	if tMax <= 0 {
		return nil, fmt.Errorf("%w: CosineAnnealingLR: T_max %d must be > 0", ErrConfig, tMax)
	}
	if !(etaMin >= 0) || math.IsInf(etaMin, 0) {
		return nil, fmt.Errorf("%w: CosineAnnealingLR: eta_min %v must be finite and >= 0", ErrConfig, etaMin)
	}
	return &CosineAnnealingLR{base: base, etaMin: etaMin, tMax: tMax}, nil
}

// LR implements Schedule.
func (s *CosineAnnealingLR) LR(t int) float64 {
	t = max(t, 0)
	return s.etaMin + (s.base-s.etaMin)*(1+math.Cos(math.Pi*float64(t)/float64(s.tMax)))/2
}

// OneCycleConfig holds torch.optim.lr_scheduler.OneCycleLR's settings.
// DefaultOneCycleConfig fills in torch's defaults.
type OneCycleConfig struct {
	MaxLR          float64
	TotalSteps     int
	PctStart       float64 // fraction of steps spent increasing the rate (0.3)
	AnnealLinear   bool    // false: anneal_strategy="cos" (torch's default)
	DivFactor      float64 // initial_lr = MaxLR/DivFactor (25)
	FinalDivFactor float64 // min_lr = initial_lr/FinalDivFactor (1e4)
	ThreePhase     bool    // false: two phases, as torch's default
	CycleMomentum  bool    // true: momentum cycles inversely to the rate
	BaseMomentum   float64 // 0.85
	MaxMomentum    float64 // 0.95
}

// DefaultOneCycleConfig is OneCycleLR(max_lr, total_steps) with torch's defaults.
func DefaultOneCycleConfig(maxLR float64, totalSteps int) OneCycleConfig {
	return OneCycleConfig{
		MaxLR: maxLR, TotalSteps: totalSteps, PctStart: 0.3,
		DivFactor: 25, FinalDivFactor: 1e4,
		CycleMomentum: true, BaseMomentum: 0.85, MaxMomentum: 0.95,
	}
}

// oneCyclePhase is one entry of torch's _schedule_phases.
type oneCyclePhase struct {
	endStep          float64
	startLR, endLR   float64
	startMom, endMom float64
}

// OneCycleLR is torch.optim.lr_scheduler.OneCycleLR (1cycle policy). The
// rate warms from MaxLR/DivFactor to MaxLR over PctStart of the steps,
// then anneals to initial/FinalDivFactor; with CycleMomentum the momentum
// (beta1 for Adam) goes the opposite way between MaxMomentum and
// BaseMomentum. torch raises past TotalSteps; LR(t) clamps t to TotalSteps.
type OneCycleLR struct {
	cfg    OneCycleConfig
	phases []oneCyclePhase
}

var _ MomentumSchedule = (*OneCycleLR)(nil)

// NewOneCycleLR validates cfg (as torch does) and returns the schedule.
func NewOneCycleLR(cfg OneCycleConfig) (*OneCycleLR, error) {
	if err := checkBase("OneCycleLR", cfg.MaxLR); err != nil {
		return nil, err
	}
	if cfg.TotalSteps <= 0 {
		return nil, fmt.Errorf("%w: OneCycleLR: total steps %d must be > 0", ErrConfig, cfg.TotalSteps)
	}
	if !(cfg.PctStart >= 0 && cfg.PctStart <= 1) {
		return nil, fmt.Errorf("%w: OneCycleLR: pct_start %v must be in [0, 1]", ErrConfig, cfg.PctStart)
	}
	if !(cfg.DivFactor > 0) || !(cfg.FinalDivFactor > 0) {
		return nil, fmt.Errorf("%w: OneCycleLR: div_factor %v and final_div_factor %v must be > 0", ErrConfig, cfg.DivFactor, cfg.FinalDivFactor)
	}
	if cfg.CycleMomentum && (!(cfg.BaseMomentum >= 0) || !(cfg.MaxMomentum >= 0)) {
		return nil, fmt.Errorf("%w: OneCycleLR: momenta %v, %v must be >= 0", ErrConfig, cfg.BaseMomentum, cfg.MaxMomentum)
	}
	initial := cfg.MaxLR / cfg.DivFactor
	minLR := initial / cfg.FinalDivFactor
	total := float64(cfg.TotalSteps)
	var ph []oneCyclePhase
	if cfg.ThreePhase {
		ph = []oneCyclePhase{
			{cfg.PctStart*total - 1, initial, cfg.MaxLR, cfg.MaxMomentum, cfg.BaseMomentum},
			{2*cfg.PctStart*total - 2, cfg.MaxLR, initial, cfg.BaseMomentum, cfg.MaxMomentum},
			{total - 1, initial, minLR, cfg.MaxMomentum, cfg.MaxMomentum},
		}
	} else {
		ph = []oneCyclePhase{
			{cfg.PctStart*total - 1, initial, cfg.MaxLR, cfg.MaxMomentum, cfg.BaseMomentum},
			{total - 1, cfg.MaxLR, minLR, cfg.BaseMomentum, cfg.MaxMomentum},
		}
	}
	// torch divides by (end_step - start_step); refuse settings where that is 0.
	start := 0.0
	for i, p := range ph {
		if p.endStep == start {
			return nil, fmt.Errorf("%w: OneCycleLR: phase %d is empty (total steps %d, pct_start %v)", ErrConfig, i+1, cfg.TotalSteps, cfg.PctStart)
		}
		start = p.endStep
	}
	return &OneCycleLR{cfg: cfg, phases: ph}, nil
}

func (s *OneCycleLR) anneal(start, end, pct float64) float64 {
	if s.cfg.AnnealLinear {
		return (end-start)*pct + start
	}
	return end + (start-end)/2.0*(math.Cos(math.Pi*pct)+1)
}

// at returns the rate and momentum of step t (torch's get_lr loop).
func (s *OneCycleLR) at(t int) (lr, mom float64) {
	step := float64(min(max(t, 0), s.cfg.TotalSteps))
	start := 0.0
	for i, p := range s.phases {
		if step <= p.endStep || i == len(s.phases)-1 {
			pct := (step - start) / (p.endStep - start)
			return s.anneal(p.startLR, p.endLR, pct), s.anneal(p.startMom, p.endMom, pct)
		}
		start = p.endStep
	}
	panic("unreachable")
}

// LR implements Schedule.
func (s *OneCycleLR) LR(t int) float64 {
	lr, _ := s.at(t)
	return lr
}

// Momentum implements MomentumSchedule.
func (s *OneCycleLR) Momentum(t int) (float64, bool) {
	if !s.cfg.CycleMomentum {
		return 0, false
	}
	_, m := s.at(t)
	return m, true
}

// LinearLR is torch.optim.lr_scheduler.LinearLR: the base rate times a
// factor going linearly from StartFactor to EndFactor over TotalIters
// steps, then held: LR(t) = Base*(Start + (End-Start)*min(t,Total)/Total).
type LinearLR struct {
	base, start, end float64
	total            int
}

// NewLinearLR returns LinearLR(start_factor, end_factor, total_iters) over
// base (torch's defaults: 1/3, 1.0, 5).
func NewLinearLR(base, startFactor, endFactor float64, totalIters int) (*LinearLR, error) {
	if err := checkBase("LinearLR", base); err != nil {
		return nil, err
	}
	if !(startFactor > 0 && startFactor <= 1) {
		return nil, fmt.Errorf("%w: LinearLR: start factor %v must be in (0, 1]", ErrConfig, startFactor)
	}
	if !(endFactor >= 0 && endFactor <= 1) {
		return nil, fmt.Errorf("%w: LinearLR: end factor %v must be in [0, 1]", ErrConfig, endFactor)
	}
	if totalIters <= 0 {
		return nil, fmt.Errorf("%w: LinearLR: total iterations %d must be > 0", ErrConfig, totalIters)
	}
	return &LinearLR{base: base, start: startFactor, end: endFactor, total: totalIters}, nil
}

// LR implements Schedule.
func (s *LinearLR) LR(t int) float64 {
	t = min(max(t, 0), s.total)
	return s.base * (s.start + (s.end-s.start)*float64(t)/float64(s.total))
}

// Warmup is a linear warm-up in front of another schedule, as
// SequentialLR([LinearLR(start_factor, 1.0, steps), after], milestones=[steps]):
// for t < Steps the rate is after.LR(0) times a factor rising linearly from
// StartFactor towards 1; from t = Steps on it is after.LR(t-Steps).
type Warmup struct {
	steps       int
	startFactor float64
	after       Schedule
}

var _ MomentumSchedule = (*Warmup)(nil)

// NewWarmup returns a warm-up of steps steps from startFactor*after.LR(0)
// into after.
func NewWarmup(steps int, startFactor float64, after Schedule) (*Warmup, error) {
	if after == nil {
		return nil, fmt.Errorf("%w: Warmup: no schedule to warm up into", ErrConfig)
	}
	if steps <= 0 {
		return nil, fmt.Errorf("%w: Warmup: steps %d must be > 0", ErrConfig, steps)
	}
	if !(startFactor > 0 && startFactor <= 1) {
		return nil, fmt.Errorf("%w: Warmup: start factor %v must be in (0, 1]", ErrConfig, startFactor)
	}
	return &Warmup{steps: steps, startFactor: startFactor, after: after}, nil
}

// LR implements Schedule.
func (w *Warmup) LR(t int) float64 {
	t = max(t, 0)
	if t >= w.steps {
		return w.after.LR(t - w.steps)
	}
	f := w.startFactor + (1-w.startFactor)*float64(t)/float64(w.steps)
	return w.after.LR(0) * f
}

// Momentum implements MomentumSchedule by passing through the wrapped
// schedule's momentum (held at its step-0 value during the warm-up).
func (w *Warmup) Momentum(t int) (float64, bool) {
	ms, ok := w.after.(MomentumSchedule)
	if !ok {
		return 0, false
	}
	return ms.Momentum(max(t-w.steps, 0))
}

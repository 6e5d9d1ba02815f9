package nn

import "github.com/ringtrain/ringtrain/pkg/schedule"

// The learning-rate schedules live in package schedule (which the
// coordinator imports without the engine); these are their names here.
type (
	Schedule          = schedule.Schedule
	MomentumSchedule  = schedule.MomentumSchedule
	ConstantLR        = schedule.ConstantLR
	StepLR            = schedule.StepLR
	MultiStepLR       = schedule.MultiStepLR
	CosineAnnealingLR = schedule.CosineAnnealingLR
	OneCycleConfig    = schedule.OneCycleConfig
	OneCycleLR        = schedule.OneCycleLR
	LinearLR          = schedule.LinearLR
	Warmup            = schedule.Warmup
)

var (
	NewStepLR             = schedule.NewStepLR
	NewMultiStepLR        = schedule.NewMultiStepLR
	NewCosineAnnealingLR  = schedule.NewCosineAnnealingLR
	DefaultOneCycleConfig = schedule.DefaultOneCycleConfig
	NewOneCycleLR         = schedule.NewOneCycleLR
	NewLinearLR           = schedule.NewLinearLR
	NewWarmup             = schedule.NewWarmup
)

// ApplySchedule sets the optimizer's learning rate (and momentum, for a
// schedule that cycles it and an optimizer that has one) for step t.
func ApplySchedule(o Optimizer, s Schedule, t int) {
	o.SetLR(s.LR(t))
	if ms, ok := s.(MomentumSchedule); ok {
		if m, ok := ms.Momentum(t); ok {
			if setter, ok := o.(MomentumSetter); ok {
				setter.SetMomentum(m)
			}
		}
	}
}

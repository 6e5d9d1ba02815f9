package schedule

import (
	"fmt"
	"math"

	"github.com/ringtrain/ringtrain/pkg/job"
)

// FromSpec converts a job's epoch-based schedule into a per-step one for
// stepsPerEpoch steps an epoch. Errors wrap ErrConfig.
func FromSpec(spec job.Spec, stepsPerEpoch int) (Schedule, error) {
	s := spec.Schedule
	base := spec.Optimizer.LR
	total := spec.Epochs * stepsPerEpoch
	var sch Schedule
	var err error
	switch s.Name {
	case "none", "":
		sch = ConstantLR(base)
	case "step":
		sch, err = NewStepLR(base, s.StepSize*stepsPerEpoch, s.Gamma)
	case "multistep":
		ms := make([]int, len(s.Milestones))
		for i, e := range s.Milestones {
			ms[i] = e * stepsPerEpoch
		}
		sch, err = NewMultiStepLR(base, ms, s.Gamma)
	case "cosine":
		sch, err = NewCosineAnnealingLR(base, max(total, 1), 0)
	case "onecycle":
		maxLR := s.MaxLR
		if maxLR <= 0 {
			maxLR = base
		}
		sch, err = NewOneCycleLR(DefaultOneCycleConfig(maxLR, max(total, 1)))
	default:
		return nil, fmt.Errorf("%w: unknown schedule %q", ErrConfig, s.Name)
	}
	if err != nil {
		return nil, err
	}
	if w := int(math.Round(s.WarmupEpochs * float64(stepsPerEpoch))); w > 0 && s.Name != "onecycle" {
		sch, err = NewWarmup(w, s.WarmupStart, sch)
		if err != nil {
			return nil, err
		}
	}
	return sch, nil
}

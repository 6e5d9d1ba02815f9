package schedule

import (
	"math"
	"testing"
)

// The schedules' values against torch are tested through pkg/nn's names
// (pkg/nn/schedule_test.go, with torch's recorded rates); this checks an
// internal step.
func TestOneCycleAnnealMidpoint(t *testing.T) {
	oc, err := NewOneCycleLR(DefaultOneCycleConfig(0.1, 100))
	if err != nil {
		t.Fatal(err)
	}
	// Halfway through the warm-up phase: cos anneal gives the mean.
	if got, want := oc.anneal(0.004, 0.1, 0.5), (0.004+0.1)/2; math.Abs(got-want) > 1e-15 {
		t.Fatalf("anneal midpoint %.17g, want %.17g", got, want)
	}
}

package scale

import "math"

// Verdict is a goal's outcome over interleaved rounds.
type Verdict string

// The verdicts. A goal is met (or missed) only when every round agrees;
// rounds on both sides of the goal give Inconclusive, not whichever side
// the median happened to fall on, so that repeated runs of a noisy
// measurement do not flip between met and missed.
const (
	Met          Verdict = "met"
	Missed       Verdict = "MISSED"
	Inconclusive Verdict = "inconclusive"
)

// Judge returns r's verdict against goal: with atLeast the goal is
// value >= goal (efficiency, busbw, ratio to gloo), otherwise value <= goal
// (model error). No rounds: Inconclusive.
func (r Ratio) Judge(goal float64, atLeast bool) Verdict {
	if len(r.Rounds) == 0 {
		return Inconclusive
	}
	lo, hi := r.Min, r.Max
	if !atLeast { // value <= goal is met: mirror it
		lo, hi = -r.Max, -r.Min
		goal = -goal
	}
	switch {
	case lo >= goal:
		return Met
	case hi < goal:
		return Missed
	}
	return Inconclusive
}

// Noisy reports whether the rounds' spread (max - min) is wider than the
// median's margin to the goal: one more round could then land on the
// other side.
func (r Ratio) Noisy(goal float64) bool {
	return len(r.Rounds) > 1 && r.Max-r.Min > math.Abs(r.Median-goal)
}

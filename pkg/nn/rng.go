package nn

import "math"

// RNG is the engine's deterministic random generator (SplitMix64): weight
// initialisation and dropout masks depend only on the seeds given, on every
// platform and Go version.
type RNG struct {
	state    uint64
	hasSpare bool
	spare    float64
}

// NewRNG returns a generator seeded with seed.
func NewRNG(seed int64) *RNG { return &RNG{state: uint64(seed)} }

// Uint64 returns the next 64 random bits.
func (r *RNG) Uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Float64 returns a uniform value in [0, 1) with 53 random bits.
func (r *RNG) Float64() float64 { return float64(r.Uint64()>>11) / (1 << 53) }

// Uniform returns a uniform value in [lo, hi).
func (r *RNG) Uniform(lo, hi float64) float64 { return lo + (hi-lo)*r.Float64() }

// Normal returns a standard normal value (Box-Muller, both values used).
func (r *RNG) Normal() float64 {
	if r.hasSpare {
		r.hasSpare = false
		return r.spare
	}
	u1 := 1 - r.Float64() // (0, 1]
	u2 := r.Float64()
	rad := math.Sqrt(-2 * math.Log(u1))
	r.spare = rad * math.Sin(2*math.Pi*u2)
	r.hasSpare = true
	return rad * math.Cos(2*math.Pi*u2)
}

// mixSeeds derives one seed from several (for per-step, per-layer streams).
func mixSeeds(seeds ...int64) int64 {
	r := RNG{state: 0x243f6a8885a308d3}
	for _, s := range seeds {
		r.state ^= uint64(s)
		r.Uint64()
	}
	return int64(r.Uint64())
}

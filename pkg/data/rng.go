package data

import "math/bits"

// Counter-based randomness. Every random decision in this package is drawn
// from a stream keyed by a few integers (seed, epoch, sample index, purpose),
// so it can be recomputed anywhere without shared state: there is no
// sequential generator whose position depends on who drew before.

// Stream purposes, mixed into keys so that different decisions made from the
// same (seed, epoch, index) are independent.
const (
	streamPermutation uint64 = 0x7065726d75746531 // "permute1"
	streamAugment     uint64 = 0x6175676d656e7431 // "augment1"
	streamSynthetic   uint64 = 0x73796e7468657431 // "synthet1"
)

// splitmix64 is the finaliser of Vigna's SplitMix64: a bijective mixer with
// full avalanche, used here both to derive keys and as the generator step.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Key derives a 64-bit stream key from an ordered list of words. Distinct
// lists give unrelated keys; the same list always gives the same key.
func Key(words ...uint64) uint64 {
	h := uint64(0x243f6a8885a308d3) // digits of pi: a fixed, arbitrary start
	for _, w := range words {
		h = splitmix64(h ^ w)
	}
	return h
}

// Rand is a small deterministic generator (SplitMix64) started from a key.
// The zero value is a valid generator for key 0. It is not safe for
// concurrent use; make one per goroutine from the same key to repeat a stream.
type Rand struct {
	state uint64
}

// NewRand returns the generator whose stream is fixed by key.
func NewRand(key uint64) *Rand { return &Rand{state: key} }

// Uint64 returns the next 64 random bits.
func (r *Rand) Uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	x := r.state
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Intn returns a uniform integer in [0, n) without modulo bias (Lemire's
// multiply-and-reject). n must be positive; n <= 0 returns 0.
func (r *Rand) Intn(n int) int {
	if n <= 0 {
		return 0
	}
	bound := uint64(n)
	for {
		hi, lo := bits.Mul64(r.Uint64(), bound)
		if lo >= bound || lo >= (-bound)%bound {
			return int(hi)
		}
	}
}

// Float32 returns a uniform float32 in [0, 1) with 24 random bits.
func (r *Rand) Float32() float32 {
	return float32(r.Uint64()>>40) / (1 << 24)
}

// permutation fills p with a uniformly random permutation of 0..len(p)-1 by
// Fisher-Yates driven by r.
func permutation(p []int, r *Rand) {
	for i := range p {
		p[i] = i
	}
	for i := len(p) - 1; i > 0; i-- {
		j := r.Intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
}

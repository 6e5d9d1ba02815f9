package data

import (
	"math"
	"testing"
)

func TestRandIntnUniform(t *testing.T) {
	r := NewRand(Key(1, 2, 3))
	const n, draws = 9, 90000
	var counts [n]int
	for range draws {
		v := r.Intn(n)
		if v < 0 || v >= n {
			t.Fatalf("Intn(%d) = %d", n, v)
		}
		counts[v]++
	}
	// Chi-square with 8 degrees of freedom; 26.1 is the 0.1% tail.
	var chi float64
	for _, c := range counts {
		d := float64(c) - draws/n
		chi += d * d / (draws / n)
	}
	if chi > 26.1 {
		t.Fatalf("Intn not uniform: counts %v, chi-square %.1f", counts, chi)
	}
}

func TestKeyAndRandDeterministic(t *testing.T) {
	if a, b := Key(1, 2, 3), Key(1, 2, 3); a != b {
		t.Fatal("Key is not deterministic")
	}
	if Key(1, 2, 3) == Key(1, 3, 2) || Key(1, 2) == Key(1, 2, 0) {
		t.Fatal("Key ignores order or length")
	}
	a, b := NewRand(7), NewRand(7)
	for range 100 {
		if a.Uint64() != b.Uint64() {
			t.Fatal("same key, different streams")
		}
	}
	var sum float64
	r := NewRand(8)
	for range 10000 {
		f := r.Float32()
		if f < 0 || f >= 1 {
			t.Fatalf("Float32 = %v", f)
		}
		sum += float64(f)
	}
	if m := sum / 10000; math.Abs(m-0.5) > 0.02 {
		t.Fatalf("Float32 mean %v", m)
	}
}

package data

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestSyntheticDeterministicBalancedInRange(t *testing.T) {
	a, _ := NewSynthetic(200, 3)
	b, _ := NewSynthetic(200, 3)
	c, _ := NewSynthetic(200, 4)
	x, y, z := make([]float32, 3072), make([]float32, 3072), make([]float32, 3072)
	counts := make([]int, 10)
	for i := range a.Len() {
		la, _ := a.Get(i, x)
		lb, _ := b.Get(i, y)
		lc, _ := c.Get(i, z)
		if la != lb || !slices.Equal(x, y) {
			t.Fatalf("image %d differs between two datasets with the same seed", i)
		}
		if la != lc || slices.Equal(x, z) {
			t.Fatalf("image %d: another seed should keep the label and change the picture", i)
		}
		for _, v := range x {
			if v < 0 || v > 1 || math.IsNaN(float64(v)) {
				t.Fatalf("image %d has value %v outside [0, 1]", i, v)
			}
		}
		counts[la]++
	}
	for k, n := range counts {
		if n != 20 {
			t.Fatalf("class %d has %d of 200 images", k, n)
		}
	}
	if _, err := a.Get(200, x); !errors.Is(err, ErrInvalid) {
		t.Fatalf("out of range: %v", err)
	}
	if _, err := NewSynthetic(0, 1); !errors.Is(err, ErrInvalid) {
		t.Fatal("empty synthetic set accepted")
	}
	tr, _ := SyntheticSplit(Train, 1)
	te, _ := SyntheticSplit(Test, 1)
	tr.Get(0, x)
	te.Get(0, y)
	if tr.Len() != 50000 || te.Len() != 10000 || slices.Equal(x, y) {
		t.Fatal("splits have the wrong size or share images")
	}
}

// TestSyntheticIsLearnable trains a linear softmax classifier on raw
// pixels: far above chance (10%) shows the images carry their labels (a
// CNN, which can also use the shapes, does much better).
func TestSyntheticIsLearnable(t *testing.T) {
	train, _ := NewSynthetic(2000, 1)
	test, _ := NewSynthetic(500, 2)
	load := func(ds *Synthetic, feat func([]float32) []float32) ([][]float32, []int) {
		xs, ys := make([][]float32, ds.Len()), make([]int, ds.Len())
		img := make([]float32, 3072)
		for i := range ds.Len() {
			ys[i], _ = ds.Get(i, img)
			xs[i] = feat(img)
		}
		return xs, ys
	}
	pixels := func(img []float32) []float32 { return slices.Clone(img) }
	trX, trY := load(train, pixels)
	teX, teY := load(test, pixels)
	acc := softmaxAccuracy(trX, trY, teX, teY, 8)
	t.Logf("linear classifier on pixels: %.1f%% test accuracy", 100*acc)
	if acc < 0.4 {
		t.Fatalf("linear classifier reaches only %.1f%%: the images barely carry their labels", 100*acc)
	}
}

// softmaxAccuracy trains multinomial logistic regression with SGD and
// returns its test accuracy.
func softmaxAccuracy(trX [][]float32, trY []int, teX [][]float32, teY []int, epochs int) float64 {
	d := len(trX[0])
	w := make([][]float64, 10)
	for k := range w {
		w[k] = make([]float64, d+1)
	}
	logits := make([]float64, 10)
	predict := func(x []float32) {
		for k := range w {
			s := w[k][d]
			for j, v := range x {
				s += w[k][j] * float64(v)
			}
			logits[k] = s
		}
	}
	lr := 0.01
	r := NewRand(1)
	order := make([]int, len(trX))
	for range epochs {
		permutation(order, r)
		for _, i := range order {
			predict(trX[i])
			m := slices.Max(logits)
			var z float64
			for k := range logits {
				logits[k] = math.Exp(logits[k] - m)
				z += logits[k]
			}
			for k := range w {
				g := logits[k] / z
				if k == trY[i] {
					g--
				}
				for j, v := range trX[i] {
					w[k][j] -= lr * g * float64(v)
				}
				w[k][d] -= lr * g
			}
		}
		lr *= 0.8
	}
	right := 0
	for i, x := range teX {
		predict(x)
		if slices.Index(logits, slices.Max(logits)) == teY[i] {
			right++
		}
	}
	return float64(right) / float64(len(teX))
}

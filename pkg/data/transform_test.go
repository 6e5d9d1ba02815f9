package data

import (
	"errors"
	"math"
	"sync"
	"testing"
)

// findParams searches sample indices for one whose random choices are the
// wanted ones, so tests can check the output for known choices.
func findParams(t *testing.T, tr Standard, seed uint64, epoch, top, left int, flip bool) int {
	t.Helper()
	for i := range 100000 {
		a, b, f := tr.Params(seed, epoch, i)
		if a == top && b == left && f == flip {
			return i
		}
	}
	t.Fatalf("no index gives top=%d left=%d flip=%v", top, left, flip)
	return -1
}

func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > tol {
			t.Fatalf("%s: value %d = %v, want %v\ngot  %v\nwant %v", what, i, got[i], want[i], got, want)
		}
	}
}

func TestStandardCropFlipNormaliseByHand(t *testing.T) {
	s := Shape{C: 2, H: 3, W: 3}
	src := make([]float32, s.Len())
	for k := range 9 {
		src[k] = float32(k+1) / 10 // channel 0: 0.1 .. 0.9 row-major
		src[9+k] = 1 - src[k]      // channel 1
	}
	tr := Standard{Pad: 1, Flip: true, Mean: []float32{0.5, 0.25}, Std: []float32{0.5, 0.25}}
	if err := tr.Validate(s); err != nil {
		t.Fatal(err)
	}
	// top=0, left=2 on the 5x5 padded image: output (y, x) reads
	// input (y-1, x+1), then the row is mirrored.
	i := findParams(t, tr, 11, 0, 0, 2, true)
	dst := make([]float32, s.Len())
	tr.Apply(dst, src, s, 11, 0, i)
	want := []float32{
		-1, -1, -1, // channel 0: (v-0.5)/0.5, padding -1
		-1, -0.4, -0.6,
		-1, 0.2, 0,
		-1, -1, -1, // channel 1: (v-0.25)/0.25, padding -1
		-1, 1.8, 2.2,
		-1, 0.6, 1.0,
	}
	closeTo(t, "crop+flip+normalise", dst, want, 1e-6)

	// top=2, left=0, no flip: output (y, x) reads input (y+1, x-1).
	i = findParams(t, tr, 11, 0, 2, 0, false)
	tr.Apply(dst, src, s, 11, 0, i)
	want = []float32{
		-1, -0.2, 0,
		-1, 0.4, 0.6,
		-1, -1, -1,
		-1, 1.4, 1.0,
		-1, 0.2, -0.2,
		-1, -1, -1,
	}
	closeTo(t, "crop+normalise", dst, want, 1e-6)

	// The centre crop without flip or normalisation is the identity.
	plain := Standard{Pad: 1, Flip: true}
	i = findParams(t, plain, 3, 1, 1, 1, false)
	plain.Apply(dst, src, s, 3, 1, i)
	closeTo(t, "identity crop", dst, src, 0)
}

func TestEvalTransformMatchesTorchArithmetic(t *testing.T) {
	src := make([]float32, CIFARShape.Len())
	for k := range src {
		src[k] = byteToUnit[byte(k*31)]
	}
	dst := make([]float32, len(src))
	EvalTransform().Apply(dst, src, CIFARShape, 1, 2, 3)
	plane := CIFARShape.H * CIFARShape.W
	for k, v := range src {
		c := k / plane
		want := (v - CIFARMean[c]) / CIFARStd[c] // float32, as torch's sub_/div_
		if dst[k] != want {
			t.Fatalf("value %d: %v, want %v", k, dst[k], want)
		}
	}
}

func TestStandardRandomnessIsPureAndUniform(t *testing.T) {
	tr := TrainTransform()
	var tops, lefts [9]int
	flips := 0
	const n = 18000
	for i := range n {
		a, b, f := tr.Params(5, 2, i)
		tops[a]++
		lefts[b]++
		if f {
			flips++
		}
		if a2, b2, f2 := tr.Params(5, 2, i); a2 != a || b2 != b || f2 != f {
			t.Fatal("Params is not a pure function")
		}
	}
	for k := range 9 {
		if tops[k] < n/9*8/10 || lefts[k] < n/9*8/10 {
			t.Fatalf("offset %d rare: tops %v lefts %v", k, tops, lefts)
		}
	}
	if flips < n*45/100 || flips > n*55/100 {
		t.Fatalf("%d flips of %d", flips, n)
	}
	differ := 0
	for i := range 100 {
		a, b, f := tr.Params(5, 2, i)
		c, d, g := tr.Params(5, 3, i)
		if a != c || b != d || f != g {
			differ++
		}
	}
	if differ < 80 {
		t.Fatalf("only %d of 100 samples augmented differently in the next epoch", differ)
	}

	// The same sample transformed concurrently comes out identical.
	src := make([]float32, CIFARShape.Len())
	for k := range src {
		src[k] = float32(k%97) / 97
	}
	ref := make([]float32, len(src))
	tr.Apply(ref, src, CIFARShape, 5, 2, 77)
	var wg sync.WaitGroup
	errs := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			out := make([]float32, len(src))
			tr.Apply(out, src, CIFARShape, 5, 2, 77)
			for k := range out {
				if out[k] != ref[k] {
					errs <- k
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for k := range errs {
		t.Fatalf("concurrent Apply differs at value %d", k)
	}
}

func TestStandardValidate(t *testing.T) {
	for _, tr := range []Standard{
		{Pad: -1},
		{Mean: []float32{0.5}, Std: []float32{0.5}},
		{Mean: CIFARMean, Std: []float32{1, 0, 1}},
		{Mean: CIFARMean},
	} {
		if err := tr.Validate(CIFARShape); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", tr, err)
		}
	}
	if err := TrainTransform().Validate(CIFARShape); err != nil {
		t.Fatal(err)
	}
}

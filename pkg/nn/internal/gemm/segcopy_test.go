package gemm

import (
	"math/rand/v2"
	"testing"
)

// TestCopySegments checks every path against the definition, and that no
// element outside the segments changes (guards around and between them).
func TestCopySegments(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	defer func(k *kernel) { current.Store(k) }(active())
	for _, path := range Paths() {
		if err := SetPath(path); err != nil {
			t.Fatal(err)
		}
		for trial := 0; trial < 200; trial++ {
			stride := 1 + rng.IntN(70)
			var segs []Segment
			for pos := rng.IntN(3); pos < stride; {
				n := min(1+rng.IntN(MaxSegment), stride-pos)
				segs = append(segs, Segment{Pos: pos, N: n, Off: rng.IntN(50)})
				pos += n + rng.IntN(3)
			}
			rows := 1 + rng.IntN(9)
			src := randSlice(rng, 300)
			rowOff := make([]int, rows)
			for i := range rowOff {
				rowOff[i] = rng.IntN(300 - 50 - MaxSegment)
			}
			dst := randSlice(rng, rows*stride+5)
			want := append([]float32(nil), dst...)
			for r, o := range rowOff {
				for _, s := range segs {
					for i := 0; i < s.N; i++ {
						want[r*stride+s.Pos+i] = src[o+s.Off+i]
					}
				}
			}
			CopySegments(dst, stride, src, rowOff, segs)
			for i := range want {
				if dst[i] != want[i] {
					t.Fatalf("%s trial %d: dst[%d] = %v, want %v (stride %d, segs %v)", path, trial, i, dst[i], want[i], stride, segs)
				}
			}
		}
	}
}

func TestCopySegmentsBadArguments(t *testing.T) {
	src, dst := make([]float32, 10), make([]float32, 10)
	for _, tc := range []struct {
		arg  string
		segs []Segment
		offs []int
	}{
		{"segs", []Segment{{0, 33, 0}}, []int{0}},
		{"segs", []Segment{{0, 0, 0}}, []int{0}},
		{"src", []Segment{{0, 4, 0}}, []int{7}},
		{"src", []Segment{{0, 4, 0}}, []int{-1}},
		{"dst", []Segment{{8, 4, 0}}, []int{0}},
	} {
		func() {
			defer func() {
				ae, ok := recover().(*ArgError)
				if !ok || ae.Arg != tc.arg {
					t.Errorf("%v %v: want ArgError on %s, got %v", tc.segs, tc.offs, tc.arg, ae)
				}
			}()
			CopySegments(dst, 10, src, tc.offs, tc.segs)
		}()
	}
}

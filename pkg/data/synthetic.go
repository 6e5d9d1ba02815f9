package data

import (
	"fmt"
	"math"
)

// SyntheticClasses names the synthetic dataset's classes: the shape drawn.
var SyntheticClasses = []string{"disc", "square", "triangle", "plus", "ring", "hstripes", "vstripes", "cross", "checker", "diamond"}

// Synthetic is the "synthetic" dataset: 32x32 RGB images of one shape per
// class (see SyntheticClasses), drawn procedurally at a random position,
// size and slight rotation, in a colour that usually (70%) follows the
// class and otherwise is random, on a random darker background, with pixel
// noise. Colour alone explains at most about 73% of the labels, so a model
// must use the shapes to do better; a linear classifier on raw pixels
// already reaches about 55% (chance: 10%). Image i is a pure
// function of (seed, i) and its label is i mod 10, so the classes are
// balanced. It needs no storage and is safe for concurrent use.
type Synthetic struct {
	n    int
	seed uint64
}

var _ Dataset = (*Synthetic)(nil)

// NewSynthetic returns n synthetic images drawn with seed.
func NewSynthetic(n int, seed uint64) (*Synthetic, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: synthetic dataset of %d images", ErrInvalid, n)
	}
	return &Synthetic{n: n, seed: seed}, nil
}

// SyntheticSplit returns a synthetic split the size of CIFAR-10's (50,000
// training or 10,000 test images); the two splits never share an image
// stream.
func SyntheticSplit(split Split, seed uint64) (*Synthetic, error) {
	switch split {
	case Train:
		return NewSynthetic(50000, Key(seed, 1))
	case Test:
		return NewSynthetic(10000, Key(seed, 2))
	}
	return nil, fmt.Errorf("%w: unknown split %v", ErrInvalid, split)
}

// Len is the number of images.
func (s *Synthetic) Len() int { return s.n }

// Shape is 3x32x32.
func (s *Synthetic) Shape() Shape { return CIFARShape }

// Classes returns SyntheticClasses (a copy).
func (s *Synthetic) Classes() []string { return append([]string(nil), SyntheticClasses...) }

// Get draws image i into dst and returns its label.
func (s *Synthetic) Get(i int, dst []float32) (int, error) {
	if err := checkGet(i, s.n, dst, CIFARShape); err != nil {
		return 0, err
	}
	label := i % len(SyntheticClasses)
	r := NewRand(Key(s.seed, uint64(i), streamSynthetic))
	uniform := func(lo, hi float64) float64 { return lo + (hi-lo)*float64(r.Float32()) }

	hue := (float64(label) + uniform(-0.3, 0.3)) / float64(len(SyntheticClasses))
	if r.Float32() < 0.3 {
		hue = uniform(0, 1)
	}
	fg := hsv(hue, uniform(0.6, 1), uniform(0.7, 1))
	bg := [3]float32{float32(uniform(0, 0.45)), float32(uniform(0, 0.45)), float32(uniform(0, 0.45))}
	cx, cy := uniform(10.5, 20.5), uniform(10.5, 20.5)
	radius := uniform(6.5, 11)
	angle := uniform(-0.25, 0.25) // radians, about +-15 degrees
	cos, sin := math.Cos(angle), math.Sin(angle)
	const noise = 0.16

	const side = cifarSide
	for y := range side {
		for x := range side {
			dx, dy := (float64(x)+0.5-cx)/radius, (float64(y)+0.5-cy)/radius
			u, v := cos*dx+sin*dy, -sin*dx+cos*dy
			col := bg
			if inside(label, u, v) {
				col = fg
			}
			bits := r.Uint64() // 21 bits of noise per channel
			for c := range 3 {
				u := float32(bits>>(21*c)&(1<<21-1)) / (1 << 21)
				p := col[c] + noise*(u-0.5)
				dst[c*side*side+y*side+x] = min(max(p, 0), 1)
			}
		}
	}
	return label, nil
}

// inside reports whether the shape of class label covers the point (u, v)
// in shape coordinates (the shape fills roughly the unit disc).
func inside(label int, u, v float64) bool {
	au, av := math.Abs(u), math.Abs(v)
	switch label {
	case 0: // disc
		return u*u+v*v <= 1
	case 1: // square
		return au <= 0.8 && av <= 0.8
	case 2: // triangle, apex up
		return v >= -0.85 && v <= 0.75 && au <= (v+0.85)*0.6
	case 3: // plus
		return (au <= 0.3 && av <= 1) || (av <= 0.3 && au <= 1)
	case 4: // ring
		d := u*u + v*v
		return d <= 1 && d >= 0.36
	case 5: // horizontal stripes
		return au <= 0.9 && av <= 0.9 && int(math.Floor((v+0.9)*2.8))%2 == 0
	case 6: // vertical stripes
		return au <= 0.9 && av <= 0.9 && int(math.Floor((u+0.9)*2.8))%2 == 0
	case 7: // diagonal cross
		p, q := math.Abs(u+v)*math.Sqrt2/2, math.Abs(u-v)*math.Sqrt2/2
		return (p <= 0.22 && q <= 1) || (q <= 0.22 && p <= 1)
	case 8: // checkerboard
		return au <= 0.9 && av <= 0.9 && (int(math.Floor((u+0.9)*2.2))+int(math.Floor((v+0.9)*2.2)))%2 == 0
	default: // diamond
		return au+av <= 1
	}
}

// hsv converts a colour with h, s, v in [0, 1] to RGB.
func hsv(h, s, v float64) [3]float32 {
	h = (h - math.Floor(h)) * 6
	i := int(h)
	f := h - float64(i)
	p, q, t := v*(1-s), v*(1-s*f), v*(1-s*(1-f))
	var r, g, b float64
	switch i {
	case 0:
		r, g, b = v, t, p
	case 1:
		r, g, b = q, v, p
	case 2:
		r, g, b = p, v, t
	case 3:
		r, g, b = p, q, v
	case 4:
		r, g, b = t, p, v
	default:
		r, g, b = v, p, q
	}
	return [3]float32{float32(r), float32(g), float32(b)}
}

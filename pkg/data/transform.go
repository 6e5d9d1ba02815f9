package data

import "fmt"

// Transform turns a dataset image (float32 in [0, 1], C x H x W) into a
// model input of the same shape. Apply must be a pure function of its
// arguments: any randomness is drawn from (seed, epoch, index) alone, so a
// sample comes out the same whichever goroutine or worker transforms it.
// Implementations must be safe for concurrent use.
type Transform interface {
	// Apply writes the transformed src into dst (both s.Len() long, not
	// overlapping). index is the sample's dataset index.
	Apply(dst, src []float32, s Shape, seed uint64, epoch, index int)
}

// The tutorial's CIFAR-10 normalisation constants.
var (
	CIFARMean = []float32{0.4914, 0.4822, 0.4465}
	CIFARStd  = []float32{0.2023, 0.1994, 0.2010}
)

// Standard is the tutorial's transform family, applied in one pass:
//
//	RandomCrop(H x W, padding=Pad)  (zero padding; Pad 0 disables it)
//	RandomHorizontalFlip(p=0.5)     (if Flip)
//	Normalize(Mean, Std)            (if Mean is non-nil)
//
// The input is already scaled to [0, 1] (ToTensor), and padding is applied
// before normalisation, so padded pixels become (0-mean)/std exactly as in
// torchvision. The crop offsets are uniform in [0, 2*Pad] and the flip has
// probability 1/2; both are drawn from [Key](seed, epoch, index).
type Standard struct {
	Pad       int
	Flip      bool
	Mean, Std []float32 // one per channel, or nil for no normalisation
}

var _ Transform = Standard{}

// TrainTransform is the tutorial's training augmentation: random crop with
// 4-pixel zero padding, horizontal flip, CIFAR-10 normalisation.
func TrainTransform() Standard {
	return Standard{Pad: 4, Flip: true, Mean: CIFARMean, Std: CIFARStd}
}

// EvalTransform is the tutorial's evaluation transform: normalisation only.
func EvalTransform() Standard {
	return Standard{Mean: CIFARMean, Std: CIFARStd}
}

// Validate checks the transform against an image shape.
func (t Standard) Validate(s Shape) error {
	if t.Pad < 0 {
		return fmt.Errorf("%w: negative crop padding %d", ErrInvalid, t.Pad)
	}
	if t.Mean == nil && t.Std == nil {
		return nil
	}
	if len(t.Mean) != s.C || len(t.Std) != s.C {
		return fmt.Errorf("%w: normalisation has %d means and %d stds for %d channels", ErrInvalid, len(t.Mean), len(t.Std), s.C)
	}
	for c, v := range t.Std {
		if !(v > 0) {
			return fmt.Errorf("%w: std[%d] = %v must be positive", ErrInvalid, c, v)
		}
	}
	return nil
}

// Params returns the random choices for one sample: the crop's top and left
// offsets into the padded image, and whether to flip.
func (t Standard) Params(seed uint64, epoch, index int) (top, left int, flip bool) {
	r := NewRand(Key(seed, uint64(epoch), uint64(index), streamAugment))
	if t.Pad > 0 {
		top = r.Intn(2*t.Pad + 1)
		left = r.Intn(2*t.Pad + 1)
	}
	if t.Flip {
		flip = r.Float32() < 0.5
	}
	return top, left, flip
}

// Apply implements [Transform]. It panics if dst or src is shorter than
// s.Len() or the normalisation does not match s.C (see Validate): the
// loader validates both once, so a mismatch is a programming error.
func (t Standard) Apply(dst, src []float32, s Shape, seed uint64, epoch, index int) {
	top, left, flip := t.Params(seed, epoch, index)
	dy, dx := top-t.Pad, left-t.Pad // output (y, x) reads input (y+dy, x+dx) before the flip
	plane := s.H * s.W
	// Columns x in [x0, x1) of a cropped row read source column x+dx; the
	// others are padding. A flip then mirrors the row.
	x0, x1 := max(0, -dx), min(s.W, s.W-dx)
	for c := 0; c < s.C; c++ {
		mean, sd := float32(0), float32(1)
		norm := t.Mean != nil
		if norm {
			mean, sd = t.Mean[c], t.Std[c]
		}
		pad := float32(0)
		if norm {
			pad = (0 - mean) / sd
		}
		in := src[c*plane : (c+1)*plane]
		out := dst[c*plane : (c+1)*plane]
		for y := 0; y < s.H; y++ {
			row := out[y*s.W : (y+1)*s.W]
			sy := y + dy
			if sy < 0 || sy >= s.H || x0 >= x1 {
				for x := range row {
					row[x] = pad
				}
				continue
			}
			srow := in[sy*s.W+x0+dx : sy*s.W+x1+dx]
			lo, hi := x0, x1 // the columns of row that receive srow
			if flip {
				lo, hi = s.W-x1, s.W-x0
			}
			for x := 0; x < lo; x++ {
				row[x] = pad
			}
			for x := hi; x < s.W; x++ {
				row[x] = pad
			}
			seg := row[lo:hi]
			switch {
			case !flip && norm:
				for k, v := range srow {
					seg[k] = (v - mean) / sd
				}
			case !flip:
				copy(seg, srow)
			case norm:
				last := len(seg) - 1
				for k, v := range srow {
					seg[last-k] = (v - mean) / sd
				}
			default:
				last := len(seg) - 1
				for k, v := range srow {
					seg[last-k] = v
				}
			}
		}
	}
}

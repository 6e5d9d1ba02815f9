package explain

import "math"

// MeanBaseline is the "absent" image of the dataset's mean colour: zeros
// after the evaluation transform's normalisation.
func MeanBaseline(h, w int) []float32 { return make([]float32, 3*h*w) }

// BlurBaseline is img (3,h,w) blurred by a Gaussian of standard deviation
// sigma pixels (separable, edges clamped, weights summing to 1, so that it
// commutes with the per-channel normalisation).
func BlurBaseline(img []float32, h, w int, sigma float64) []float32 {
	if sigma <= 0 {
		return append([]float32(nil), img...)
	}
	rad := int(math.Ceil(3 * sigma))
	k := make([]float64, 2*rad+1)
	var s float64
	for i := range k {
		d := float64(i - rad)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		s += k[i]
	}
	for i := range k {
		k[i] /= s
	}
	out := make([]float32, len(img))
	tmp := make([]float64, h*w)
	for c := range 3 {
		in := img[c*h*w : (c+1)*h*w]
		for y := range h {
			for x := range w {
				var a float64
				for i, kv := range k {
					xx := min(max(x+i-rad, 0), w-1)
					a += kv * float64(in[y*w+xx])
				}
				tmp[y*w+x] = a
			}
		}
		o := out[c*h*w : (c+1)*h*w]
		for y := range h {
			for x := range w {
				var a float64
				for i, kv := range k {
					yy := min(max(y+i-rad, 0), h-1)
					a += kv * tmp[yy*w+x]
				}
				o[y*w+x] = float32(a)
			}
		}
	}
	return out
}

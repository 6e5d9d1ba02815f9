package explain

import (
	"fmt"
	"math"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// GradCAMOptions selects what to explain.
type GradCAMOptions struct {
	Layer string // a name of nn.Model.Layers(); "" = DefaultLayer
	Class int    // the explained class; < 0 = the predicted one
}

// GradCAM is one image's Grad-CAM.
type GradCAM struct {
	Layer     string    // the layer explained
	Class     int       // the class explained
	Predicted int       // the model's top-1 class
	Logits    []float32 // the image's logits
	P, Q      int       // the map's height and width (the layer's output)
	Weights   []float32 // alpha_k, one per channel of the layer (K)
	Map       []float32 // ReLU(sum_k alpha_k A_k), P x Q row-major
	H, W      int       // the input size
	Upsampled []float32 // Map upsampled to H x W (bilinear, align_corners=False)
}

// DefaultLayer is the last residual stage whose output map is at least
// 4x4 for an h x w input (with the imagenet stem on 32x32 images: layer2;
// with the cifar stem: layer4), or "layer1" when none is.
func DefaultLayer(m *nn.Model, h, w int) (string, error) {
	for _, name := range []string{"layer4", "layer3", "layer2", "layer1"} {
		s, err := m.LayerShape(name, []int{1, 3, h, w})
		if err != nil {
			return "", err
		}
		if s[2] >= 4 && s[3] >= 4 {
			return name, nil
		}
	}
	return "layer1", nil
}

// ComputeGradCAM runs one forward and one backward pass of m on img
// (3,h,w) and returns its Grad-CAM. Errors wrap ErrInput, nn.ErrUnknownLayer
// or the model's errors.
func ComputeGradCAM(m *nn.Model, img []float32, h, w int, o GradCAMOptions) (*GradCAM, error) {
	if err := checkImage(img, h, w); err != nil {
		return nil, err
	}
	layer := o.Layer
	if layer == "" {
		var err error
		if layer, err = DefaultLayer(m, h, w); err != nil {
			return nil, err
		}
	}
	s := begin(m)
	defer s.end()
	if err := m.SetTap(layer); err != nil {
		return nil, err
	}
	logits, classes, err := forward(m, img, 1, h, w)
	if err != nil {
		return nil, err
	}
	r := &GradCAM{Layer: layer, Class: o.Class, Predicted: argmax(logits), Logits: logits, H: h, W: w}
	if r.Class < 0 {
		r.Class = r.Predicted
	}
	if r.Class >= classes {
		return nil, fmt.Errorf("%w: class %d, the model has %d classes", ErrInput, r.Class, classes)
	}
	b := m.Backend()
	a := m.TapActivation()
	act := make([]float32, a.Numel())
	b.ToHost(act, a)
	onehot := make([]float32, classes)
	onehot[r.Class] = 1
	dl := b.New(1, classes)
	defer b.Free(dl)
	b.FromHost(dl, onehot)
	if err := m.Backward(dl); err != nil {
		return nil, err
	}
	g := m.TapGrad()
	if g == nil {
		return nil, fmt.Errorf("explain: no gradient reached layer %s", layer)
	}
	grad := make([]float32, g.Numel())
	b.ToHost(grad, g)
	if err := b.Sync(); err != nil {
		return nil, err
	}
	k, p, q := a.Dim(1), a.Dim(2), a.Dim(3)
	r.P, r.Q = p, q
	r.Weights, r.Map = camMap(act, grad, k, p*q)
	r.Upsampled = Bilinear(r.Map, p, q, h, w)
	return r, nil
}

// camMap computes alpha_k = mean(grad_k) and ReLU(sum_k alpha_k act_k) for
// K planes of n values, accumulating in float64.
func camMap(act, grad []float32, k, n int) (alpha, cam []float32) {
	alpha = make([]float32, k)
	acc := make([]float64, n)
	for c := 0; c < k; c++ {
		var s float64
		for _, v := range grad[c*n : (c+1)*n] {
			s += float64(v)
		}
		a := s / float64(n)
		alpha[c] = float32(a)
		for i, v := range act[c*n : (c+1)*n] {
			acc[i] += a * float64(v)
		}
	}
	cam = make([]float32, n)
	for i, v := range acc {
		cam[i] = float32(math.Max(v, 0))
	}
	return alpha, cam
}

// Bilinear resizes a p x q map to h x w as
// torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
func Bilinear(src []float32, p, q, h, w int) []float32 {
	ys, xs := linearTaps(p, h), linearTaps(q, w)
	out := make([]float32, h*w)
	for y, ty := range ys {
		for x, tx := range xs {
			r0 := src[ty.i0*q:]
			r1 := src[ty.i1*q:]
			top := (1-tx.l)*float64(r0[tx.i0]) + tx.l*float64(r0[tx.i1])
			bot := (1-tx.l)*float64(r1[tx.i0]) + tx.l*float64(r1[tx.i1])
			out[y*w+x] = float32((1-ty.l)*top + ty.l*bot)
		}
	}
	return out
}

type linTap struct {
	i0, i1 int
	l      float64
}

// linearTaps are the source indices and weight of each of out samples
// resized from in (half-pixel centres, clamped at the low edge).
func linearTaps(in, out int) []linTap {
	scale := float64(in) / float64(out)
	t := make([]linTap, out)
	for d := range t {
		src := scale*(float64(d)+0.5) - 0.5
		if src < 0 {
			src = 0
		}
		i0 := int(src)
		i1 := i0
		if i0 < in-1 {
			i1 = i0 + 1
		}
		t[d] = linTap{i0: i0, i1: i1, l: src - float64(i0)}
	}
	return t
}

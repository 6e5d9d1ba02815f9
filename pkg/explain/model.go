package explain

import (
	"errors"
	"fmt"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// ErrInput is wrapped by errors about an image or option that cannot be
// explained (wrong size, class out of range, ...).
var ErrInput = errors.New("explain: invalid input")

// session puts a model into the state explaining needs (evaluation mode,
// every parameter frozen) and restores it.
type session struct {
	m      *nn.Model
	train  bool
	frozen []bool
}

func begin(m *nn.Model) *session {
	s := &session{m: m, train: m.Training()}
	for _, p := range m.Params() {
		s.frozen = append(s.frozen, p.Frozen)
		p.Frozen = true
	}
	m.SetTrain(false)
	return s
}

func (s *session) end() {
	for i, p := range s.m.Params() {
		p.Frozen = s.frozen[i]
	}
	s.m.SetTrain(s.train)
	_ = s.m.SetTap("")
}

// checkImage validates one (3,h,w) image.
func checkImage(img []float32, h, w int) error {
	if h < 1 || w < 1 || len(img) != 3*h*w {
		return fmt.Errorf("%w: image of %d values for 3x%dx%d", ErrInput, len(img), h, w)
	}
	return nil
}

// forward runs the model on n images (n*3*h*w values, host) and returns
// the logits (n x classes, host).
func forward(m *nn.Model, imgs []float32, n, h, w int) ([]float32, int, error) {
	b := m.Backend()
	x := b.New(n, 3, h, w)
	defer b.Free(x)
	b.FromHost(x, imgs)
	y, err := m.Forward(x)
	if err != nil {
		return nil, 0, err
	}
	out := make([]float32, y.Numel())
	b.ToHost(out, y)
	if err := b.Sync(); err != nil {
		return nil, 0, err
	}
	return out, y.Dim(1), nil
}

// argmax returns the index of the largest value.
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

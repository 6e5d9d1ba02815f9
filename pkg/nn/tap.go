package nn

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownLayer is wrapped by SetTap and LayerShape errors for a layer
// name the model does not have.
var ErrUnknownLayer = errors.New("nn: unknown layer")

// A tap records one layer's output activation in Forward and the gradient
// that reaches that output in Backward: what Grad-CAM needs (the map A and
// dy_c/dA of a residual stage). Both are copies owned by the model.
type tap struct {
	name  string
	index int    // unit index in m.units; -1 when no tap is set
	act   actBuf // A: the unit's output of the last Forward
	grad  actBuf // dL/dA of the last Backward
	haveG bool   // grad holds the last Backward's gradient
}

// Layers lists the names SetTap and LayerShape accept, input to output:
// "stem" (the stem's last layer: the max-pool of the imagenet stem, the
// ReLU of the cifar stem), every residual block ("layer1.0", ...) and every
// stage ("layer1" ... "layer4", the output of the stage's last block).
func (m *Model) Layers() []string {
	names := []string{"stem"}
	stage := ""
	for _, u := range m.units {
		blk, ok := u.(*Block)
		if !ok {
			continue
		}
		s, _, _ := strings.Cut(blk.Name, ".")
		if stage != "" && s != stage {
			names = append(names, stage)
		}
		stage = s
		names = append(names, blk.Name)
	}
	if stage != "" {
		names = append(names, stage)
	}
	return names
}

// unitIndex maps a layer name (see Layers) to the index of the unit whose
// output it is.
func (m *Model) unitIndex(name string) (int, error) {
	first, last := -1, -1 // the first block and the last unit before the first block
	idx := -1
	for i, u := range m.units {
		blk, ok := u.(*Block)
		if !ok {
			continue
		}
		if first < 0 {
			first = i
		}
		if blk.Name == name || strings.HasPrefix(blk.Name, name+".") {
			idx = i // a stage resolves to its last block
		}
	}
	last = first - 1
	if name == "stem" && last >= 0 {
		return last, nil
	}
	if idx < 0 || strings.TrimSpace(name) == "" {
		return -1, fmt.Errorf("%w %q (this model has: %s)", ErrUnknownLayer, name, strings.Join(m.Layers(), ", "))
	}
	return idx, nil
}

// LayerShape is the output shape of the named layer for an input of shape
// in (N,3,H,W). Errors wrap ErrUnknownLayer or ErrShape.
func (m *Model) LayerShape(name string, in []int) ([]int, error) {
	idx, err := m.unitIndex(name)
	if err != nil {
		return nil, err
	}
	if len(in) != 4 || in[0] < 1 || in[1] != 3 || in[2] < 1 || in[3] < 1 {
		return nil, fmt.Errorf("%w: model input has shape %v, want (N,3,H,W)", ErrShape, in)
	}
	h := in
	for _, u := range m.units[:idx+1] {
		if h, err = u.OutShape(h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// SetTap makes Forward keep a copy of the named layer's output and Backward
// keep a copy of the gradient reaching it (see TapActivation, TapGrad);
// Backward then always propagates down to that layer, even when every
// parameter below the head is frozen. "" removes the tap. Errors wrap
// ErrUnknownLayer and list the names the model has.
func (m *Model) SetTap(name string) error {
	if name == "" {
		m.freeTap()
		return nil
	}
	idx, err := m.unitIndex(name)
	if err != nil {
		return err
	}
	if m.tap == nil || m.tap.index != idx {
		m.freeTap()
		m.tap = &tap{name: name, index: idx}
	}
	m.tap.name = name
	return nil
}

// TapActivation is the tapped layer's output of the last Forward (N,C,P,Q),
// or nil without a tap or a Forward. Owned by the model; valid until the
// next Forward.
func (m *Model) TapActivation() *Tensor {
	if m.tap == nil {
		return nil
	}
	return m.tap.act.view
}

// TapGrad is dL/dA for the tapped layer's output A from the last Backward
// (the shape of TapActivation), or nil without a tap or a Backward since
// the last Forward. Owned by the model; valid until the next Backward.
func (m *Model) TapGrad() *Tensor {
	if m.tap == nil || !m.tap.haveG {
		return nil
	}
	return m.tap.grad.view
}

// tapForward copies unit i's output when it is the tapped one.
func (m *Model) tapForward(i int, y *Tensor) {
	if m.tap == nil || m.tap.index != i {
		return
	}
	a := m.tap.act.get(m.e.b, y.Shape...)
	m.e.b.Copy(a, y)
	m.tap.haveG = false
}

// tapBackward copies the gradient reaching unit i's output when it is the
// tapped one (before the unit's Backward, which may overwrite it in place).
func (m *Model) tapBackward(i int, dy *Tensor) {
	if m.tap == nil || m.tap.index != i || dy == nil {
		return
	}
	g := m.tap.grad.get(m.e.b, dy.Shape...)
	m.e.b.Copy(g, dy)
	m.tap.haveG = true
}

// tapAbove reports whether unit i lies above the tapped unit, so that its
// input gradient is needed to reach the tap.
func (m *Model) tapAbove(i int) bool { return m.tap != nil && i > m.tap.index }

func (m *Model) freeTap() {
	if m.tap == nil {
		return
	}
	m.tap.act.free(m.e.b)
	m.tap.grad.free(m.e.b)
	m.tap = nil
}

package nn

import (
	"errors"
	"strings"
	"testing"
)

func TestTapNamesShapesAndGraph(t *testing.T) {
	m, err := NewResNet(NewCPU(1), ResNetConfig{Depth: 18, Stem: "imagenet", Width: 0.125, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	want := "stem layer1.0 layer1.1 layer1 layer2.0 layer2.1 layer2 layer3.0 layer3.1 layer3 layer4.0 layer4.1 layer4"
	if got := strings.Join(m.Layers(), " "); got != want {
		t.Fatalf("Layers() = %s\nwant %s", got, want)
	}
	for name, w := range map[string][]int{"stem": {2, 8, 8, 8}, "layer2": {2, 16, 4, 4}, "layer3.0": {2, 32, 2, 2}, "layer4": {2, 64, 1, 1}} {
		s, err := m.LayerShape(name, []int{2, 3, 32, 32})
		if err != nil || !SameShape(s, w) {
			t.Errorf("LayerShape(%s) = %v, %v; want %v", name, s, err, w)
		}
	}
	for _, bad := range []string{"", "layer5", "layer1.7", "fc"} {
		if err := m.SetTap(bad); bad != "" && !errors.Is(err, ErrUnknownLayer) {
			t.Errorf("SetTap(%q) = %v, want ErrUnknownLayer", bad, err)
		}
	}
	// With every parameter frozen, backward still reaches the tap, and
	// the tapped activation is the output of the stage.
	for _, p := range m.Params() {
		p.Frozen = true
	}
	m.SetTrain(false)
	if err := m.SetTap("layer3"); err != nil {
		t.Fatal(err)
	}
	x := NewTensor(1, 3, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(i%13)/6 - 1
	}
	y, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if a := m.TapActivation(); a == nil || !SameShape(a.Shape, []int{1, 32, 2, 2}) {
		t.Fatalf("TapActivation = %v", a)
	}
	if m.TapGrad() != nil {
		t.Fatal("TapGrad before Backward")
	}
	dl := NewTensor(y.Shape...)
	dl.Data[3] = 1
	if err := m.Backward(dl); err != nil {
		t.Fatal(err)
	}
	g := m.TapGrad()
	nonzero := 0
	for _, v := range g.Data {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero == 0 {
		t.Fatal("the gradient at layer3 is all zero")
	}
	ops, err := m.InferenceGraph()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for i, op := range ops {
		kinds[op.Kind]++
		for _, in := range op.Inputs {
			if in >= i || in < -1 {
				t.Fatalf("node %d (%s) reads node %d", i, op.Name, in)
			}
		}
	}
	if kinds["Conv"] != 20 || kinds["BatchNorm"] != 20 || kinds["Add"] != 8 || kinds["ReLU"] != 17 || kinds["Linear"] != 1 || kinds["MaxPool"] != 1 {
		t.Fatalf("graph kinds %v", kinds)
	}
	if last := ops[len(ops)-1]; last.Kind != "Linear" || last.Name != "fc" {
		t.Fatalf("last node %s %s", last.Kind, last.Name)
	}
}

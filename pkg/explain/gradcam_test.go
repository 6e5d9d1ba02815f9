package explain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/explain"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// TestGradCAMMatchesTorch computes Grad-CAM with the engine and with
// PyTorch (torchvision's ResNet-18, the same weights and image, evaluation
// mode) for both stems and several layers, and wants the map and its
// upsampling within 1e-4 relative error (max |ours - torch| / max |torch|).
func TestGradCAMMatchesTorch(t *testing.T) {
	py := torchPython(t)
	const tol = 1e-4
	cases := []struct {
		stem  string
		h, w  int
		layer string // "" = the default
		class int
		want  string // the default layer it must resolve to
	}{
		{"cifar", 32, 32, "", -1, "layer4"},
		{"cifar", 32, 32, "layer3", -1, ""},
		{"imagenet", 32, 32, "", -1, "layer2"},
		{"imagenet", 48, 40, "layer2.0", 7, ""},
		{"imagenet", 32, 32, "stem", 1, ""},
	}
	type refCase struct {
		Weights string `json:"weights"`
		Image   string `json:"image"`
		Depth   int    `json:"depth"`
		Stem    string `json:"stem"`
		Classes int    `json:"classes"`
		H       int    `json:"h"`
		W       int    `json:"w"`
		Layer   string `json:"layer"`
		Class   int    `json:"cls"`
	}
	dir := t.TempDir()
	var refs []refCase
	var ours []*explain.GradCAM
	for ci, c := range cases {
		m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: 18, Stem: c.stem, Classes: 10, Seed: int64(ci + 1)})
		if err != nil {
			t.Fatal(err)
		}
		randomise(t, m, int64(100+ci))
		weights := filepath.Join(dir, fmt.Sprintf("w%d.safetensors", ci))
		if err := nn.SaveWeights(weights, m.Backend(), m.Params(), m.Buffers(), nil); err != nil {
			t.Fatal(err)
		}
		img := randomImage(int64(200+ci), c.h, c.w)
		imgPath := filepath.Join(dir, fmt.Sprintf("x%d.f32", ci))
		writeRaw(t, imgPath, img)
		got, err := explain.ComputeGradCAM(m, img, c.h, c.w, explain.GradCAMOptions{Layer: c.layer, Class: c.class})
		m.Free()
		if err != nil {
			t.Fatal(err)
		}
		if c.want != "" && got.Layer != c.want {
			t.Errorf("case %d: default layer %q, want %q", ci, got.Layer, c.want)
		}
		ours = append(ours, got)
		refs = append(refs, refCase{weights, imgPath, 18, c.stem, 10, c.h, c.w, got.Layer, c.class})
	}
	spec, _ := json.Marshal(refs)
	specPath, out := filepath.Join(dir, "cases.json"), filepath.Join(dir, "ref.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(py, "testdata/torch_ref.py", "gradcam", specPath, out).CombinedOutput(); err != nil {
		t.Fatalf("torch reference: %v\n%s", err, b)
	}
	var res []struct {
		Class     int
		Logits    []float64
		Weights   []float64
		Shape     []int
		Map       []float64
		Upsampled []float64
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res) != len(cases) {
		t.Fatalf("torch reference: %d results, %v", len(res), err)
	}
	worst := 0.0
	for ci, ref := range res {
		got := ours[ci]
		name := fmt.Sprintf("case %d (%s stem, %dx%d, %s)", ci, cases[ci].stem, got.H, got.W, got.Layer)
		if got.Class != ref.Class || got.P != ref.Shape[0] || got.Q != ref.Shape[1] {
			t.Errorf("%s: class %d map %dx%d, torch: class %d map %v", name, got.Class, got.P, got.Q, ref.Class, ref.Shape)
			continue
		}
		var peak float64
		for _, v := range ref.Map {
			peak = max(peak, v)
		}
		if peak == 0 {
			t.Errorf("%s: torch's map is all zero: the case explains nothing, pick another image or class", name)
		}
		for _, chk := range []struct {
			what string
			got  []float32
			want []float64
		}{
			{"logits", got.Logits, ref.Logits},
			{"alpha", got.Weights, ref.Weights},
			{"map", got.Map, ref.Map},
			{"upsampled map", got.Upsampled, ref.Upsampled},
		} {
			e := relErr(chk.got, chk.want)
			worst = max(worst, e)
			if e > tol {
				t.Errorf("%s: %s: relative error %.3g > %g", name, chk.what, e, tol)
			}
		}
		t.Logf("%s %dx%d, class %d: map relative error %.3g", name, got.P, got.Q, got.Class, relErr(got.Map, ref.Map))
	}
	t.Logf("Grad-CAM vs torch: worst relative error %.3g (tolerance %g)", worst, tol)
}

func TestGradCAMUnknownLayer(t *testing.T) {
	m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Width: 0.125})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	_, err = explain.ComputeGradCAM(m, randomImage(1, 16, 16), 16, 16, explain.GradCAMOptions{Layer: "layer5", Class: -1})
	if !errors.Is(err, nn.ErrUnknownLayer) {
		t.Fatalf("layer5: got %v, want ErrUnknownLayer", err)
	}
	t.Logf("message: %v", err)
	_, err = explain.ComputeGradCAM(m, randomImage(1, 16, 16), 16, 16, explain.GradCAMOptions{Class: 10})
	if !errors.Is(err, explain.ErrInput) {
		t.Fatalf("class 10 of 10: got %v, want ErrInput", err)
	}
}

// TestGradCAMLeavesModel checks that explaining restores the model's mode
// and frozen flags and leaves its gradients alone.
func TestGradCAMLeavesModel(t *testing.T) {
	m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: 18, Stem: "cifar", Classes: 10, Width: 0.125})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.FreezeBackbone()
	if _, err := explain.ComputeGradCAM(m, randomImage(2, 16, 16), 16, 16, explain.GradCAMOptions{Class: -1}); err != nil {
		t.Fatal(err)
	}
	if !m.Training() {
		t.Error("model left in evaluation mode")
	}
	for _, p := range m.Params() {
		if want := p.Name != "fc.weight" && p.Name != "fc.bias"; p.Frozen != want {
			t.Errorf("%s: Frozen %v, want %v", p.Name, p.Frozen, want)
		}
	}
	for i, g := range m.GradsFlat().Data {
		if g != 0 {
			t.Fatalf("gradient %d is %g, want untouched 0", i, g)
		}
	}
}

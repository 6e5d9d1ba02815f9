package explain_test

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/explain"
)

// TestFiguresArePNGs renders both figures for a tiny model and decodes
// them; RINGTRAIN_EXPLAIN_PNG_DIR keeps them for a look.
func TestFiguresArePNGs(t *testing.T) {
	m := tinyModel(t, 21)
	defer m.Free()
	const h, w = 16, 16
	img := randomImage(22, h, w)
	rgb := make([]float32, len(img))
	for i, v := range img {
		rgb[i] = min(max(0.5+0.2*v, 0), 1)
	}
	g, err := explain.ComputeGradCAM(m, img, h, w, explain.GradCAMOptions{Layer: "layer2", Class: -1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := explain.EstimateShapley(m, img, h, w, explain.ShapleyOptions{Grid: 4, Samples: 4, Class: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("RINGTRAIN_EXPLAIN_PNG_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	f := explain.Figure{RGB: rgb, H: h, W: w, Title: "noise"}
	paths := []string{filepath.Join(dir, "gradcam.png"), filepath.Join(dir, "shapley.png")}
	if err := explain.WriteGradCAMPNG(paths[0], f, g, "c0"); err != nil {
		t.Fatal(err)
	}
	if err := explain.WriteShapleyPNG(paths[1], f, s, "c0"); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		im, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if b := im.Bounds(); b.Dx() < 400 || b.Dy() < 200 {
			t.Errorf("%s: %v, want a figure at least 400x200", p, b)
		}
	}
	bad := explain.Figure{RGB: rgb[:10], H: h, W: w}
	if err := explain.WriteGradCAMPNG(filepath.Join(dir, "x.png"), bad, g, "c0"); err == nil {
		t.Error("a figure image of the wrong size was accepted")
	}
}

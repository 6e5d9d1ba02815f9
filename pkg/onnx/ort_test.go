package onnx_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/onnx"
)

// ortModules finds node_modules holding onnxruntime-node (make test-export
// installs it), or skips.
func ortModules(t *testing.T) string {
	t.Helper()
	d := os.Getenv("RINGTRAIN_ORT_NODE_MODULES")
	if d == "" {
		t.Skip("onnxruntime check skipped: run `make test-export` (installs npm's onnxruntime-node into bin/ort and sets RINGTRAIN_ORT_NODE_MODULES)")
	}
	if _, err := os.Stat(filepath.Join(d, "onnxruntime-node", "package.json")); err != nil {
		t.Fatalf("RINGTRAIN_ORT_NODE_MODULES=%s holds no onnxruntime-node: %v", d, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("RINGTRAIN_ORT_NODE_MODULES is set but node is not installed")
	}
	abs, _ := filepath.Abs(d)
	return abs
}

// testImages returns n CIFAR-10 test images after the evaluation
// transform: from the archive named by RINGTRAIN_CIFAR_ARCHIVE or
// ../shared/data beside the repository, else synthetic test images.
func testImages(t *testing.T, n int) ([]float32, string) {
	t.Helper()
	var ds data.Dataset
	what := "synthetic test images"
	for _, p := range []string{os.Getenv("RINGTRAIN_CIFAR_ARCHIVE"), filepath.Join("..", "..", "..", "shared", "data", data.CIFAR10ArchiveName)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			continue
		}
		c, err := data.LoadCIFAR10Archive(p, data.Test)
		if err != nil {
			t.Fatal(err)
		}
		ds, what = c, "CIFAR-10 test images"
		break
	}
	if ds == nil {
		s, err := data.SyntheticSplit(data.Test, 1)
		if err != nil {
			t.Fatal(err)
		}
		ds = s
	}
	shape := ds.Shape()
	x := make([]float32, n*shape.Len())
	raw := make([]float32, shape.Len())
	for i := range n {
		if _, err := ds.Get(i, raw); err != nil {
			t.Fatal(err)
		}
		data.EvalTransform().Apply(x[i*shape.Len():(i+1)*shape.Len()], raw, shape, 0, 0, 0)
	}
	return x, what
}

func writeF32(t *testing.T, path string, v []float32) {
	t.Helper()
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// randomiseBN gives batch norm non-trivial statistics and affine
// parameters, so that folding and evaluation-mode BN are exercised.
func randomiseBN(m *nn.Model, seed int64) {
	r := nn.NewRNG(seed)
	for _, p := range m.Params() {
		if len(p.Value.Shape) == 1 && p.Name != "fc.bias" {
			for i := range p.Value.Data {
				if filepath.Ext(p.Name) == ".weight" {
					p.Value.Data[i] = float32(r.Uniform(0.5, 1.5))
				} else {
					p.Value.Data[i] = float32(r.Uniform(-0.2, 0.2))
				}
			}
		}
	}
	for _, b := range m.Buffers() {
		if b.Value == nil {
			continue
		}
		for i := range b.Value.Data {
			if filepath.Ext(b.Name) == ".running_var" {
				b.Value.Data[i] = float32(r.Uniform(0.5, 2))
			} else {
				b.Value.Data[i] = float32(r.Uniform(-0.2, 0.2))
			}
		}
	}
}

// TestONNXRuntimeMatchesEngine exports full-width ResNet-18/34/50 with both
// stems, BN kept and folded, runs them in onnxruntime (npm's
// onnxruntime-node) on a batch of test images and wants the logits within
// 1e-4 relative error (max |ort - ours| / max |ours|) of the engine's
// evaluation-mode forward pass.
func TestONNXRuntimeMatchesEngine(t *testing.T) {
	modules := ortModules(t)
	const n, tol = 16, 1e-4
	x, what := testImages(t, n)
	dir := t.TempDir()
	in := filepath.Join(dir, "x.f32")
	writeF32(t, in, x)
	worst := 0.0
	for _, c := range []struct {
		depth int
		stem  string
	}{{18, "imagenet"}, {18, "cifar"}, {34, "cifar"}, {50, "imagenet"}, {50, "cifar"}} {
		m, err := nn.NewResNet(nn.NewCPU(0), nn.ResNetConfig{Depth: c.depth, Stem: c.stem, Classes: 10, Seed: int64(c.depth)})
		if err != nil {
			t.Fatal(err)
		}
		randomiseBN(m, int64(c.depth)+7)
		m.SetTrain(false)
		xt, _ := nn.FromSlice(x, n, 3, 32, 32)
		y, err := m.Forward(xt)
		if err != nil {
			t.Fatal(err)
		}
		ours := append([]float32(nil), y.Data...)
		for _, fold := range []bool{false, true} {
			name := fmt.Sprintf("resnet%d-%s-fold%v", c.depth, c.stem, fold)
			path := filepath.Join(dir, name+".onnx")
			if err := onnx.WriteFile(path, m, onnx.Options{FoldBN: fold}); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, name+".f32")
			cmd := exec.Command("node", "testdata/ort_run.js", path, in, fmt.Sprint(n), "32", "32", out)
			cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: onnxruntime: %v\n%s", name, err, b)
			}
			got := readF32(t, out)
			if len(got) != len(ours) {
				t.Fatalf("%s: %d logits from onnxruntime, want %d", name, len(got), len(ours))
			}
			var d, s float64
			for i := range ours {
				d = math.Max(d, math.Abs(float64(got[i]-ours[i])))
				s = math.Max(s, math.Abs(float64(ours[i])))
			}
			rel := d / s
			worst = math.Max(worst, rel)
			t.Logf("%s: max |ort - ours| %.3g, max |ours| %.3g, relative %.3g (%s)", name, d, s, rel, string(b[:len(b)-1]))
			if rel > tol || math.IsNaN(rel) {
				t.Errorf("%s: relative error %.3g > %g", name, rel, tol)
			}
		}
		m.Free()
	}
	t.Logf("onnxruntime vs engine on %d %s: worst relative error %.3g (tolerance %g)", n, what, worst, tol)
}

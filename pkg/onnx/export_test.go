package onnx_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/onnx"
	pb "github.com/ringtrain/ringtrain/proto/onnxpb"
)

func newModel(t *testing.T, depth int, stem string, width float64) *nn.Model {
	t.Helper()
	m, err := nn.NewResNet(nn.NewCPU(1), nn.ResNetConfig{Depth: depth, Stem: stem, Width: width, Classes: 10, Seed: int64(depth)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestExportStructure checks the graph of every exported variant: node
// counts by operator, the torchvision names of the initializers, the input
// and output, and that the bytes parse back.
func TestExportStructure(t *testing.T) {
	for _, c := range []struct {
		depth            int
		stem             string
		convs, bns, adds int
	}{
		{18, "imagenet", 20, 20, 8},
		{18, "cifar", 20, 20, 8},
		{34, "cifar", 36, 36, 16},
		{50, "imagenet", 53, 53, 16},
	} {
		for _, fold := range []bool{false, true} {
			t.Run(fmt.Sprintf("resnet%d/%s/fold=%v", c.depth, c.stem, fold), func(t *testing.T) {
				m := newModel(t, c.depth, c.stem, 0.25)
				defer m.Free()
				path := filepath.Join(t.TempDir(), "m.onnx")
				if err := onnx.WriteFile(path, m, onnx.Options{FoldBN: fold}); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var mp pb.ModelProto
				if err := proto.Unmarshal(b, &mp); err != nil {
					t.Fatal(err)
				}
				count := map[string]int{}
				for _, n := range mp.GetGraph().GetNode() {
					count[n.GetOpType()]++
				}
				wantBN := c.bns
				if fold {
					wantBN = 0
				}
				perBlock := 2 // ReLUs: after bn1 and after the add
				if c.depth >= 50 {
					perBlock = 3
				}
				pools := 0
				if c.stem == "imagenet" {
					pools = 1
				}
				if count["Conv"] != c.convs || count["BatchNormalization"] != wantBN || count["Add"] != c.adds ||
					count["MaxPool"] != pools || count["Gemm"] != 1 || count["GlobalAveragePool"] != 1 || count["Flatten"] != 1 ||
					count["Relu"] != 1+c.adds*perBlock {
					t.Errorf("node counts %v", count)
				}
				names := map[string]bool{}
				for _, in := range mp.GetGraph().GetInitializer() {
					names[in.GetName()] = true
				}
				for _, p := range m.Params() {
					if fold && len(p.Value.Shape) == 1 && p.Name != "fc.bias" {
						continue // BN affine parameters are folded away
					}
					if !names[p.Name] {
						t.Errorf("no initializer %s", p.Name)
					}
				}
				if fold && !names["layer1.0.conv1.bias"] {
					t.Errorf("folded conv has no bias initializer")
				}
				if !fold && !names["layer1.0.bn1.running_var"] {
					t.Errorf("no running_var initializer")
				}
				g := mp.GetGraph()
				if g.GetInput()[0].GetName() != "input" || g.GetOutput()[0].GetName() != "logits" ||
					g.GetNode()[len(g.GetNode())-1].GetOutput()[0] != "logits" {
					t.Errorf("input %q, output %q", g.GetInput()[0].GetName(), g.GetOutput()[0].GetName())
				}
				if mp.GetOpsetImport()[0].GetVersion() != onnx.Opset || mp.GetIrVersion() != onnx.IRVersion {
					t.Errorf("opset %d ir %d", mp.GetOpsetImport()[0].GetVersion(), mp.GetIrVersion())
				}
				again := filepath.Join(t.TempDir(), "again.onnx")
				if err := onnx.WriteFile(again, m, onnx.Options{FoldBN: fold}); err != nil {
					t.Fatal(err)
				}
				if b2, _ := os.ReadFile(again); string(b2) != string(b) {
					t.Errorf("two exports of the same model differ")
				}
			})
		}
	}
}

var (
	onnxOnce sync.Once
	onnxPy   string
)

// onnxPython returns a Python that imports onnx, or skips.
func onnxPython(t *testing.T) string {
	t.Helper()
	onnxOnce.Do(func() {
		for _, c := range []string{os.Getenv("PYTHON"), "python3", "/usr/bin/python3"} {
			if c != "" && exec.Command(c, "-c", "import onnx").Run() == nil {
				onnxPy = c
				return
			}
		}
	})
	if onnxPy == "" {
		t.Skip("onnx.checker skipped: no python3 with the onnx package (apt-get install python3-onnx, or set PYTHON)")
	}
	return onnxPy
}

// TestExportPassesONNXChecker validates exports with onnx.checker's full
// check (which includes shape inference) from Debian's python3-onnx.
func TestExportPassesONNXChecker(t *testing.T) {
	py := onnxPython(t)
	dir := t.TempDir()
	var paths []string
	for _, c := range []struct {
		depth int
		stem  string
		fold  bool
	}{{18, "imagenet", false}, {18, "cifar", true}, {50, "cifar", false}} {
		m := newModel(t, c.depth, c.stem, 0.25)
		p := filepath.Join(dir, fmt.Sprintf("r%d-%s-%v.onnx", c.depth, c.stem, c.fold))
		err := onnx.WriteFile(p, m, onnx.Options{FoldBN: c.fold})
		m.Free()
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	script := `import sys, onnx
for p in sys.argv[1:]:
    m = onnx.load(p)
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    print(p.rsplit("/", 1)[-1], "ok: opset", m.opset_import[0].version, "nodes", len(m.graph.node), "logits", [d.dim_param or d.dim_value for d in out])
`
	out, err := exec.Command(py, append([]string{"-c", script}, paths...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("onnx.checker: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// A broken file must fail the same check (the check can fail).
	bad := filepath.Join(dir, "bad.onnx")
	b, _ := os.ReadFile(paths[0])
	var mp pb.ModelProto
	if err := proto.Unmarshal(b, &mp); err != nil {
		t.Fatal(err)
	}
	mp.Graph.Node[1].Input[0] = "nowhere"
	b, _ = proto.Marshal(&mp)
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(py, "-c", script, bad).CombinedOutput(); err == nil {
		t.Fatalf("onnx.checker accepted a node reading an undefined value:\n%s", out)
	}
}

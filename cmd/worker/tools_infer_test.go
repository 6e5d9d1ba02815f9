package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// runWorker runs worker subcommands in-process and returns their output.
func runWorker(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "worker", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(summaryCmd(), evaluateCmd(), predictCmd(), explainCmd(), exportCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// tinyDir holds the weights tinyWeights trains once per test binary.
var (
	tinyMu   sync.Mutex
	tinyDir  string
	tinyPath string
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(procsChildMode); mode != "" {
		os.Exit(procsTestChild(mode))
	}
	code := m.Run()
	if tinyDir != "" {
		os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

// tinyWeights returns a small cifar-stem ResNet-18 (width 0.125) trained
// for a few dozen SGD steps on the synthetic shapes (a second or two, once
// per test binary), so that its predictions differ between images. The
// file is shared: tests must not change it.
func tinyWeights(t *testing.T) string {
	t.Helper()
	tinyMu.Lock()
	defer tinyMu.Unlock()
	if tinyPath != "" {
		return tinyPath
	}
	dir, err := os.MkdirTemp("", "worker-tiny-")
	if err != nil {
		t.Fatal(err)
	}
	tinyDir = dir
	const seed = 3
	b := nn.NewCPU(1)
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: 18, Stem: "cifar", Width: 0.125, Classes: 10, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	opt, err := nn.NewSGD(b, m.Params(), nn.SGDConfig{LR: 0.05, Momentum: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := data.NewSynthetic(1024, uint64(seed))
	if err != nil {
		t.Fatal(err)
	}
	const batch, steps = 32, 40
	shape := data.Shape{C: 3, H: 32, W: 32}
	x := nn.NewTensor(batch, 3, 32, 32)
	raw := make([]float32, shape.Len())
	labels := make([]int32, batch)
	var ce nn.CrossEntropy
	for step := range steps {
		for i := range batch {
			lab, err := ds.Get((step*batch+i)%ds.Len(), raw)
			if err != nil {
				t.Fatal(err)
			}
			labels[i] = int32(lab)
			data.EvalTransform().Apply(x.Data[i*shape.Len():(i+1)*shape.Len()], raw, shape, 0, 0, 0)
		}
		m.ZeroGrad()
		logits, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		_, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "tiny.safetensors")
	if err := nn.SaveWeights(path, b, m.Params(), m.Buffers(), nil); err != nil {
		t.Fatal(err)
	}
	tinyPath = path
	return path
}

// writePNG writes a (3,32,32) [0,1] image as an 8-bit PNG.
func writePNG(t *testing.T, path string, px []float32, h, w int) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			v := func(c int) uint8 { return uint8(px[c*h*w+y*w+x]*255 + 0.5) }
			img.Set(x, y, color.RGBA{v(0), v(1), v(2), 255})
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

// syntheticFolder writes perClass synthetic images of every class under
// root/<split>/<class>/ for the splits train and val.
func syntheticFolder(t *testing.T, root string, perClass int) {
	t.Helper()
	ds, err := data.NewSynthetic(40*perClass, 5)
	if err != nil {
		t.Fatal(err)
	}
	names := ds.Classes()
	for i, n := range names { // directory order = label order
		names[i] = fmt.Sprintf("%d-%s", i, n)
	}
	count := map[string]int{}
	buf := make([]float32, 3*32*32)
	for i := 0; i < ds.Len(); i++ {
		lab, err := ds.Get(i, buf)
		if err != nil {
			t.Fatal(err)
		}
		split := "val"
		if count["val/"+names[lab]] >= perClass {
			split = "train"
			if count["train/"+names[lab]] >= perClass {
				continue
			}
		}
		key := split + "/" + names[lab]
		writePNG(t, filepath.Join(root, split, names[lab], fmt.Sprintf("%03d.png", count[key])), buf, 32, 32)
		count[key]++
	}
	for _, n := range names {
		if count["val/"+n] != perClass {
			t.Fatalf("class %s: %d validation images, want %d", n, count["val/"+n], perClass)
		}
	}
}

// TestPredictAgreesWithEvaluate: on an image folder's validation split,
// the fraction of predict's top-1 classes that match the class directory
// is exactly the accuracy evaluate reports for the same weights.
func TestPredictAgreesWithEvaluate(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	root := filepath.Join(dir, "shapes")
	syntheticFolder(t, root, 6)
	common := []string{"--weights", weights, "--dataset", "folder", "--folder", root, "--device", "cpu", "--threads", "1"}

	ev, err := runWorker(t, append([]string{"evaluate", "--model", "resnet18", "--stem", "cifar", "--width", "0.125"}, common...)...)
	if err != nil {
		t.Fatalf("evaluate: %v\n%s", err, ev)
	}
	m := regexp.MustCompile(`evaluate: (\d+) samples, loss [0-9.]+, accuracy ([0-9.]+)%`).FindStringSubmatch(ev)
	if m == nil {
		t.Fatalf("evaluate printed no summary:\n%s", ev)
	}

	out, err := runWorker(t, append([]string{"predict", "--json", "--top", "1", filepath.Join(root, "val")}, common...)...)
	if err != nil {
		t.Fatalf("predict: %v\n%s", err, out)
	}
	var preds []prediction
	if err := json.Unmarshal([]byte(out), &preds); err != nil {
		t.Fatalf("predict --json: %v\n%s", err, out)
	}
	correct, seen := 0, map[string]bool{}
	for _, p := range preds {
		want := filepath.Base(filepath.Dir(p.File))
		seen[p.Top[0].Name] = true
		if p.Top[0].Name == want {
			correct++
		}
	}
	got := fmt.Sprintf("%d samples, accuracy %.2f%%", len(preds), 100*float64(correct)/float64(len(preds)))
	want := fmt.Sprintf("%s samples, accuracy %s%%", m[1], m[2])
	if got != want {
		t.Fatalf("predict: %s; evaluate: %s", got, want)
	}
	if len(seen) < 3 {
		t.Fatalf("predict chose only %d distinct classes: the comparison shows little; change the weights", len(seen))
	}
	t.Logf("predict and evaluate agree: %s (%d distinct top-1 classes)", got, len(seen))

	table, err := runWorker(t, append([]string{"predict", "--top", "3", filepath.Join(root, "val", "0-disc", "000.png")}, common...)...)
	if err != nil || !strings.Contains(table, "1. ") || !strings.Contains(table, "centre crop 32x32") {
		t.Fatalf("predict table: %v\n%s", err, table)
	}
}

// TestInferenceBadInputs: each bad input gets one clear error naming it.
func TestInferenceBadInputs(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	good := filepath.Join(dir, "good.png")
	px := make([]float32, 3*40*48)
	for i := range px {
		px[i] = float32(i%7) / 7
	}
	writePNG(t, good, px, 40, 48)
	broken := filepath.Join(dir, "broken.png")
	if err := os.WriteFile(broken, []byte("\x89PNG\r\n\x1a\nnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	notWeights := filepath.Join(dir, "notes.safetensors")
	if err := os.WriteFile(notWeights, []byte("these are not weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--device", "cpu", "--threads", "1"}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unreadable image", []string{"predict", "--weights", weights, broken}, []string{"cannot read image", broken}},
		{"missing image", []string{"predict", "--weights", weights, filepath.Join(dir, "nope.png")}, []string{"nope.png", "no such file"}},
		{"not a weights file", []string{"predict", "--weights", notWeights, good}, []string{"not a readable safetensors weights file", notWeights}},
		{"missing weights", []string{"predict", "--weights", filepath.Join(dir, "gone.safetensors"), good}, []string{"gone.safetensors"}},
		{"no weights", []string{"predict", good}, []string{"--weights is required"}},
		{"weights of another model", []string{"predict", "--weights", weights, "--model", "resnet34", good},
			[]string{"does not fit the model", "the file holds resnet18 (cifar stem, width 0.125, 10 classes)"}},
		{"wrong class names", []string{"predict", "--weights", weights, "--dataset", "synthetic", "--classes-file", weights, good}, []string{"classes"}},
		{"unknown layer", []string{"explain", "--weights", weights, "--method", "gradcam", "--layer", "layer9", "--out", filepath.Join(dir, "x"), good},
			[]string{`unknown layer "layer9"`, "layer4"}},
		{"unknown class", []string{"explain", "--weights", weights, "--class", "unicorn", "--out", filepath.Join(dir, "x"), good}, []string{"unicorn", "airplane"}},
		{"unknown method", []string{"explain", "--weights", weights, "--method", "lime", "--out", filepath.Join(dir, "x"), good}, []string{"--method", "gradcam, shapley or both"}},
	}
	for _, c := range cases {
		out, err := runWorker(t, append(c.args, base...)...)
		if err == nil {
			t.Errorf("%s: no error; output:\n%s", c.name, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
		if n := strings.Count(err.Error(), "\n"); n > 0 {
			t.Errorf("%s: error spans %d lines: %q", c.name, n+1, err)
		}
	}
	// A JPEG of any size is read too.
	jpg := filepath.Join(dir, "photo.jpg")
	jimg := image.NewRGBA(image.Rect(0, 0, 80, 50))
	for i := range jimg.Pix {
		jimg.Pix[i] = uint8(i * 7)
	}
	jf, err := os.Create(jpg)
	if err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(jf, jimg, nil); err != nil {
		t.Fatal(err)
	}
	jf.Close()
	if out, err := runWorker(t, append([]string{"predict", "--weights", weights, jpg}, base...)...); err != nil || !strings.Contains(out, "80x50 -> resized to 51x32 -> centre crop 32x32") {
		t.Errorf("jpeg: %v\n%s", err, out)
	}
	// The good image still works with the same weights (nothing was lost).
	if out, err := runWorker(t, append([]string{"predict", "--weights", weights, good}, base...)...); err != nil || !strings.Contains(out, "48x40 -> resized to 38x32 -> centre crop 32x32") {
		t.Errorf("good image: %v\n%s", err, out)
	}
}

// TestExplainWritesMapsAndChecksEfficiency runs explain --method both on
// two images and checks the files and the printed efficiency check.
func TestExplainWritesMapsAndChecksEfficiency(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	ds, err := data.NewSynthetic(2, 9)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 3*32*32)
	var imgs []string
	for i := range 2 {
		if _, err := ds.Get(i, buf); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "in", fmt.Sprintf("img%d.png", i))
		writePNG(t, p, buf, 32, 32)
		imgs = append(imgs, p)
	}
	outDir := filepath.Join(dir, "out")
	out, err := runWorker(t, append([]string{"explain", "--weights", weights, "--method", "both", "--samples", "16",
		"--baseline", "blur", "--out", outDir, "--device", "cpu", "--threads", "1"}, imgs...)...)
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	if n := strings.Count(out, "efficiency: sum of values"); n != 2 || strings.Count(out, ": holds (gap") != 2 {
		t.Errorf("want 2 efficiency checks that hold:\n%s", out)
	}
	if !strings.Contains(out, "grad-cam: layer layer4 (4x4 map)") {
		t.Errorf("default Grad-CAM layer of the cifar stem on 32x32 should be layer4 (4x4):\n%s", out)
	}
	for i := range 2 {
		for _, suffix := range []string{".gradcam.png", ".gradcam.json", ".shapley.png", ".shapley.json"} {
			p := filepath.Join(outDir, fmt.Sprintf("img%d%s", i, suffix))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(p, ".png") {
				if _, err := png.Decode(bytes.NewReader(b)); err != nil {
					t.Errorf("%s: %v", p, err)
				}
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal(b, &rec); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			if suffix == ".shapley.json" && (len(rec["values"].([]any)) != 16 || rec["efficiency_ok"] != true) {
				t.Errorf("%s: %d values, efficiency_ok %v", p, len(rec["values"].([]any)), rec["efficiency_ok"])
			}
			if suffix == ".gradcam.json" && len(rec["map"].([]any)) != 16 {
				t.Errorf("%s: map of %d values, want 4x4", p, len(rec["map"].([]any)))
			}
		}
	}
	t.Logf("%s", out)
}

// TestExportCommand exports the tiny model both ways and checks the
// summary lines and the file; bad flags give one clear error.
func TestExportCommand(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	for _, fold := range []bool{false, true} {
		out := filepath.Join(dir, fmt.Sprintf("m-%v.onnx", fold))
		args := []string{"export", "--weights", weights, "--out", out, "--device", "cpu"}
		if fold {
			args = append(args, "--fold-bn", "--input-size", "32")
		}
		msg, err := runWorker(t, args...)
		if err != nil {
			t.Fatalf("export: %v\n%s", err, msg)
		}
		want := "batch norm kept as BatchNormalization nodes"
		if fold {
			want = "batch norm folded into the convolutions"
		}
		for _, w := range []string{"ONNX opset 13 (IR version 7)", want, `output "logits" N x 10`, "resnet18 (cifar stem, width 0.125, 10 classes)"} {
			if !strings.Contains(msg, w) {
				t.Errorf("export output lacks %q:\n%s", w, msg)
			}
		}
		if st, err := os.Stat(out); err != nil || st.Size() < 100_000 {
			t.Errorf("%s: %v, %v", out, st, err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "tflite", "--out", filepath.Join(dir, "x")}, `--format "tflite": only onnx`},
		{[]string{}, "--out FILE.onnx is required"},
		{[]string{"--out", filepath.Join(dir, "x"), "--input-size", "-1"}, "--input-size -1"},
		{[]string{"--out", filepath.Join(dir, "no", "such", "dir", "m.onnx")}, "no such file or directory"},
	} {
		_, err := runWorker(t, append([]string{"export", "--weights", weights, "--device", "cpu"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("export %v: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

// TestTorchvisionWeightsPredict is the first step of the transfer-learning
// walkthrough: a torchvision ResNet-18 state_dict saved by PyTorch (.pth)
// is converted by scripts/tutorial/pth2safetensors.py, and predict (which
// reads the architecture from the file) gives torch's logits for the same
// image within 1e-4 relative error.
func TestTorchvisionWeightsPredict(t *testing.T) {
	py := torchPython(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "photo.png")
	px := make([]float32, 3*45*60)
	for i := range px {
		px[i] = float32((i*37)%101) / 100
	}
	writePNG(t, img, px, 45, 60)
	in, err := readInput(img, 32) // what predict feeds the model
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "x.f32")
	b := make([]byte, 4*len(in.x))
	for i, v := range in.x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pth, ref, st := filepath.Join(dir, "resnet18.pth"), filepath.Join(dir, "ref.json"), filepath.Join(dir, "resnet18.safetensors")
	if out, err := exec.Command(py, "testdata/torchvision_ref.py", pth, raw, "32", "32", ref).CombinedOutput(); err != nil {
		t.Fatalf("torch: %v\n%s", err, out)
	}
	if out, err := exec.Command(py, "../../scripts/tutorial/pth2safetensors.py", pth, st).CombinedOutput(); err != nil {
		t.Fatalf("pth2safetensors: %v\n%s", err, out)
	}
	out, err := runWorker(t, "predict", "--weights", st, "--json", "--top", "10", "--device", "cpu", img)
	if err != nil {
		t.Fatalf("predict: %v\n%s", err, out)
	}
	var preds []prediction
	if err := json.Unmarshal([]byte(out), &preds); err != nil || len(preds) != 1 {
		t.Fatalf("predict --json: %v\n%s", err, out)
	}
	var want struct{ Logits []float64 }
	rb, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &want); err != nil || len(want.Logits) != 10 {
		t.Fatalf("reference: %v", err)
	}
	var d, s float64
	for _, r := range preds[0].Top {
		d = math.Max(d, math.Abs(float64(r.Logit)-want.Logits[r.Class]))
		s = math.Max(s, math.Abs(want.Logits[r.Class]))
	}
	if len(preds[0].Top) != 10 || d/s > 1e-4 {
		t.Fatalf("predict's logits vs torchvision's: max difference %.3g of %.3g (relative %.3g > 1e-4)", d, s, d/s)
	}
	t.Logf("torchvision resnet18 .pth -> safetensors -> predict: logits within %.3g relative of torch's; top-1 %s", d/s, preds[0].Top[0].Name)
}

var (
	torchOnce sync.Once
	torchPy   string
)

// torchPython returns a Python that imports torch and torchvision, or
// skips the test with a message saying how to get one.
func torchPython(t *testing.T) string {
	t.Helper()
	torchOnce.Do(func() {
		for _, c := range []string{os.Getenv("PYTHON"), "python3", "/usr/bin/python3"} {
			if c != "" && exec.Command(c, "-c", "import torch, torchvision").Run() == nil {
				torchPy = c
				return
			}
		}
	})
	if torchPy == "" {
		t.Skip("PyTorch check skipped: no python3 with torch and torchvision (apt-get install python3-torch python3-torchvision, or set PYTHON)")
	}
	return torchPy
}

func TestOutputNames(t *testing.T) {
	got := outputNames([]string{"a/val/cat/0000.png", "a/val/dog/0000.png", "b/x.jpg", "c/x.png", "c/x.jpeg"})
	want := []string{"cat-0000", "dog-0000", "b-x", "c-x", "c-x-4"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestInferenceConfigKeepsFileArchitecture: a --config job file overrides
// the weights file's architecture only with the model keys it sets; one
// without a model section (or with some keys) no longer forces the job
// defaults (ResNet-18, imagenet stem, width 1) on a width-0.125 cifar-stem
// file, which failed with "the flags ask for" flags never given.
func TestInferenceConfigKeepsFileArchitecture(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	img := filepath.Join(dir, "img.png")
	writePNG(t, img, make([]float32, 3*32*32), 32, 32)
	config := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := []string{"--weights", weights, "--device", "cpu", "--threads", "1"}
	for _, text := range []string{"data: {dataset: synthetic}\n", "model: {arch: resnet18}\ndata: {dataset: synthetic}\n"} {
		cfg := config("job.yaml", text)
		out, err := runWorker(t, append([]string{"predict", "--config", cfg, "--top", "1", img}, base...)...)
		if err != nil || !strings.Contains(out, "resnet18 (cifar stem, width 0.125, 10 classes)") || !strings.Contains(out, "the synthetic dataset") {
			t.Fatalf("config %q: %v\n%s", text, err, out)
		}
	}
	cfg := config("wide.yaml", "model: {width: 0.25}\n")
	_, err := runWorker(t, append([]string{"predict", "--config", cfg, img}, base...)...)
	if err == nil || !strings.Contains(err.Error(), "--config "+cfg+" ask for resnet18 (cifar stem, width 0.25, 10 classes)") {
		t.Fatalf("config with another width: %v", err)
	}
	if out, err := runWorker(t, append([]string{"export", "--config", cfg, "--width", "0.125", "--out", filepath.Join(dir, "m.onnx")}, base...)...); err != nil {
		t.Fatalf("a flag over the config: %v\n%s", err, out)
	}
}

// TestPredictSkipsUnreadableImages: an unreadable image among others is
// reported on stderr and skipped; the others' results are still printed
// (a valid JSON array, in order) and the command fails at the end, naming
// it, with the bad-input exit status. Before, the first bad file discarded
// every result already computed.
func TestPredictSkipsUnreadableImages(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	px := make([]float32, 3*32*32)
	for i := range px {
		px[i] = float32(i%11) / 11
	}
	for _, name := range []string{"a.png", "c.png", "d.png"} {
		writePNG(t, filepath.Join(dir, "in", name), px, 32, 32)
	}
	broken := filepath.Join(dir, "in", "b.png")
	if err := os.WriteFile(broken, []byte("\x89PNG\r\n\x1a\ntruncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, asJSON := range []bool{true, false} {
		root := &cobra.Command{Use: "worker", SilenceUsage: true, SilenceErrors: true}
		root.AddCommand(predictCmd())
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		args := []string{"predict", "--weights", weights, "--device", "cpu", "--threads", "1", "--top", "1", filepath.Join(dir, "in")}
		if asJSON {
			args = append(args, "--json")
		}
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "1 of 4 images could not be read") || !strings.Contains(err.Error(), broken) || !worker.IsInputError(err) {
			t.Fatalf("json %v: error %v, want 1 of 4 unreadable, naming %s, an input error", asJSON, err, broken)
		}
		if !strings.Contains(errOut.String(), "predict: skipped: cannot read image "+broken) {
			t.Fatalf("json %v: stderr does not report the skipped file:\n%s", asJSON, errOut.String())
		}
		if !asJSON {
			for _, name := range []string{"a.png", "c.png", "d.png"} {
				if !strings.Contains(out.String(), filepath.Join(dir, "in", name)+"  (32x32)") {
					t.Fatalf("table lacks %s:\n%s", name, out.String())
				}
			}
			continue
		}
		var preds []prediction
		if err := json.Unmarshal(out.Bytes(), &preds); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, out.String())
		}
		var got []string
		for _, p := range preds {
			got = append(got, filepath.Base(p.File))
		}
		if !slices.Equal(got, []string{"a.png", "c.png", "d.png"}) || len(preds[0].Top) != 1 {
			t.Fatalf("records for %v, want a.png c.png d.png with one class each", got)
		}
	}
}

// TestExplainRefusesImpossibleShapleyFlags: --samples 0, --grid 0 and a
// negative --blur-sigma were silently replaced by the defaults (64
// permutations, a 4x4 grid, half a patch); now they, and a grid finer than
// the input, are refused before any image is read or file written.
func TestExplainRefusesImpossibleShapleyFlags(t *testing.T) {
	dir := t.TempDir()
	weights := tinyWeights(t)
	img := filepath.Join(dir, "img.png")
	writePNG(t, img, make([]float32, 3*32*32), 32, 32)
	cases := []struct {
		flags []string
		want  string
	}{
		{[]string{"--samples", "0"}, "--samples 0: want at least 2"},
		{[]string{"--grid", "0"}, "--grid 0: want at least 1"},
		{[]string{"--baseline", "blur", "--blur-sigma", "-1"}, "--blur-sigma -1"},
		{[]string{"--grid", "33"}, "--grid 33: the 32x32 input"},
	}
	for _, c := range cases {
		out := filepath.Join(dir, "out")
		args := append([]string{"explain", "--weights", weights, "--device", "cpu", "--threads", "1", "--method", "shapley", "--out", out, img}, c.flags...)
		_, err := runWorker(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.flags, err, c.want)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("%v: %s was written", c.flags, out)
			os.RemoveAll(out)
		}
	}
}

// summary refuses a width it would otherwise read as the default (0) or
// the model cannot have.
func TestSummaryRefusesBadWidth(t *testing.T) {
	for _, w := range []string{"0", "-1", "9", "NaN"} {
		if _, err := runWorker(t, "summary", "--width", w); err == nil || !strings.Contains(err.Error(), "--width") {
			t.Errorf("--width %s: %v", w, err)
		}
	}
	if out, err := runWorker(t, "summary", "--width", "0.5"); err != nil || !strings.Contains(out, "Total params") {
		t.Errorf("--width 0.5: %v\n%s", err, out)
	}
}

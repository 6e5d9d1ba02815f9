package nn

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func smallModel(t *testing.T, classes int, seed int64) *Model {
	t.Helper()
	m, err := NewResNet(NewCPU(2), ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: classes, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// assertSameWeights compares every parameter and buffer of a and b bit for bit.
func assertSameWeights(t *testing.T, a, b *Model, skip func(name string) bool) {
	t.Helper()
	for i, p := range a.Params() {
		q := b.Params()[i]
		if skip != nil && skip(p.Name) {
			continue
		}
		for j, v := range p.Value.Data {
			if math.Float32bits(v) != math.Float32bits(q.Value.Data[j]) {
				t.Fatalf("%s[%d]: %v vs %v", p.Name, j, v, q.Value.Data[j])
			}
		}
	}
	for i, buf := range a.Buffers() {
		other := b.Buffers()[i]
		if buf.Count != nil {
			if *buf.Count != *other.Count {
				t.Fatalf("%s: %d vs %d", buf.Name, *buf.Count, *other.Count)
			}
			continue
		}
		for j, v := range buf.Value.Data {
			if math.Float32bits(v) != math.Float32bits(other.Value.Data[j]) {
				t.Fatalf("%s[%d]: %v vs %v", buf.Name, j, v, other.Value.Data[j])
			}
		}
	}
}

func TestSaveLoadWeightsRoundTrip(t *testing.T) {
	src := smallModel(t, 10, 1)
	// Give the buffers non-default values, as after training.
	for i, buf := range src.Buffers() {
		if buf.Count != nil {
			*buf.Count = int64(100 + i)
		} else {
			for j := range buf.Value.Data {
				buf.Value.Data[j] = float32(i) + float32(j)/7
			}
		}
	}
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := SaveWeights(path, src.Backend(), src.Params(), src.Buffers(), map[string]string{"arch": "resnet18"}); err != nil {
		t.Fatal(err)
	}
	dst := smallModel(t, 10, 2)
	meta, err := LoadWeights(path, dst.Backend(), dst.Params(), dst.Buffers(), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if meta["arch"] != "resnet18" || meta["format"] != "pt" {
		t.Fatalf("metadata %v", meta)
	}
	assertSameWeights(t, src, dst, nil)
	// The file uses torchvision's names and dtypes.
	s, err := ReadSafetensorsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "fc.bias"} {
		if _, err := s.Get(name); err != nil {
			t.Fatalf("file lacks %s: %v", name, err)
		}
	}
	nbt, err := s.Get("bn1.num_batches_tracked")
	if err != nil || nbt.DType != I64 || len(nbt.Shape) != 0 {
		t.Fatalf("bn1.num_batches_tracked: %v %+v", err, nbt)
	}
}

// rewrite copies the tensors of a weights file into a new file, renaming
// (rename returns "" to drop a tensor) and optionally replacing tensors.
func rewrite(t *testing.T, from, to string, rename func(string) string, replace map[string]*STTensor) {
	t.Helper()
	s, err := ReadSafetensorsFile(from)
	if err != nil {
		t.Fatal(err)
	}
	var out []*STTensor
	for _, tn := range s.Tensors {
		name := rename(tn.Name)
		if name == "" {
			continue
		}
		c := *tn
		c.Name = name
		if r, ok := replace[name]; ok {
			c = *r
		}
		out = append(out, &c)
	}
	for name, r := range replace {
		if _, err := s.Get(name); err != nil {
			out = append(out, r)
		}
	}
	if err := WriteSafetensorsFile(to, out, s.Metadata); err != nil {
		t.Fatal(err)
	}
}

func TestLoadWeightsTutorialNames(t *testing.T) {
	dir := t.TempDir()
	src := smallModel(t, 10, 1)
	orig := filepath.Join(dir, "tv.safetensors")
	if err := SaveWeights(orig, src.Backend(), src.Params(), src.Buffers(), nil); err != nil {
		t.Fatal(err)
	}
	// The CIFAR tutorial's names, saved from a DataParallel model.
	tut := filepath.Join(dir, "tutorial.safetensors")
	rewrite(t, orig, tut, func(n string) string {
		n = strings.ReplaceAll(n, ".downsample.", ".shortcut.")
		n = strings.Replace(n, "fc.", "linear.", 1)
		return "module." + n
	}, nil)
	s, _ := ReadSafetensorsFile(tut)
	if _, err := s.Get("module.layer2.0.shortcut.1.weight"); err != nil {
		t.Fatalf("renaming did not happen: %v", err)
	}
	dst := smallModel(t, 10, 3)
	if _, err := LoadWeights(tut, dst.Backend(), dst.Params(), dst.Buffers(), LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	assertSameWeights(t, src, dst, nil)
}

// problems splits a joined error into its parts.
func problems(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLoadWeightsRejects(t *testing.T) {
	dir := t.TempDir()
	src := smallModel(t, 10, 1)
	orig := filepath.Join(dir, "w.safetensors")
	if err := SaveWeights(orig, src.Backend(), src.Params(), src.Buffers(), nil); err != nil {
		t.Fatal(err)
	}
	wrongShape, _ := F32Tensor("layer1.0.conv1.weight", []int{1, 2, 3}, make([]float32, 6))
	nan, _ := F32Tensor("bn1.bias", []int{4}, []float32{0, float32(math.NaN()), 0, 0})
	extra, _ := F32Tensor("layer9.weight", []int{1}, []float32{1})
	negVar, _ := F32Tensor("bn1.running_var", []int{4}, []float32{1, -0.5, 1, 1})
	notI64, _ := F32Tensor("bn1.num_batches_tracked", []int{}, []float32{1})
	both, _ := F32Tensor("linear.bias", []int{10}, make([]float32, 10))
	cases := []struct {
		name    string
		rename  func(string) string
		replace map[string]*STTensor
		want    []error
		names   []string
	}{
		{"missing", func(n string) string {
			if n == "layer3.1.bn2.running_mean" || n == "fc.weight" {
				return ""
			}
			return n
		}, nil, []error{ErrMissingKey, ErrMissingKey}, []string{"layer3.1.bn2.running_mean", "fc.weight"}},
		{"unexpected", func(n string) string { return n }, map[string]*STTensor{"layer9.weight": extra},
			[]error{ErrUnexpectedKey}, []string{"layer9.weight"}},
		{"shape", func(n string) string { return n }, map[string]*STTensor{"layer1.0.conv1.weight": wrongShape},
			[]error{ErrShape}, []string{"layer1.0.conv1.weight"}},
		{"nan", func(n string) string { return n }, map[string]*STTensor{"bn1.bias": nan},
			[]error{ErrNonFinite}, []string{"bn1.bias"}},
		{"negative variance", func(n string) string { return n }, map[string]*STTensor{"bn1.running_var": negVar},
			[]error{ErrConfig}, []string{"bn1.running_var has 1 negative values"}},
		{"count dtype", func(n string) string { return n }, map[string]*STTensor{"bn1.num_batches_tracked": notI64},
			[]error{ErrShape}, []string{"bn1.num_batches_tracked"}},
		{"two names for one tensor", func(n string) string { return n }, map[string]*STTensor{"linear.bias": both},
			[]error{ErrUnexpectedKey}, []string{"linear.bias"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".safetensors")
			rewrite(t, orig, path, c.rename, c.replace)
			dst := smallModel(t, 10, 2)
			before := append([]float32(nil), dst.ParamsFlat().Data...)
			_, err := LoadWeights(path, dst.Backend(), dst.Params(), dst.Buffers(), LoadOptions{})
			if err == nil {
				t.Fatal("accepted")
			}
			ps := problems(errors.Unwrap(err))
			if len(ps) != len(c.want) {
				t.Fatalf("%d problems (%v), want %d", len(ps), err, len(c.want))
			}
			for i, want := range c.want {
				found := false
				for _, p := range ps {
					if errors.Is(p, want) && strings.Contains(p.Error(), c.names[i]) {
						found = true
					}
				}
				if !found {
					t.Fatalf("no %v naming %s in %v", want, c.names[i], err)
				}
			}
			for i, v := range dst.ParamsFlat().Data {
				if math.Float32bits(v) != math.Float32bits(before[i]) {
					t.Fatalf("a rejected load changed parameter element %d", i)
				}
			}
		})
	}
	// A malformed file is a safetensors error.
	if _, err := LoadWeights(filepath.Join(dir, "absent"), src.Backend(), src.Params(), src.Buffers(), LoadOptions{}); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestLoadWeightsTransferHead: a 1000-class backbone into a 10-class model.
func TestLoadWeightsTransferHead(t *testing.T) {
	dir := t.TempDir()
	src := smallModel(t, 1000, 1)
	path := filepath.Join(dir, "imagenet.safetensors")
	if err := SaveWeights(path, src.Backend(), src.Params(), src.Buffers(), nil); err != nil {
		t.Fatal(err)
	}
	dst := smallModel(t, 10, 2)
	_, err := LoadWeights(path, dst.Backend(), dst.Params(), dst.Buffers(), LoadOptions{})
	if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "fc.weight") || !strings.Contains(err.Error(), "SkipHead") {
		t.Fatalf("class-count mismatch: %v", err)
	}
	head := append([]float32(nil), dst.Params()[len(dst.Params())-2].Value.Data...)
	if _, err := LoadWeights(path, dst.Backend(), dst.Params(), dst.Buffers(), LoadOptions{SkipHead: true}); err != nil {
		t.Fatal(err)
	}
	isHead := func(n string) bool { return strings.HasPrefix(n, HeadPrefix) }
	assertSameWeights(t, src, dst, isHead)
	for i, v := range dst.Params()[len(dst.Params())-2].Value.Data {
		if v != head[i] {
			t.Fatal("SkipHead changed the model's head")
		}
	}
}

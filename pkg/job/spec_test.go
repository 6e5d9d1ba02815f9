package job

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestDefaultIsValidTutorialRecipe(t *testing.T) {
	s := Default()
	if err := s.Validate(); err != nil {
		t.Fatalf("default spec invalid: %v", err)
	}
	if s.GlobalBatch != 128 || s.Optimizer.LR != 0.1 || s.Optimizer.Momentum != 0.9 || s.Optimizer.WeightDecay != 5e-4 {
		t.Fatalf("default is not the tutorial's recipe: %+v", s)
	}
}

func TestLoadYAMLOverlaysAndRejectsUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "job.yaml")
	os.WriteFile(p, []byte("model:\n  arch: resnet50\n  stem: cifar\noptimizer:\n  name: adam\n  lr: 0.001\nepochs: 3\n"), 0o644)
	s := Default()
	if err := s.LoadYAML(p); err != nil {
		t.Fatal(err)
	}
	if s.Model.Arch != "resnet50" || s.Model.Stem != "cifar" || s.Optimizer.Name != "adam" || s.Epochs != 3 {
		t.Fatalf("overlay not applied: %+v", s)
	}
	if s.GlobalBatch != 128 {
		t.Fatalf("untouched default changed: %d", s.GlobalBatch)
	}
	os.WriteFile(p, []byte("epochz: 3\n"), 0o644)
	s = Default()
	if err := s.LoadYAML(p); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "epochz") {
		t.Fatalf("unknown key: got %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := map[string]func(*Spec){
		"model.arch":                 func(s *Spec) { s.Model.Arch = "vgg" },
		"optimizer.lr":               func(s *Spec) { s.Optimizer.LR = 0 },
		"min_workers":                func(s *Spec) { s.MinWorkers = 3; s.MaxWorkers = 2 },
		"data.folder":                func(s *Spec) { s.Data.Dataset = "folder" },
		"nesterov":                   func(s *Spec) { s.Optimizer.Nesterov = true; s.Optimizer.Momentum = 0 },
		"global_batch":               func(s *Spec) { s.GlobalBatch = 0 },
		"batch_norm":                 func(s *Spec) { s.BatchNorm = "none" },
		"model.dropout":              func(s *Spec) { s.Model.Dropout = 1 },
		"precision":                  func(s *Spec) { s.Precision = "fp8" },
		"precision bf16 needs a GPU": func(s *Spec) { s.Device, s.Precision = "cpu", "bf16" },
	}
	for field, mut := range cases {
		s := Default()
		mut(&s)
		err := s.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

func TestHashIgnoresPlacementButNotMath(t *testing.T) {
	a, b := Default(), Default()
	b.OutputDir, b.MaxWorkers, b.Device, b.Precision = "elsewhere", 7, "cuda", "bf16"
	if a.Hash() != b.Hash() {
		t.Fatal("placement fields changed the hash")
	}
	b.Optimizer.LR = 0.2
	if a.Hash() == b.Hash() {
		t.Fatal("learning rate did not change the hash")
	}
	m, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Unmarshal(m)
	if err != nil || c.Hash() != a.Hash() {
		t.Fatalf("round trip: %v", err)
	}
}

func TestHashDiffNamesTheChangedSettings(t *testing.T) {
	a, b := Default(), Default()
	if d := b.HashDiff(&a); len(d) != 0 {
		t.Fatalf("equal specs: %q", d)
	}
	b.OutputDir, b.MaxWorkers, b.Device = "elsewhere", 7, "cuda" // not in the hash
	b.Optimizer.LR, b.Epochs, b.Model.Stem = 0.01, a.Epochs+3, "cifar"
	want := []string{
		fmt.Sprintf("epochs %d -> %d", a.Epochs, b.Epochs),
		fmt.Sprintf("model.stem %q -> \"cifar\"", a.Model.Stem),
		fmt.Sprintf("optimizer.lr %v -> 0.01", a.Optimizer.LR),
	}
	if d := b.HashDiff(&a); !slices.Equal(d, want) {
		t.Fatalf("diff %q, want %q", d, want)
	}
	if a.Hash() == b.Hash() {
		t.Fatal("the listed settings did not change the hash")
	}
}

func TestYAMLWrongKindSaysWhere(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ doc, want string }{
		{"epochs: [1, 2]\n", "epochs must be a whole number, not a list"},
		{"epochs: 2.5\n", "epochs must be a whole number, not the number 2.5"},
		{"optimizer: {lr: fast}\n", "optimizer.lr must be a number, not a string"},
		{"optimizer: 0.1\n", "optimizer must be a mapping (key: value lines), not a number"},
		{"data: {augment: {a: 1}}\n", "data.augment must be true or false, not a mapping"},
	} {
		p := filepath.Join(dir, "job.yaml")
		os.WriteFile(p, []byte(c.doc), 0o644)
		s := Default()
		err := s.LoadYAML(p)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), p+": "+c.want) {
			t.Errorf("%q: %v, want %q", c.doc, err, c.want)
		}
	}
}

func TestFlagsOverrideYAML(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "job.yaml")
	os.WriteFile(p, []byte("epochs: 7\noptimizer:\n  lr: 0.05\nschedule:\n  name: multistep\n  milestones: [3, 5]\n"), 0o644)
	flagged := Default()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	BindFlags(fs, &flagged)
	if err := fs.Parse([]string{"--lr=0.2", "--milestones=1,2", "--model=resnet34"}); err != nil {
		t.Fatal(err)
	}
	s, err := Resolve(fs, &flagged, p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Epochs != 7 || s.Optimizer.LR != 0.2 || s.Model.Arch != "resnet34" || len(s.Schedule.Milestones) != 2 || s.Schedule.Milestones[1] != 2 {
		t.Fatalf("resolved %+v", s)
	}
	// every YAML key has a flag: each json tag of the spec appears in a usage string
	var usage strings.Builder
	fs.VisitAll(func(f *pflag.Flag) { usage.WriteString(f.Usage) })
	for _, key := range []string{"model.arch", "data.dir", "optimizer.nesterov", "schedule.max_lr", "transfer.freeze_backbone", "checkpoint.every_steps", "deadline_sec", "compression", "batch_norm", "precision"} {
		if !strings.Contains(usage.String(), "[yaml: "+key+"]") {
			t.Errorf("no flag for yaml key %s", key)
		}
	}
}

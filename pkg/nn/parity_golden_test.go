package nn_test

// Reading of the PyTorch golden files written by scripts/parity/gen.py: the
// safetensors tensors (through the engine's reader) and the JSON metadata.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// errGolden is wrapped by every error about a malformed golden file.
var errGolden = errors.New("parity: bad golden file")

// goldenTensor is one tensor of a golden file; exactly one of F32 and I64 is set.
type goldenTensor struct {
	Shape []int
	F32   []float32
	I64   []int64
}

// goldenFile is a parsed safetensors file.
type goldenFile struct {
	path    string
	tensors map[string]*goldenTensor
}

// readGolden reads a golden safetensors file with the engine's reader
// (nn.ReadSafetensorsFile, which validates the header against the file) and
// decodes every tensor: F32 as float32, I64 as int64; any other dtype is an
// error, since the generator writes only these two.
func readGolden(path string) (*goldenFile, error) {
	s, err := nn.ReadSafetensorsFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errGolden, err)
	}
	f := &goldenFile{path: path, tensors: make(map[string]*goldenTensor, len(s.Tensors))}
	for _, st := range s.Tensors {
		t := &goldenTensor{Shape: st.Shape}
		switch st.DType {
		case nn.F32:
			t.F32, err = st.Float32()
		case nn.I64:
			t.I64, err = st.Int64()
		default:
			err = fmt.Errorf("dtype %s not expected", st.DType)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: %w", errGolden, path, st.Name, err)
		}
		f.tensors[st.Name] = t
	}
	return f, nil
}

// f32 returns a float32 tensor by name.
func (f *goldenFile) f32(name string) (*goldenTensor, error) {
	t, ok := f.tensors[name]
	if !ok || t.F32 == nil {
		return nil, fmt.Errorf("%w: %s: no F32 tensor %q", errGolden, f.path, name)
	}
	return t, nil
}

// i64 returns an int64 tensor by name.
func (f *goldenFile) i64(name string) (*goldenTensor, error) {
	t, ok := f.tensors[name]
	if !ok || t.I64 == nil {
		return nil, fmt.Errorf("%w: %s: no I64 tensor %q", errGolden, f.path, name)
	}
	return t, nil
}

// labels returns an I64 label tensor as the engine's []int32.
func (f *goldenFile) labels(name string) ([]int32, error) {
	t, err := f.i64(name)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(t.I64))
	for i, v := range t.I64 {
		if v < 0 || v > math.MaxInt32 {
			return nil, fmt.Errorf("%w: %s: label %d out of range", errGolden, name, v)
		}
		out[i] = int32(v)
	}
	return out, nil
}

// withPrefix lists the names under prefix (the prefix removed), sorted.
func (f *goldenFile) withPrefix(prefix string) []string {
	var out []string
	for name := range f.tensors {
		if len(name) > len(prefix) && name[:len(prefix)] == prefix {
			out = append(out, name[len(prefix):])
		}
	}
	sort.Strings(out)
	return out
}

// goldenManifest is manifest.json.
type goldenManifest struct {
	Format int      `json:"format"`
	Torch  string   `json:"torch"`
	Cases  []string `json:"cases"`
}

// goldenModel is the "model" object of a case's JSON.
type goldenModel struct {
	Depth   int     `json:"depth"`
	Stem    string  `json:"stem"`
	Width   float64 `json:"width"`
	Classes int     `json:"classes"`
}

// goldenOptimizer is one entry of an optim case's "optimizers" list: the
// torch.optim constructor arguments.
type goldenOptimizer struct {
	Name        string     `json:"name"`
	Type        string     `json:"type"` // sgd, adam, adamw, adagrad, rmsprop
	LR          float64    `json:"lr"`
	Momentum    float64    `json:"momentum"`
	Dampening   float64    `json:"dampening"`
	WeightDecay float64    `json:"weight_decay"`
	Nesterov    bool       `json:"nesterov"`
	Betas       [2]float64 `json:"betas"`
	Eps         float64    `json:"eps"`
	AMSGrad     bool       `json:"amsgrad"`
	LRDecay     float64    `json:"lr_decay"`
	InitAcc     float64    `json:"initial_accumulator_value"`
	Alpha       float64    `json:"alpha"`
	Centered    bool       `json:"centered"`
}

// goldenCase is a case's JSON metadata.
type goldenCase struct {
	Format         int               `json:"format"`
	Case           string            `json:"case"`
	Kind           string            `json:"kind"` // "model" or "optim"
	Model          goldenModel       `json:"model"`
	Seed           int64             `json:"seed"`
	InputShape     []int             `json:"input_shape"`
	LabelSmoothing float64           `json:"label_smoothing"`
	BNMomentum     float64           `json:"bn_momentum"`
	BNEps          float64           `json:"bn_eps"`
	Steps          int               `json:"steps"`
	Optimizers     []goldenOptimizer `json:"optimizers"`
	Params         int               `json:"params"`
	// TorchF32Error is torch's own float32-vs-float64 discrepancy: numbers
	// (model cases: logits, loss, grad_worst, running_stats_worst,
	// eval_logits) or, for optim cases, one object per optimizer
	// (weights_worst, update_worst).
	TorchF32Error map[string]json.RawMessage `json:"torch_f32_error"`
}

// noise returns the float torch_f32_error[key] (0 when absent).
func (c *goldenCase) noise(key string) float64 {
	var v float64
	if raw, ok := c.TorchF32Error[key]; ok {
		_ = json.Unmarshal(raw, &v)
	}
	return v
}

// optNoise returns torch_f32_error[opt][key] (0 when absent).
func (c *goldenCase) optNoise(opt, key string) float64 {
	var m map[string]json.RawMessage
	if raw, ok := c.TorchF32Error[opt]; ok {
		_ = json.Unmarshal(raw, &m)
	}
	var v float64
	if raw, ok := m[key]; ok {
		_ = json.Unmarshal(raw, &v)
	}
	return v
}

const goldenFormat = 1

func readJSON(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("parity: %w", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s: %w", errGolden, path, err)
	}
	return nil
}

// loadCase reads <dir>/<name>.json and <dir>/<name>.safetensors.
func loadCase(dir, name string) (*goldenCase, *goldenFile, error) {
	var c goldenCase
	if err := readJSON(filepath.Join(dir, name+".json"), &c); err != nil {
		return nil, nil, err
	}
	if c.Format != goldenFormat {
		return nil, nil, fmt.Errorf("%w: case %s has format %d, want %d", errGolden, name, c.Format, goldenFormat)
	}
	f, err := readGolden(filepath.Join(dir, name+".safetensors"))
	if err != nil {
		return nil, nil, err
	}
	return &c, f, nil
}

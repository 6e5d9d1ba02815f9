package nn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unsafe"
)

// Model and optimizer state ↔ safetensors files.
//
// Weights are stored under torchvision's state_dict names, float32 as F32
// and num_batches_tracked as an I64 scalar (shape []), so files move to and
// from PyTorch (safetensors.torch.load_file / save_file). Loading accepts
// the names of the classic CIFAR tutorial's ResNet as well ("shortcut.0/1"
// for "downsample.0/1", "linear." for "fc.") and a DataParallel/DDP
// "module." prefix, converts F16/BF16/F64 to float32, and checks every
// name, shape and value before it changes anything.

// ErrMissingKey is wrapped when a model tensor is absent from a file.
var ErrMissingKey = errors.New("nn: missing tensor")

// ErrUnexpectedKey is wrapped when a file holds a tensor the model lacks.
var ErrUnexpectedKey = errors.New("nn: unexpected tensor")

// HeadPrefix is the name prefix of the classifier ("fc.weight", "fc.bias").
const HeadPrefix = "fc."

// LoadOptions tune LoadWeights.
type LoadOptions struct {
	// SkipHead ignores the file's classifier (fc.*, or the tutorial's
	// linear.*) and keeps the model's own: transfer learning onto a model
	// whose number of classes differs (see Model.ReplaceHead).
	SkipHead bool
}

// CanonicalName maps a state_dict name to torchvision's spelling: a leading
// "module." is dropped, a "shortcut" component becomes "downsample" and a
// leading "linear" becomes "fc". Other names are returned unchanged.
func CanonicalName(name string) string {
	name = strings.TrimPrefix(name, "module.")
	parts := strings.Split(name, ".")
	for i, p := range parts {
		if p == "shortcut" {
			parts[i] = "downsample"
		}
	}
	if len(parts) > 1 && parts[0] == "linear" {
		parts[0] = "fc"
	}
	return strings.Join(parts, ".")
}

// littleEndian reports whether float32 values in memory are already in
// safetensors' byte order (true on amd64 and arm64).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32Bytes returns the bytes of v, aliasing its memory on little-endian
// hosts and encoding a copy elsewhere.
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// hostF32 copies t to the host as an F32 safetensors tensor whose bytes
// are the copy itself on little-endian hosts (one allocation, no
// conversion).
func hostF32(b Backend, name string, t *Tensor) (*STTensor, error) {
	h := make([]float32, t.Numel())
	b.ToHost(h, t)
	return &STTensor{Name: name, DType: F32, Shape: append([]int{}, t.Shape...), Data: f32Bytes(h)}, nil
}

// WeightTensors returns host copies of params and buffers as safetensors
// tensors under their names.
func WeightTensors(b Backend, params []*Param, buffers []*Buffer) ([]*STTensor, error) {
	var out []*STTensor
	seen := map[string]bool{}
	add := func(name string, t *STTensor, err error) error {
		if err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("%w: model has two tensors called %s", ErrConfig, name)
		}
		seen[name] = true
		out = append(out, t)
		return nil
	}
	for _, p := range params {
		if p == nil || p.Value == nil {
			return nil, fmt.Errorf("%w: parameter without a value", ErrConfig)
		}
		t, err := hostF32(b, p.Name, p.Value)
		if err := add(p.Name, t, err); err != nil {
			return nil, err
		}
	}
	for _, buf := range buffers {
		var t *STTensor
		var err error
		switch {
		case buf == nil:
			return nil, fmt.Errorf("%w: nil buffer", ErrConfig)
		case buf.Count != nil:
			t, err = I64Tensor(buf.Name, []int{}, []int64{*buf.Count})
		case buf.Value != nil:
			t, err = hostF32(b, buf.Name, buf.Value)
		default:
			return nil, fmt.Errorf("%w: buffer %s has neither Value nor Count", ErrConfig, buf.Name)
		}
		if err := add(buf.Name, t, err); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SaveWeights writes params and buffers to path as a safetensors file,
// atomically. meta goes to the "__metadata__" map; "format": "pt" is added
// when absent, as safetensors.torch writes it.
func SaveWeights(path string, b Backend, params []*Param, buffers []*Buffer, meta map[string]string) error {
	ts, err := WeightTensors(b, params, buffers)
	if err != nil {
		return err
	}
	m := map[string]string{"format": "pt"}
	for k, v := range meta {
		m[k] = v
	}
	if err := WriteSafetensorsFile(path, ts, m); err != nil {
		return fmt.Errorf("nn: save weights: %w", err)
	}
	return nil
}

// LoadWeights reads a safetensors file from path into params and buffers
// (see ApplyWeights). The file's metadata is returned.
func LoadWeights(path string, b Backend, params []*Param, buffers []*Buffer, opts LoadOptions) (map[string]string, error) {
	s, err := ReadSafetensorsFile(path)
	if err != nil {
		return nil, fmt.Errorf("nn: load weights: %w", err)
	}
	if err := ApplyWeights(s, b, params, buffers, opts); err != nil {
		return nil, fmt.Errorf("nn: load weights from %s: %w", path, err)
	}
	return s.Metadata, nil
}

// ApplyWeights copies the tensors of s into params and buffers. Every model
// tensor must be present (ErrMissingKey), every file tensor must belong to
// the model (ErrUnexpectedKey), every shape must match exactly (ErrShape),
// dtypes must convert (ErrSTWrongDType) and values must be finite
// (ErrNonFinite); each problem is reported with the tensor's name, all of
// them joined in one error, and nothing is changed unless there are none.
// With opts.SkipHead the file's head is ignored and the model's kept.
func ApplyWeights(s *Safetensors, b Backend, params []*Param, buffers []*Buffer, opts LoadOptions) error {
	type target struct {
		shape []int
		value *Tensor // nil for a count
		count *int64
	}
	targets := map[string]target{}
	for _, p := range params {
		if p == nil || p.Value == nil {
			return fmt.Errorf("%w: parameter without a value", ErrConfig)
		}
		if _, dup := targets[p.Name]; dup {
			return fmt.Errorf("%w: model has two tensors called %s", ErrConfig, p.Name)
		}
		targets[p.Name] = target{shape: p.Value.Shape, value: p.Value}
	}
	for _, buf := range buffers {
		if buf == nil || (buf.Value == nil && buf.Count == nil) {
			return fmt.Errorf("%w: buffer without a value", ErrConfig)
		}
		if _, dup := targets[buf.Name]; dup {
			return fmt.Errorf("%w: model has two tensors called %s", ErrConfig, buf.Name)
		}
		if buf.Count != nil {
			targets[buf.Name] = target{shape: []int{}, count: buf.Count}
		} else {
			targets[buf.Name] = target{shape: buf.Value.Shape, value: buf.Value}
		}
	}
	isHead := func(name string) bool { return strings.HasPrefix(name, HeadPrefix) }

	var errs []error
	type load struct {
		dst   target
		f32   []float32
		count int64
	}
	var loads []load
	found := map[string]string{} // canonical → file name
	for _, t := range s.Tensors {
		name := CanonicalName(t.Name)
		if prev, dup := found[name]; dup {
			errs = append(errs, fmt.Errorf("%w: %q and %q both name %s", ErrUnexpectedKey, prev, t.Name, name))
			continue
		}
		found[name] = t.Name
		if opts.SkipHead && isHead(name) {
			continue
		}
		dst, ok := targets[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%w: %s is not in the model", ErrUnexpectedKey, describe(t.Name, name)))
			continue
		}
		if dst.count != nil {
			if t.DType != I64 || t.Numel() != 1 || len(t.Shape) > 1 {
				errs = append(errs, fmt.Errorf("%w: %s is %s of shape %v, want an I64 scalar", ErrShape, describe(t.Name, name), t.DType, t.Shape))
				continue
			}
			v, _ := t.Int64()
			if v[0] < 0 {
				errs = append(errs, fmt.Errorf("%w: %s is negative (%d)", ErrConfig, describe(t.Name, name), v[0]))
				continue
			}
			loads = append(loads, load{dst: dst, count: v[0]})
			continue
		}
		if !SameShape(t.Shape, dst.shape) {
			hint := ""
			if isHead(name) {
				hint = " (a different number of classes? load with SkipHead)"
			}
			errs = append(errs, fmt.Errorf("%w: %s has shape %v in the file, %v in the model%s", ErrShape, describe(t.Name, name), t.Shape, dst.shape, hint))
			continue
		}
		v, err := t.Float32()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n := countNonFinite(v); n > 0 {
			errs = append(errs, fmt.Errorf("%w: %s has %d NaN/Inf values", ErrNonFinite, describe(t.Name, name), n))
			continue
		}
		if strings.HasSuffix(name, "running_var") {
			if n := countNegative(v); n > 0 {
				errs = append(errs, fmt.Errorf("%w: %s has %d negative values (a batch norm variance is never negative)", ErrConfig, describe(t.Name, name), n))
				continue
			}
		}
		loads = append(loads, load{dst: dst, f32: v})
	}
	for name := range targets {
		if _, ok := found[name]; ok {
			continue
		}
		if opts.SkipHead && isHead(name) {
			continue
		}
		errs = append(errs, fmt.Errorf("%w: %s is not in the file", ErrMissingKey, name))
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return errors.Join(errs...)
	}
	for _, l := range loads {
		if l.dst.count != nil {
			*l.dst.count = l.count
		} else {
			b.FromHost(l.dst.value, l.f32)
		}
	}
	return b.Sync()
}

// describe names a file tensor, with its canonical name when they differ.
func describe(fileName, canonical string) string {
	if fileName == canonical {
		return fileName
	}
	return fmt.Sprintf("%s (as %s)", fileName, canonical)
}

func countNegative(v []float32) int {
	n := 0
	for _, x := range v {
		if x < 0 {
			n++
		}
	}
	return n
}

func countNonFinite(v []float32) int {
	n := 0
	for _, x := range v {
		if x-x != 0 { // NaN or ±Inf
			n++
		}
	}
	return n
}

// optimizer state files: "<param>.<state>" F32 tensors, "<param>.step" I64
// scalars, and the algorithm under the metadata key "optimizer".
const stepSuffix = ".step"

// OptimizerStateTensors encodes st as safetensors tensors plus metadata.
// On little-endian hosts the tensors' bytes alias st's float32 data (no
// copy): st must not change while they are in use.
func OptimizerStateTensors(st *OptimizerState) ([]*STTensor, map[string]string, error) {
	if st == nil || st.Algorithm == "" {
		return nil, nil, fmt.Errorf("%w: optimizer state without an algorithm", ErrOptimState)
	}
	var out []*STTensor
	for key, t := range st.Tensors {
		if t == nil || t.Data == nil {
			return nil, nil, fmt.Errorf("%w: state tensor %s is not a host tensor", ErrOptimState, key)
		}
		if numel(t.Shape) != len(t.Data) {
			return nil, nil, fmt.Errorf("%w: state tensor %s: %d values for shape %v", ErrShape, key, len(t.Data), t.Shape)
		}
		out = append(out, &STTensor{Name: key, DType: F32, Shape: append([]int{}, t.Shape...), Data: f32Bytes(t.Data)})
	}
	for name, step := range st.Steps {
		s, _ := I64Tensor(name+stepSuffix, []int{}, []int64{step})
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, map[string]string{"optimizer": st.Algorithm}, nil
}

// SaveOptimizerState writes st to path atomically; meta is added to the
// file's metadata.
func SaveOptimizerState(path string, st *OptimizerState, meta map[string]string) error {
	ts, m, err := OptimizerStateTensors(st)
	if err != nil {
		return err
	}
	for k, v := range meta {
		if k != "optimizer" {
			m[k] = v
		}
	}
	if err := WriteSafetensorsFile(path, ts, m); err != nil {
		return fmt.Errorf("nn: save optimizer state: %w", err)
	}
	return nil
}

// OptimizerStateFrom decodes an optimizer state written by
// OptimizerStateTensors; Optimizer.LoadState then checks it against the
// optimizer's parameters.
func OptimizerStateFrom(s *Safetensors) (*OptimizerState, error) {
	algo := s.Metadata["optimizer"]
	if algo == "" {
		return nil, fmt.Errorf("%w: no \"optimizer\" metadata", ErrOptimState)
	}
	st := &OptimizerState{Algorithm: algo, Tensors: map[string]*Tensor{}, Steps: map[string]int64{}}
	for _, t := range s.Tensors {
		if t.DType == I64 {
			name, ok := strings.CutSuffix(t.Name, stepSuffix)
			if !ok || t.Numel() != 1 || len(t.Shape) > 1 {
				return nil, fmt.Errorf("%w: unexpected I64 tensor %s", ErrOptimState, t.Name)
			}
			v, _ := t.Int64()
			st.Steps[name] = v[0]
			continue
		}
		v, err := t.Float32()
		if err != nil {
			return nil, err
		}
		st.Tensors[t.Name] = &Tensor{Shape: append([]int{}, t.Shape...), Data: v}
	}
	return st, nil
}

// LoadOptimizerState reads an optimizer state file and its metadata.
func LoadOptimizerState(path string) (*OptimizerState, map[string]string, error) {
	s, err := ReadSafetensorsFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("nn: load optimizer state: %w", err)
	}
	st, err := OptimizerStateFrom(s)
	if err != nil {
		return nil, nil, fmt.Errorf("nn: load optimizer state from %s: %w", path, err)
	}
	return st, s.Metadata, nil
}

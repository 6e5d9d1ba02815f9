package nn

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Optimizers with torch.optim semantics (torch 1.13, single-tensor path).
//
// An optimizer owns a list of parameters and, per trainable parameter, the
// state tensors torch keeps under the same names ("momentum_buffer",
// "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg",
// "grad_avg") plus torch's per-parameter step count. State is allocated
// lazily, through the optimizer's Backend, on a parameter's first step, as
// torch does; a frozen parameter (Param.Frozen) is skipped and gets no
// state. Hyper-parameters are float64, like Python floats; the backend's
// kernels round them to float32 exactly where torch does. Invalid settings
// give errors wrapping ErrConfig.

// ErrOptimState is wrapped by every error about optimizer state that does
// not fit the optimizer it is loaded into.
var ErrOptimState = errors.New("nn: optimizer state does not match")

// ErrNoGrad is wrapped when a trainable parameter has no gradient tensor.
var ErrNoGrad = errors.New("nn: trainable parameter has no gradient")

// Optimizer updates a fixed list of parameters from their gradients.
// Methods must be called from one goroutine at a time (the Backend's rule).
type Optimizer interface {
	// Step applies one update to every trainable parameter. It checks all
	// gradients first and changes nothing when it returns an error.
	Step() error
	// ZeroGrad sets every parameter's gradient to zero.
	ZeroGrad()
	// LR is the learning rate the next Step uses.
	LR() float64
	// SetLR changes the learning rate (schedules call it before each Step).
	SetLR(lr float64)
	// State returns a host copy of the optimizer's state for checkpointing.
	State() (*OptimizerState, error)
	// LoadState replaces the state with st (host tensors, e.g. read back by
	// LoadOptimizerState). It validates everything first and leaves the
	// optimizer unchanged when it returns an error.
	LoadState(st *OptimizerState) error
	// Params is the parameter list the optimizer was built with.
	Params() []*Param
	// Reset forgets all state (it is freed on the backend), as if no step
	// had been taken; hyper-parameters stay as they are.
	Reset()
}

// MomentumSetter is implemented by optimizers whose momentum a schedule
// may cycle (OneCycle): SGD and RMSprop (momentum), Adam and AdamW (beta1).
type MomentumSetter interface {
	Momentum() float64
	SetMomentum(m float64)
}

// OptimizerState is an optimizer's state in host memory, as torch's
// optimizer.state_dict()["state"] keeps it, keyed by parameter name:
// Tensors["layer1.0.conv1.weight.exp_avg"] is that parameter's exp_avg and
// Steps["layer1.0.conv1.weight"] its step count. A parameter that has never
// been stepped has no entries.
type OptimizerState struct {
	Algorithm string             // "sgd", "adam", "adamw", "adagrad" or "rmsprop"
	Tensors   map[string]*Tensor // "<param name>.<state name>" → host tensor of the param's shape
	Steps     map[string]int64   // param name → steps taken
}

// CheckGradsFinite returns an error wrapping ErrNonFinite and naming
// the first trainable parameter whose gradient holds a NaN or ±Inf.
func CheckGradsFinite(b Backend, params []*Param) error {
	for _, p := range params {
		if p.Frozen || p.Grad == nil {
			continue
		}
		if n := b.CountNonFinite(p.Grad); n > 0 {
			return fmt.Errorf("%w: %s has %d NaN/Inf values", ErrNonFinite, p.Name, n)
		}
	}
	return nil
}

// paramState is one parameter's optimizer state.
type paramState struct {
	step  int64
	slots map[string]*Tensor // state name → tensor on the backend
}

// optimizer is what the concrete optimizers plug into optimBase.
type optimizer interface {
	// slotNames lists the state tensors a parameter needs under the current
	// configuration: required ones must exist once a parameter has stepped,
	// optional ones may (SGD's buffer, created on its first momentum step).
	slotNames() (required, optional []string)
	// slotInit is the value a new state tensor starts with.
	slotInit(name string) float32
	// update applies one step to p with its state; st.step is already
	// incremented and required slots exist.
	update(p *Param, st *paramState)
}

// optimBase holds what every optimizer shares.
type optimBase struct {
	algo   string
	b      Backend
	params []*Param
	states []*paramState // parallel to params; nil until the first step
	lr     float64
	impl   optimizer
	runs   []*fusedRun // set by Fuse (optim_fuse.go), ordered by lo
}

func newOptimBase(algo string, b Backend, params []*Param, lr float64, impl optimizer) (optimBase, error) {
	if b == nil {
		return optimBase{}, fmt.Errorf("%w: %s: nil backend", ErrConfig, algo)
	}
	if len(params) == 0 {
		return optimBase{}, fmt.Errorf("%w: %s: empty parameter list", ErrConfig, algo)
	}
	seen := make(map[string]bool, len(params))
	for i, p := range params {
		if p == nil || p.Value == nil {
			return optimBase{}, fmt.Errorf("%w: %s: parameter %d has no value tensor", ErrConfig, algo, i)
		}
		if p.Name == "" {
			return optimBase{}, fmt.Errorf("%w: %s: parameter %d has no name", ErrConfig, algo, i)
		}
		if seen[p.Name] {
			return optimBase{}, fmt.Errorf("%w: %s: parameter %s listed twice", ErrConfig, algo, p.Name)
		}
		seen[p.Name] = true
		if p.Grad != nil && !SameShape(p.Grad.Shape, p.Value.Shape) {
			return optimBase{}, fmt.Errorf("%w: %s: gradient of %s has shape %v, value %v", ErrConfig, algo, p.Name, p.Grad.Shape, p.Value.Shape)
		}
	}
	if err := checkLR(algo, lr); err != nil {
		return optimBase{}, err
	}
	return optimBase{algo: algo, b: b, params: params, states: make([]*paramState, len(params)), lr: lr, impl: impl}, nil
}

// checkLR rejects a negative or NaN learning rate and, at construction, a
// zero one (the usual sign of a config built without DefaultXConfig).
func checkLR(algo string, lr float64) error {
	if !(lr > 0) {
		return fmt.Errorf("%w: %s: learning rate %v must be > 0", ErrConfig, algo, lr)
	}
	return nil
}

// nonNeg checks that each named value is >= 0 (and not NaN).
func nonNeg(algo string, kv ...any) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if v := kv[i+1].(float64); !(v >= 0) {
			return fmt.Errorf("%w: %s: %s = %v must be >= 0", ErrConfig, algo, kv[i], v)
		}
	}
	return nil
}

// setHyper stores a float64 hyper-parameter into a backend parameter
// struct field, whatever float type the field has.
func setHyper[T float32 | float64](dst *T, v float64) { *dst = T(v) }

// Params implements Optimizer.
func (o *optimBase) Params() []*Param { return o.params }

// LR implements Optimizer.
func (o *optimBase) LR() float64 { return o.lr }

// SetLR implements Optimizer. A negative or NaN rate is a programming
// error of the caller's schedule and is clamped to 0.
func (o *optimBase) SetLR(lr float64) {
	if !(lr >= 0) {
		lr = 0
	}
	o.lr = lr
}

// Reset implements Optimizer.
func (o *optimBase) Reset() {
	o.freeState()
	for i := range o.states {
		o.states[i] = nil
	}
}

// ZeroGrad implements Optimizer.
func (o *optimBase) ZeroGrad() {
	for _, p := range o.params {
		if p.Grad != nil {
			o.b.Fill(p.Grad, 0)
		}
	}
}

// Step implements Optimizer.
func (o *optimBase) Step() error {
	for _, p := range o.params {
		if p.Frozen {
			continue
		}
		if p.Grad == nil {
			return fmt.Errorf("%w: %s: %s", ErrNoGrad, o.algo, p.Name)
		}
		if !SameShape(p.Grad.Shape, p.Value.Shape) {
			return fmt.Errorf("%w: %s: gradient of %s has shape %v, value %v", ErrShape, o.algo, p.Name, p.Grad.Shape, p.Value.Shape)
		}
	}
	required, _ := o.impl.slotNames()
	next := 0 // the next fused run (o.runs is ordered and holds no frozen parameter)
	for i := 0; i < len(o.params); i++ {
		p := o.params[i]
		if p.Frozen {
			continue
		}
		if next < len(o.runs) && o.runs[next].lo == i {
			r := o.runs[next]
			next++
			if o.stepRun(r, required) {
				i = r.hi - 1
				continue
			}
		}
		st := o.states[i]
		if st == nil {
			st = &paramState{slots: make(map[string]*Tensor, len(required))}
			o.states[i] = st
		}
		for _, name := range required {
			if st.slots[name] == nil {
				st.slots[name] = o.newSlot(p, name)
			}
		}
		st.step++
		o.impl.update(p, st)
	}
	return nil
}

// newSlot allocates a state tensor of p's shape on the backend.
func (o *optimBase) newSlot(p *Param, name string) *Tensor {
	t := o.b.New(p.Value.Shape...)
	if v := o.impl.slotInit(name); v != 0 {
		o.b.Fill(t, v)
	}
	return t
}

// State implements Optimizer.
func (o *optimBase) State() (*OptimizerState, error) {
	if err := o.b.Sync(); err != nil {
		return nil, fmt.Errorf("nn: %s state: %w", o.algo, err)
	}
	st := &OptimizerState{Algorithm: o.algo, Tensors: map[string]*Tensor{}, Steps: map[string]int64{}}
	for i, p := range o.params {
		ps := o.states[i]
		if ps == nil {
			continue
		}
		st.Steps[p.Name] = ps.step
		for name, t := range ps.slots {
			h := NewTensor(t.Shape...)
			o.b.ToHost(h.Data, t)
			st.Tensors[p.Name+"."+name] = h
		}
	}
	return st, nil
}

// LoadState implements Optimizer.
func (o *optimBase) LoadState(st *OptimizerState) error {
	if st == nil {
		return fmt.Errorf("%w: %s: nil state", ErrOptimState, o.algo)
	}
	if st.Algorithm != o.algo {
		return fmt.Errorf("%w: state is for %q, optimizer is %q", ErrOptimState, st.Algorithm, o.algo)
	}
	required, optional := o.impl.slotNames()
	known := append(append([]string(nil), required...), optional...)
	byName := make(map[string]int, len(o.params))
	for i, p := range o.params {
		byName[p.Name] = i
	}
	var errs []error
	for name, step := range st.Steps {
		i, ok := byName[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%w: step count for unknown parameter %s", ErrOptimState, name))
		case o.params[i].Frozen:
			errs = append(errs, fmt.Errorf("%w: state for frozen parameter %s", ErrOptimState, name))
		case step < 0:
			errs = append(errs, fmt.Errorf("%w: %s: negative step %d", ErrOptimState, name, step))
		}
	}
	slots := make([]map[string]*Tensor, len(o.params))
	for key, t := range st.Tensors {
		i, slot := splitStateKey(key, byName, known)
		if i < 0 {
			errs = append(errs, fmt.Errorf("%w: unexpected state tensor %s for %s", ErrOptimState, key, o.algo))
			continue
		}
		p := o.params[i]
		if _, ok := st.Steps[p.Name]; !ok {
			errs = append(errs, fmt.Errorf("%w: state tensor %s but no step count for %s", ErrOptimState, key, p.Name))
			continue
		}
		if t == nil || t.Data == nil {
			errs = append(errs, fmt.Errorf("%w: state tensor %s is not a host tensor", ErrOptimState, key))
			continue
		}
		if !SameShape(t.Shape, p.Value.Shape) || len(t.Data) != p.Value.Numel() {
			errs = append(errs, fmt.Errorf("%w: state tensor %s has shape %v, parameter %v", ErrShape, key, t.Shape, p.Value.Shape))
			continue
		}
		if slots[i] == nil {
			slots[i] = map[string]*Tensor{}
		}
		slots[i][slot] = t
	}
	for name, step := range st.Steps {
		i, ok := byName[name]
		if !ok || step <= 0 {
			continue
		}
		for _, r := range required {
			if slots[i][r] == nil {
				errs = append(errs, fmt.Errorf("%w: missing state tensor %s.%s", ErrOptimState, name, r))
			}
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return errors.Join(errs...)
	}
	// Valid: replace the state.
	o.freeState()
	for i := range o.states {
		o.states[i] = nil
		step, ok := st.Steps[o.params[i].Name]
		if !ok {
			continue
		}
		ps := &paramState{step: step, slots: map[string]*Tensor{}}
		for slot, h := range slots[i] {
			t := o.b.New(h.Shape...)
			o.b.FromHost(t, h.Data)
			ps.slots[slot] = t
		}
		o.states[i] = ps
	}
	o.relayout()
	return nil
}

// splitStateKey finds the parameter index and state name of a key
// "<param>.<state>", or -1.
func splitStateKey(key string, byName map[string]int, slots []string) (int, string) {
	for _, s := range slots {
		if name, ok := strings.CutSuffix(key, "."+s); ok {
			if i, ok := byName[name]; ok {
				return i, s
			}
		}
	}
	return -1, ""
}

// sortErrors orders errors by message so that a joined report is stable.
func sortErrors(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

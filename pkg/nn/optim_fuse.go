package nn

import (
	"errors"
	"fmt"
	"unsafe"
)

// Fused optimizer steps (torch's "foreach" idea, in our terms).
//
// A Model keeps every parameter value in one flat tensor and every gradient
// in another of the same layout (ParamsFlat, GradsFlat). Once an optimizer
// is told so (Fuse), it lays its state out the same way, one tensor per
// state name for each run of adjacent trainable parameters, and a Step
// updates a whole run with one call of the backend's kernel instead of one
// call per parameter: on a GPU, ResNet-18's 62 launches become one.
//
// The results are bit-identical to the per-parameter path: every update is
// elementwise, and the hyper-parameters of one step (learning rate, bias
// corrections from the step count, ...) are the same for every parameter of
// a run, because a run is only stepped fused when all its parameters have
// taken the same number of steps and hold the same state names. Otherwise
// (a checkpoint with uneven step counts, say) that run steps parameter by
// parameter through the same views. Frozen parameters split runs and keep
// no state. State and LoadState see per-parameter tensors as before (views
// into the run's tensors).

// Fuser is implemented by every optimizer of this package.
type Fuser interface {
	// Fuse declares that the optimizer's parameter values and gradients are
	// views of values and grads (a Model's ParamsFlat and GradsFlat) and
	// lays the state out to match (existing state is moved). Parameters that
	// are not views of them, or not adjacent, keep the per-parameter path.
	// It returns the number of fused runs. Call it again after the
	// parameters were laid out anew (Model.ReplaceHead) or frozen.
	Fuse(values, grads *Tensor) (runs int, err error)
}

// ErrFuse is wrapped by Fuse's errors.
var ErrFuse = errors.New("nn: cannot fuse optimizer")

// fusedRun is a maximal sequence params[lo:hi] (at least two) of trainable
// parameters that lie back to back in the flat tensors.
type fusedRun struct {
	lo, hi      int
	off         []int   // each parameter's offset from the run's start
	value, grad *Tensor // the run's views of the flat tensors, shape (n)
	// slots holds, per state name, the run-long tensor the optimizer owns;
	// views[name][k] is params[lo+k]'s slot, a view of slots[name].
	slots map[string]*Tensor
	views map[string][]*Tensor
}

// flatOffset is t's element offset inside flat, when t is a view of it.
func flatOffset(flat, t *Tensor) (int, bool) {
	if flat == nil || t == nil {
		return 0, false
	}
	var base, p uintptr
	switch {
	case flat.Ptr != 0 && t.Ptr != 0:
		base, p = flat.Ptr, t.Ptr
	case len(flat.Data) > 0 && len(t.Data) > 0:
		// Addresses are compared, never turned back into pointers.
		base, p = uintptr(unsafe.Pointer(unsafe.SliceData(flat.Data))), uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))
	default:
		return 0, false
	}
	if p < base || (p-base)%4 != 0 {
		return 0, false
	}
	off := int((p - base) / 4)
	if off+t.Numel() > flat.Numel() {
		return 0, false
	}
	return off, true
}

// Fuse implements Fuser.
func (o *optimBase) Fuse(values, grads *Tensor) (int, error) {
	if values == nil || grads == nil || values.Numel() != grads.Numel() {
		return 0, fmt.Errorf("%w: %s: values and gradients must be flat tensors of one size", ErrFuse, o.algo)
	}
	o.unfuse()
	offs := make([]int, len(o.params))
	ok := make([]bool, len(o.params))
	for i, p := range o.params {
		if p.Frozen || p.Grad == nil || p.Value.Numel() == 0 {
			continue
		}
		ov, okv := flatOffset(values, p.Value)
		og, okg := flatOffset(grads, p.Grad)
		offs[i], ok[i] = ov, okv && okg && ov == og
	}
	for i := 0; i < len(o.params); {
		j := i + 1
		for ok[i] && j < len(o.params) && ok[j] && offs[j] == offs[j-1]+o.params[j-1].Value.Numel() {
			j++
		}
		if ok[i] && j-i >= 2 {
			r := &fusedRun{lo: i, hi: j, off: make([]int, j-i), slots: map[string]*Tensor{}, views: map[string][]*Tensor{}}
			for k := i; k < j; k++ {
				r.off[k-i] = offs[k] - offs[i]
			}
			n := offs[j-1] + o.params[j-1].Value.Numel() - offs[i]
			r.value, r.grad = values.View(offs[i], n), grads.View(offs[i], n)
			o.runs = append(o.runs, r)
		}
		i = j
	}
	o.relayout()
	return len(o.runs), nil
}

// unfuse moves every run's state back into per-parameter tensors and
// forgets the runs.
func (o *optimBase) unfuse() {
	for _, r := range o.runs {
		for name, buf := range r.slots {
			for k, v := range r.views[name] {
				t := o.b.New(v.Shape...)
				o.b.Copy(t, v)
				o.states[r.lo+k].slots[name] = t
			}
			o.b.Free(buf)
		}
	}
	o.runs = nil
}

// relayout moves, for every run and state name that all of the run's
// parameters hold in separate tensors, those tensors into one run-long
// tensor.
func (o *optimBase) relayout() {
	for _, r := range o.runs {
		first := o.states[r.lo]
		if first == nil {
			continue
		}
	names:
		for name := range first.slots {
			if r.slots[name] != nil {
				continue
			}
			for k := r.lo; k < r.hi; k++ {
				if o.states[k] == nil || o.states[k].slots[name] == nil {
					continue names
				}
			}
			buf := o.b.New(r.value.Numel())
			views := r.viewsOf(buf, o.params)
			for k, v := range views {
				old := o.states[r.lo+k].slots[name]
				o.b.Copy(v, old)
				o.b.Free(old)
				o.states[r.lo+k].slots[name] = v
			}
			r.slots[name], r.views[name] = buf, views
		}
	}
}

// viewsOf cuts a run-long tensor into one view per parameter, each in its
// parameter's shape.
func (r *fusedRun) viewsOf(buf *Tensor, params []*Param) []*Tensor {
	views := make([]*Tensor, r.hi-r.lo)
	for k := range views {
		views[k] = buf.View(r.off[k], params[r.lo+k].Value.Shape...)
	}
	return views
}

// isView reports whether t is the run's view for parameter i's slot name.
func (o *optimBase) isView(i int, name string, t *Tensor) bool {
	for _, r := range o.runs {
		if i >= r.lo && i < r.hi {
			v := r.views[name]
			return v != nil && v[i-r.lo] == t
		}
	}
	return false
}

// freeState frees every state tensor the optimizer owns (runs' tensors and
// per-parameter ones that are not views of them) and clears the runs'
// slots.
func (o *optimBase) freeState() {
	for i, ps := range o.states {
		if ps == nil {
			continue
		}
		for name, t := range ps.slots {
			if !o.isView(i, name, t) {
				o.b.Free(t)
			}
		}
	}
	for _, r := range o.runs {
		for _, buf := range r.slots {
			o.b.Free(buf)
		}
		r.slots, r.views = map[string]*Tensor{}, map[string][]*Tensor{}
	}
}

// stepRun applies one update to the run with one call of the optimizer's
// kernel, and reports false (having changed nothing) when the run cannot be
// stepped fused now.
func (o *optimBase) stepRun(r *fusedRun, required []string) bool {
	first := o.states[r.lo]
	for k := r.lo; k < r.hi; k++ {
		ps := o.states[k]
		if (ps == nil) != (first == nil) {
			return false
		}
		if ps == nil {
			continue
		}
		if ps.step != first.step || len(ps.slots) != len(first.slots) {
			return false
		}
		for name, t := range ps.slots {
			if !o.isView(k, name, t) {
				return false
			}
		}
	}
	if first != nil {
		for _, name := range required {
			if (first.slots[name] == nil) != (r.slots[name] == nil) {
				return false
			}
		}
	}
	var step int64
	if first != nil {
		step = first.step
	}
	st := &paramState{step: step + 1, slots: make(map[string]*Tensor, len(r.slots)+len(required))}
	for name, buf := range r.slots {
		st.slots[name] = buf
	}
	p := &Param{Name: o.params[r.lo].Name, Value: r.value, Grad: r.grad}
	for _, name := range required {
		if st.slots[name] == nil {
			st.slots[name] = o.newSlot(p, name)
		}
	}
	o.impl.update(p, st)
	// Adopt the state tensors this step created (required ones above, or
	// SGD's momentum buffer on its first momentum step).
	for name, buf := range st.slots {
		if r.slots[name] == nil {
			r.slots[name], r.views[name] = buf, r.viewsOf(buf, o.params)
		}
	}
	for k := r.lo; k < r.hi; k++ {
		ps := o.states[k]
		if ps == nil {
			ps = &paramState{slots: make(map[string]*Tensor, len(r.slots))}
			o.states[k] = ps
		}
		ps.step = step + 1
		for name, views := range r.views {
			ps.slots[name] = views[k-r.lo]
		}
	}
	return true
}

package nn

// Buffers reused across steps: per-layer activation buffers and the shared
// pool that gradient tensors of backward are drawn from.

// actBuf is a layer's activation buffer: allocated on the first forward of a
// shape, reused afterwards; a smaller shape reuses the larger storage.
type actBuf struct {
	backing *Tensor
	view    *Tensor
}

// get returns a tensor of the shape, with unspecified contents.
func (a *actBuf) get(b Backend, shape ...int) *Tensor {
	if a.view != nil && SameShape(a.view.Shape, shape) {
		return a.view
	}
	n := numel(shape)
	if a.backing == nil || a.backing.Numel() < n {
		if a.backing != nil {
			b.Free(a.backing)
		}
		a.backing = b.New(n)
	}
	a.view = a.backing.View(0, shape...)
	return a.view
}

func (a *actBuf) free(b Backend) {
	if a.backing != nil {
		b.Free(a.backing)
	}
	a.backing, a.view = nil, nil
}

// sameStorage reports whether a and b start at the same storage element.
func sameStorage(a, b *Tensor) bool {
	if a == nil || b == nil {
		return false
	}
	if a.Ptr != 0 || b.Ptr != 0 {
		return a.Ptr == b.Ptr
	}
	return len(a.Data) > 0 && len(b.Data) > 0 && &a.Data[0] == &b.Data[0]
}

// tensorPool hands out temporary tensors (activation gradients during
// backward). Backward draws the same sequence of sizes every step, so after
// the first step the pool has all it needs and allocates nothing more.
type tensorPool struct {
	slots []poolSlot
}

type poolSlot struct {
	backing *Tensor
	view    *Tensor
	inUse   bool
}

// get returns a tensor of the shape with unspecified contents; give it back
// with put.
func (p *tensorPool) get(b Backend, shape ...int) *Tensor {
	n := numel(shape)
	best := -1
	for i := range p.slots {
		s := &p.slots[i]
		if s.inUse || s.backing.Numel() < n {
			continue
		}
		if best < 0 || s.backing.Numel() < p.slots[best].backing.Numel() {
			best = i
		}
	}
	if best < 0 {
		// Grow the largest free slot rather than adding one, if any is free.
		for i := range p.slots {
			s := &p.slots[i]
			if !s.inUse && (best < 0 || s.backing.Numel() > p.slots[best].backing.Numel()) {
				best = i
			}
		}
		if best >= 0 {
			b.Free(p.slots[best].backing)
			p.slots[best] = poolSlot{backing: b.New(n)}
		} else {
			p.slots = append(p.slots, poolSlot{backing: b.New(n)})
			best = len(p.slots) - 1
		}
	}
	s := &p.slots[best]
	s.inUse = true
	if s.view == nil || !SameShape(s.view.Shape, shape) {
		s.view = s.backing.View(0, shape...)
	}
	return s.view
}

// put returns a tensor obtained from get (or a view of one) to the pool. A
// tensor that is not from the pool is ignored.
func (p *tensorPool) put(t *Tensor) {
	for i := range p.slots {
		if p.slots[i].inUse && sameStorage(p.slots[i].backing, t) {
			p.slots[i].inUse = false
			return
		}
	}
}

func (p *tensorPool) free(b Backend) {
	for _, s := range p.slots {
		b.Free(s.backing)
	}
	p.slots = nil
}

// reset marks every slot free (a backward begins; nothing is in use).
func (p *tensorPool) reset() {
	for i := range p.slots {
		p.slots[i].inUse = false
	}
}

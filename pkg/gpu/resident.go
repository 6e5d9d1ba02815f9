package gpu

import (
	"fmt"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Resident bf16 activations.
//
// With the bf16 precision, a convolution's output stays on the device as
// bf16 in channels-last order, (N, H*W, C), instead of being widened back
// to float32 (N, C, H, W): the layout cuDNN's tensor-core kernels read
// and write directly, at half the bytes. Such a tensor is "resident". The
// batch-norm, ReLU, residual-add and pooling ops that read resident
// inputs run kernels/nhwc.cu and write resident outputs, so between two
// convolutions nothing is transposed or widened: the numerics of PyTorch's
// autocast(bf16) with channels_last, where activations are bf16 and
// statistics and weights float32.
//
// The representation is the backend's business: nn.Tensor keeps its
// float32 (N, C, H, W) meaning and size (a resident tensor uses the first
// half of its buffer). The backend records resident tensors by device
// address. Every op that writes a tensor sets or clears the record; an op
// that has no resident kernel first widens its resident inputs in place
// (exactly: bf16 values are float32 values), and ToHost widens into
// scratch. Ops whose inputs mix the two representations round the float32
// ones to resident bf16 first (the precision's activations are bf16
// anyway). Only channel counts that are multiples of 8 (one 16-byte
// vector) become resident.

// actDims is a resident tensor's logical (N, C, H*W).
type actDims struct {
	n, c, hw int
}

func (d actDims) numel() int { return d.n * d.c * d.hw }

// residentOK reports whether a tensor of c channels may become resident.
func (b *Backend) residentOK(c int, ts ...*nn.Tensor) bool {
	return b.bf16 && !b.opts.FP32Activations && c > 0 && c%8 == 0 && aligned16(ts...)
}

// resident returns t's record when t is resident. A record whose size
// differs from t's is a programming error of the caller (a tensor read
// under another size than it was written with) and sets the sticky error.
func (b *Backend) resident(t *nn.Tensor) (actDims, bool) {
	if t == nil || len(b.res) == 0 {
		return actDims{}, false
	}
	d, ok := b.res[ptr(t)]
	if ok && d.numel() != t.Numel() {
		b.fail(fmt.Errorf("%w: tensor %v read as %d elements, written as resident (%d,%d,%d)", ErrBadInput, t.Shape, t.Numel(), d.n, d.c, d.hw))
		return actDims{}, false
	}
	return d, ok
}

// setResident records t as resident with dims d (an op just wrote it so).
func (b *Backend) setResident(t *nn.Tensor, d actDims) { b.res[ptr(t)] = d }

// setPlain records that t holds float32 (N, C, H, W) values.
func (b *Backend) setPlain(ts ...*nn.Tensor) {
	if len(b.res) == 0 && len(b.resIdx) == 0 {
		return
	}
	for _, t := range ts {
		if t != nil {
			delete(b.res, ptr(t))
			delete(b.resIdx, ptr(t))
		}
	}
}

// residentIO unifies the inputs ins (see unify) and reports whether the
// op runs on resident tensors: they are, and every output is aligned for
// the resident kernels (otherwise the inputs are widened).
func (b *Backend) residentIO(outs []*nn.Tensor, ins ...*nn.Tensor) (actDims, bool) {
	d, ok := b.unify(ins...)
	if ok && !aligned16(outs...) {
		b.widen(ins...)
		return actDims{}, false
	}
	return d, ok
}

// widen turns each resident tensor of ts into float32 (N, C, H, W) in
// place (through scratch).
func (b *Backend) widen(ts ...*nn.Tensor) {
	for _, t := range ts {
		d, ok := b.resident(t)
		if !ok || b.err != nil {
			continue
		}
		n := d.numel()
		s := b.getScratch("repr", uint64(n)*4)
		if b.err != nil {
			return
		}
		b.fromNHWC(s, ptr(t), d.n, d.c, d.hw, false)
		b.ok(b.dev.copyDtoD(ptr(t), s, uint64(n)*4))
		b.setPlain(t)
	}
}

// narrow makes float32 tensor t resident with dims d, in place.
func (b *Backend) narrow(t *nn.Tensor, d actDims) {
	s := b.toNHWC("repr", t, d.n, d.c, d.hw)
	if b.err != nil {
		return
	}
	b.ok(b.dev.copyDtoD(ptr(t), s, uint64(d.numel())*2))
	b.setResident(t, d)
}

// unify brings the inputs ts of one op to one representation and returns
// it: when any is resident and every one can be, the float32 ones are
// narrowed (rounded to bf16) and unify returns the dims and true;
// otherwise every resident one is widened and it returns false.
func (b *Backend) unify(ts ...*nn.Tensor) (actDims, bool) {
	var d actDims
	found := false
	for _, t := range ts {
		if rd, ok := b.resident(t); ok {
			d, found = rd, true
			break
		}
	}
	if !found || b.err != nil {
		return actDims{}, false
	}
	for _, t := range ts {
		if t.Numel() != d.numel() || !aligned16(t) {
			b.widen(ts...)
			return actDims{}, false
		}
	}
	for _, t := range ts {
		if _, ok := b.resident(t); !ok {
			b.narrow(t, d)
		}
	}
	return d, b.err == nil
}

// residentPtr returns the address of t's data as resident bf16 with dims
// d: t itself when resident, else a copy narrowed into the named scratch
// (t is left as it is).
func (b *Backend) residentPtr(name string, t *nn.Tensor, d actDims) uint64 {
	if _, ok := b.resident(t); ok {
		return ptr(t)
	}
	return b.toNHWC(name, t, d.n, d.c, d.hw)
}

// plainPtr returns the address of t's data as float32 (N, C, H, W): t
// itself when plain, else a copy widened into the named scratch.
func (b *Backend) plainPtr(name string, t *nn.Tensor) uint64 {
	d, ok := b.resident(t)
	if !ok {
		return ptr(t)
	}
	s := b.getScratch(name, uint64(d.numel())*4)
	if b.err == nil {
		b.fromNHWC(s, ptr(t), d.n, d.c, d.hw, false)
	}
	return s
}

// ---- resident kernels ----

// nhwcReduce runs k_nhwc_partial + k_chan_finish over resident tensors
// (see kernels/nhwc.cu for the modes); scale1 multiplies the second sums.
func (b *Backend) nhwcReduce(mode int, x, x2, y, mean *nn.Tensor, d actDims, out0, out1, scale1 *nn.Tensor) {
	m := d.n * d.hw
	splits := nhwcSplits(m, d.c, b.sms)
	part := b.getScratch("chanpart", uint64(d.c*splits*2)*8)
	if b.err != nil {
		return
	}
	b.ok(b.dev.launch("k_nhwc_partial", dim3{uint32(splits), 1, 1}, dim3{blockSize, 1, 1},
		a(mode, x, x2, y, mean, m, d.c, splits, part)))
	b.ok(b.dev.launch("k_chan_finish_wide", dim3{uint32(d.c), 1, 1}, dim3{128, 1, 1},
		a(part, d.c, splits, scale1, out0, out1, false)))
}

// nhwcSplits picks how many row chunks k_nhwc_partial cuts m rows of c
// channels into: about 32K elements a block, at most 4 blocks per SM.
// Like chanSplits it depends on the shape and SM count only.
func nhwcSplits(m, c, sms int) int {
	s := (m*c + 32767) / 32768
	return max(1, min(s, 4*sms, m, 65535))
}

// bnCoef computes the per-channel coefficients of a resident BN pass into
// scratch (k_bn_coef) and returns them.
func (b *Backend) bnCoef(mode int, c int, mean, invStd, gamma, beta, sumDy, sumDyXhat *nn.Tensor, m int) uint64 {
	co := b.getScratch("bncoef", uint64(4*c)*4)
	if b.err == nil {
		b.chanLaunch("k_bn_coef", c, a(mode, co, mean, invStd, gamma, beta, sumDy, sumDyXhat, c, float64(m)))
	}
	return co
}

// narrowOut makes a convolution's float32 output t resident (dims d) when
// the precision keeps activations resident (the im2col path; cuDNN
// writes resident outputs directly).
func (b *Backend) narrowOut(t *nn.Tensor, d actDims) {
	if b.err == nil && b.residentOK(d.c, t) {
		b.narrow(t, d)
	}
}

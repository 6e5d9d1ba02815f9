package gpu

import "github.com/ringtrain/ringtrain/pkg/nn"

// The fused ops of nn.FusedOps, and the choice between the scalar kernels
// and their 16-byte (float4) variants. Both compute every element with the
// same float32 expression in the same order as pkg/nn's CPU backend, so
// which one runs never changes a result.

var _ nn.FusedOps = (*Backend)(nil)

// aligned16 reports whether every tensor's device address is 16-byte
// aligned (views may start anywhere), as the _v4 kernels need.
func aligned16(ts ...*nn.Tensor) bool {
	for _, t := range ts {
		if ptr(t)%16 != 0 {
			return false
		}
	}
	return true
}

// vecLaunch launches a vector kernel over n4 vectors (float4 quads, or
// 8-bf16 groups of the resident kernels), at least one block, so the n%4
// tail of the flat _v4 kernels always has threads.
func (b *Backend) vecLaunch(name string, n4 int, args []karg) {
	b.ok(b.dev.launch(name, b.gridFor(max(n4, 1)), dim3{blockSize, 1, 1}, args))
}

// bnForward is BatchNormForward, followed by the ReLU when relu is set.
func (b *Backend) bnForward(y, x, mean, invStd, gamma, beta *nn.Tensor, relu bool) {
	n := x.Numel()
	if n == 0 {
		return
	}
	if d, ok := b.residentIO([]*nn.Tensor{y}, x); ok {
		co := b.bnCoef(0, d.c, mean, invStd, gamma, beta, nil, nil, 0)
		if b.err == nil {
			b.vecLaunch("k_nhwc_bn_apply", n/8, a(y, x, co, d.c, n/8, relu))
			b.setResident(y, d)
		}
		return
	}
	b.setPlain(y)
	_, c, hw := dims4(x)
	if hw%4 == 0 && aligned16(y, x) {
		b.vecLaunch("k_bn_forward_v4", n/4, a(y, x, mean, invStd, gamma, beta, c, hw/4, n/4, relu))
		return
	}
	kernel := "k_bn_forward"
	if relu {
		kernel = "k_bn_relu_forward"
	}
	b.elem(kernel, n, a(y, x, mean, invStd, gamma, beta, c, hw, n))
}

// add is Add, followed by the ReLU when relu is set.
func (b *Backend) add(y, x1, x2 *nn.Tensor, relu bool) {
	n := y.Numel()
	if n == 0 {
		return
	}
	if d, ok := b.residentIO([]*nn.Tensor{y}, x1, x2); ok {
		b.vecLaunch("k_bf16_add", n/8, a(y, x1, x2, n/8, relu))
		b.setResident(y, d)
		return
	}
	b.setPlain(y)
	if aligned16(y, x1, x2) {
		b.vecLaunch("k_add_v4", n/4, a(y, x1, x2, n/4, n, relu))
		return
	}
	kernel := "k_add"
	if relu {
		kernel = "k_add_relu"
	}
	b.elem(kernel, n, a(y, x1, x2, n))
}

// BatchNormReLUForward implements nn.FusedOps: BatchNormForward(y, x, ...)
// then ReLU(y, y), in one pass.
func (b *Backend) BatchNormReLUForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x, mean, invStd, gamma, beta) || !b.sameSize("BatchNormReLUForward", y, x) {
		return
	}
	b.bnForward(y, x, mean, invStd, gamma, beta, true)
}

// AddReLU implements nn.FusedOps: Add(y, a, b) then ReLU(y, y), in one
// pass; y may alias a or b.
func (b *Backend) AddReLU(y, x1, x2 *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x1, x2) || !b.sameSize("AddReLU", y, x1, x2) {
		return
	}
	b.add(y, x1, x2, true)
}

// ReLUBatchNormBackwardStats implements nn.FusedOps: ReLUBackward(dy, dy,
// y) (dy masked in place) then BatchNormBackwardStats(sumDy, sumDyXhat,
// dy, x, mean, invStd), in one pass over dy, y and x.
func (b *Backend) ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(sumDy, sumDyXhat, dy, y, x, mean, invStd) ||
		!b.sameSize("ReLUBatchNormBackwardStats", dy, y, x) {
		return
	}
	if d, ok := b.unify(dy, y, x); ok {
		b.nhwcReduce(2, dy, x, y, mean, d, sumDy, sumDyXhat, invStd)
		return
	}
	n, c, hw := dims4(x)
	splits := chanSplits(c, n*hw, b.sms)
	part := b.getScratch("chanpart", uint64(c*splits*2)*8)
	if b.err != nil {
		return
	}
	b.ok(b.dev.launch("k_chan_partial_relu", dim3{uint32(splits), uint32(c), 1}, dim3{blockSize, 1, 1},
		a(dy, y, x, mean, n, c, hw, splits, part)))
	b.ok(b.dev.launch("k_chan_finish", dim3{uint32((c + 127) / 128), 1, 1}, dim3{128, 1, 1},
		a(part, c, splits, invStd, sumDy, sumDyXhat, false)))
}

package gpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// dims4 returns N, C and the product of the remaining dimensions (1 for a
// 2-D tensor).
func dims4(t *nn.Tensor) (n, c, hw int) {
	n, c, hw = t.Shape[0], 1, 1
	if len(t.Shape) > 1 {
		c = t.Shape[1]
	}
	for _, d := range t.Shape[min(2, len(t.Shape)):] {
		hw *= d
	}
	return
}

// ---- convolution ----

// convChunk is how many images one im2col + GEMM covers: as many as fit
// ScratchBytes in the larger of the col (C*R*S rows) and the transposed
// output (K rows) buffers.
func (b *Backend) convChunk(p nn.ConvParams) int {
	rows := max(p.C*p.R*p.S, p.K)
	perImage := int64(rows) * int64(p.P()*p.Q()) * 4
	g := int(b.opts.ScratchBytes / max(perImage, 1))
	return max(1, min(g, p.N))
}

func (b *Backend) colKernels() (im2col, permute string, esize uint64) {
	if b.bf16 {
		return "k_im2col_bf16", "k_permute_bf16", 2
	}
	return "k_im2col_f32", "k_permute_f32", 4
}

// weightOperand returns w, converted to bf16 scratch in bf16 mode.
func (b *Backend) weightOperand(w *nn.Tensor) uint64 {
	if !b.bf16 {
		return ptr(w)
	}
	n := w.Numel()
	wb := b.getScratch("wbf16", uint64(n)*2)
	b.elem("k_cast_bf16", n, a(wb, w, n))
	return wb
}

func (b *Backend) im2col(kernel string, col, x uint64, p nn.ConvParams, g int) {
	P, Q := p.P(), p.Q()
	b.elem(kernel, p.C*p.R*p.S*g*P*Q, a(col, x, g, p.C, p.H, p.W, p.R, p.S, P, Q, p.StrideH, p.StrideW, p.PadH, p.PadW))
}

func (b *Backend) checkConv(what string, p nn.ConvParams, y, x, w *nn.Tensor) bool {
	if p.N*p.C*p.H*p.W != x.Numel() || p.K*p.C*p.R*p.S != w.Numel() || p.N*p.K*p.P()*p.Q() != y.Numel() ||
		p.StrideH < 1 || p.StrideW < 1 || p.P() < 1 || p.Q() < 1 {
		b.fail(fmt.Errorf("%w: %s with %+v: x %v, w %v, y %v", nn.ErrShape, what, p, x.Shape, w.Shape, y.Shape))
		return false
	}
	return true
}

// Conv2d implements nn.Backend: per chunk of g images,
// col = im2col(x) (CRS, g*PQ); tmp (K, g*PQ) = W (K, CRS) x col; y = permute(tmp).
func (b *Backend) Conv2d(y, x, w *nn.Tensor, p nn.ConvParams) {
	defer b.end()
	if !b.begin() || !b.devs(y, x, w) || !b.checkConv("Conv2d", p, y, x, w) {
		return
	}
	if b.gemmConv(convFwd, p, x, w, y) || b.dnnConv(convFwd, p, x, w, y) {
		return
	}
	xp := b.plainPtr("im_x", x)
	b.setPlain(y)
	defer b.narrowOut(y, actDims{p.N, p.K, p.P() * p.Q()})
	im2col, _, es := b.colKernels()
	P, Q := p.P(), p.Q()
	PQ, CRS := P*Q, p.C*p.R*p.S
	G := b.convChunk(p)
	wop := b.weightOperand(w)
	col := b.getScratch("col", uint64(CRS*G*PQ)*es)
	tmp := b.getScratch("tmp", uint64(p.K*G*PQ)*4)
	if b.err != nil {
		return
	}
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		xc := xp + uint64(n0*p.C*p.H*p.W)*4
		yc := ptr(y) + uint64(n0*p.K*PQ)*4
		b.im2col(im2col, col, xc, p, g)
		out := tmp
		if g == 1 {
			out = yc // (K, PQ) is already y's layout for one image
		}
		b.ok(b.dev.gemm(gemmCall{m: p.K, n: g * PQ, k: CRS, alpha: 1, a: wop, lda: CRS, b: col, ldb: g * PQ,
			c: out, ldc: g * PQ, bf16Operands: b.bf16}))
		if g > 1 {
			b.elem("k_permute_f32", p.K*g*PQ, a(yc, tmp, p.K, g, PQ))
		}
	}
}

// Conv2dBackwardData implements nn.Backend: per chunk,
// dyT (K, g*PQ) = permute(dy); dcol (CRS, g*PQ) = W^T x dyT; dx = col2im(dcol).
func (b *Backend) Conv2dBackwardData(dx, dy, w *nn.Tensor, p nn.ConvParams) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dy, w) || !b.checkConv("Conv2dBackwardData", p, dy, dx, w) {
		return
	}
	if b.gemmConv(convBwdData, p, dx, w, dy) || b.dnnConv(convBwdData, p, dx, w, dy) {
		return
	}
	dyp := b.plainPtr("im_dy", dy)
	b.setPlain(dx)
	defer b.narrowOut(dx, actDims{p.N, p.C, p.H * p.W})
	_, permute, es := b.colKernels()
	P, Q := p.P(), p.Q()
	PQ, CRS := P*Q, p.C*p.R*p.S
	G := b.convChunk(p)
	wop := b.weightOperand(w)
	dcol := b.getScratch("col", uint64(CRS*G*PQ)*4)
	dyT := b.getScratch("tmp", uint64(p.K*G*PQ)*4)
	if b.err != nil {
		return
	}
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		dyc := dyp + uint64(n0*p.K*PQ)*4
		dxc := ptr(dx) + uint64(n0*p.C*p.H*p.W)*4
		src := dyc
		if g > 1 || b.bf16 {
			b.elem(permute, p.K*g*PQ, a(dyT, dyc, g, p.K, PQ))
			src = dyT
		}
		_ = es
		b.ok(b.dev.gemm(gemmCall{transA: true, m: CRS, n: g * PQ, k: p.K, alpha: 1, a: wop, lda: CRS, b: src, ldb: g * PQ,
			c: dcol, ldc: g * PQ, bf16Operands: b.bf16}))
		b.elem("k_col2im", g*p.C*p.H*p.W, a(dxc, dcol, g, p.C, p.H, p.W, p.R, p.S, P, Q, p.StrideH, p.StrideW, p.PadH, p.PadW))
	}
}

// Conv2dBackwardFilter implements nn.Backend: per chunk,
// col = im2col(x); dyT = permute(dy); dW (K, CRS) += dyT x col^T.
func (b *Backend) Conv2dBackwardFilter(dw, x, dy *nn.Tensor, p nn.ConvParams) {
	defer b.end()
	if !b.begin() || !b.devs(dw, x, dy) || !b.checkConv("Conv2dBackwardFilter", p, dy, x, dw) {
		return
	}
	b.widen(dw)
	if b.gemmConv(convBwdFilter, p, x, dw, dy) || b.dnnConv(convBwdFilter, p, x, dw, dy) {
		return
	}
	xp, dyp := b.plainPtr("im_x", x), b.plainPtr("im_dy", dy)
	im2col, permute, es := b.colKernels()
	P, Q := p.P(), p.Q()
	PQ, CRS := P*Q, p.C*p.R*p.S
	G := b.convChunk(p)
	col := b.getScratch("col", uint64(CRS*G*PQ)*es)
	dyT := b.getScratch("tmp", uint64(p.K*G*PQ)*4)
	if b.err != nil {
		return
	}
	for n0 := 0; n0 < p.N; n0 += G {
		g := min(G, p.N-n0)
		xc := xp + uint64(n0*p.C*p.H*p.W)*4
		dyc := dyp + uint64(n0*p.K*PQ)*4
		b.im2col(im2col, col, xc, p, g)
		src := dyc
		if g > 1 || b.bf16 {
			b.elem(permute, p.K*g*PQ, a(dyT, dyc, g, p.K, PQ))
			src = dyT
		}
		b.ok(b.dev.gemm(gemmCall{transB: true, m: p.K, n: CRS, k: g * PQ, alpha: 1, beta: 1, a: src, lda: g * PQ,
			b: col, ldb: g * PQ, c: ptr(dw), ldc: CRS, bf16Operands: b.bf16}))
	}
}

// AddChannelBias implements nn.Backend.
func (b *Backend) AddChannelBias(y, bias *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, bias) {
		return
	}
	b.widen(y)
	_, c, hw := dims4(y)
	b.elem("k_add_bias", y.Numel(), a(y, bias, c, hw, y.Numel()))
}

// ChannelBiasBackward implements nn.Backend (accumulate).
func (b *Backend) ChannelBiasBackward(db, dy *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(db, dy) {
		return
	}
	b.widen(dy)
	n, c, hw := dims4(dy)
	b.chanReduce(2, dy, nil, nil, nil, n, c, hw, db, nil, true)
}

// ---- linear ----

// Linear implements nn.Backend: y (N,O) = x (N,I) w^T + b.
func (b *Backend) Linear(y, x, w, bias *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x, w, bias) {
		return
	}
	b.widen(x)
	b.setPlain(y)
	N, O := y.Shape[0], y.Numel()/y.Shape[0]
	I := x.Numel() / N
	if w.Numel() != O*I {
		b.fail(fmt.Errorf("%w: Linear x %v w %v y %v", nn.ErrShape, x.Shape, w.Shape, y.Shape))
		return
	}
	b.ok(b.dev.gemm(gemmCall{transB: true, m: N, n: O, k: I, alpha: 1, a: ptr(x), lda: I, b: ptr(w), ldb: I, c: ptr(y), ldc: O}))
	if bias != nil {
		b.elem("k_add_bias", N*O, a(y, bias, O, 1, N*O))
	}
}

// LinearBackward implements nn.Backend.
func (b *Backend) LinearBackward(dx, dw, db, dy, x, w *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dw, db, dy, x, w) {
		return
	}
	b.widen(dy, x)
	b.setPlain(dx)
	N, O := dy.Shape[0], dy.Numel()/dy.Shape[0]
	I := x.Numel() / N
	if dx != nil {
		b.ok(b.dev.gemm(gemmCall{m: N, n: I, k: O, alpha: 1, a: ptr(dy), lda: O, b: ptr(w), ldb: I, c: ptr(dx), ldc: I}))
	}
	if dw != nil {
		b.ok(b.dev.gemm(gemmCall{transA: true, m: O, n: I, k: N, alpha: 1, beta: 1, a: ptr(dy), lda: O, b: ptr(x), ldb: I, c: ptr(dw), ldc: I}))
	}
	if db != nil {
		b.chanReduce(2, dy, nil, nil, nil, N, O, 1, db, nil, true)
	}
}

// ---- batch norm ----

// chanReduce runs k_chan_partial + k_chan_finish: per-channel sums over
// (N, C, HW) in a fixed partition and order (see kernels/batchnorm.cu).
// In mode 1 the second sum is multiplied by invStd at the end.
func (b *Backend) chanReduce(mode int, x, x2, mean, invStd *nn.Tensor, n, c, hw int, out0, out1 *nn.Tensor, accumulate bool) {
	m := n * hw
	splits := chanSplits(c, m, b.sms)
	part := b.getScratch("chanpart", uint64(c*splits*2)*8)
	if b.err != nil {
		return
	}
	b.ok(b.dev.launch("k_chan_partial", dim3{uint32(splits), uint32(c), 1}, dim3{blockSize, 1, 1},
		a(mode, x, x2, mean, invStd, n, c, hw, splits, part)))
	var scale1 *nn.Tensor
	if mode == 1 {
		scale1 = invStd
	}
	b.ok(b.dev.launch("k_chan_finish", dim3{uint32((c + 127) / 128), 1, 1}, dim3{128, 1, 1},
		a(part, c, splits, scale1, out0, out1, accumulate)))
}

// chanSplits picks how many chunks each channel's m elements are cut into:
// enough blocks to fill the GPU (about 4 per SM), each at least 2048
// elements. It depends only on the shape and the SM count, never on
// timing, so results are reproducible on one GPU model.
func chanSplits(c, m, sms int) int {
	s := (4*sms + c - 1) / c
	s = min(s, (m+2047)/2048)
	return max(1, min(s, 65535))
}

func (b *Backend) chanLaunch(name string, c int, args []karg) {
	b.ok(b.dev.launch(name, dim3{uint32((c + 127) / 128), 1, 1}, dim3{128, 1, 1}, args))
}

// BatchNormStats implements nn.Backend.
func (b *Backend) BatchNormStats(sum, sumSq, x *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(sum, sumSq, x) {
		return
	}
	if d, ok := b.resident(x); ok {
		b.nhwcReduce(0, x, nil, nil, nil, d, sum, sumSq, nil)
		return
	}
	n, c, hw := dims4(x)
	b.chanReduce(0, x, nil, nil, nil, n, c, hw, sum, sumSq, false)
}

// BatchNormForward implements nn.Backend.
func (b *Backend) BatchNormForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x, mean, invStd, gamma, beta) {
		return
	}
	b.bnForward(y, x, mean, invStd, gamma, beta, false)
}

// BatchNormBackwardStats implements nn.Backend.
func (b *Backend) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(sumDy, sumDyXhat, dy, x, mean, invStd) {
		return
	}
	if d, ok := b.unify(dy, x); ok {
		b.nhwcReduce(1, dy, x, nil, mean, d, sumDy, sumDyXhat, invStd)
		return
	}
	n, c, hw := dims4(x)
	b.chanReduce(1, dy, x, mean, invStd, n, c, hw, sumDy, sumDyXhat, false)
}

// BatchNormBackward implements nn.Backend.
func (b *Backend) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *nn.Tensor, m int) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat) {
		return
	}
	if d, ok := b.residentIO([]*nn.Tensor{dx}, dy, x); ok {
		co := b.bnCoef(1, d.c, mean, invStd, gamma, nil, sumDy, sumDyXhat, m)
		if b.err == nil {
			b.vecLaunch("k_nhwc_bn_backward", d.numel()/8, a(dx, dy, x, co, d.c, d.numel()/8))
			b.setResident(dx, d)
		}
		return
	}
	b.setPlain(dx)
	_, c, hw := dims4(x)
	if n := x.Numel(); hw%4 == 0 && n > 0 && aligned16(dx, dy, x) {
		b.vecLaunch("k_bn_backward_v4", n/4, a(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, c, hw/4, n/4, float64(m)))
		return
	}
	b.elem("k_bn_backward", x.Numel(), a(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, c, hw, x.Numel(), float64(m)))
}

// BatchNormStatsFinish implements nn.Backend.
func (b *Backend) BatchNormStatsFinish(mean, invStd, runMean, runVar, sum, sumSq *nn.Tensor, m int, momentum, eps float32) {
	defer b.end()
	if !b.begin() || !b.devs(mean, invStd, runMean, runVar, sum, sumSq) {
		return
	}
	c := mean.Numel()
	b.chanLaunch("k_bn_stats_finish", c, a(mean, invStd, runMean, runVar, sum, sumSq, c, float64(m), momentum, eps))
}

// BatchNormInvStd implements nn.Backend.
func (b *Backend) BatchNormInvStd(invStd, v *nn.Tensor, eps float32) {
	defer b.end()
	if !b.begin() || !b.devs(invStd, v) {
		return
	}
	c := invStd.Numel()
	b.chanLaunch("k_bn_invstd", c, a(invStd, v, c, eps))
}

// ---- elementwise ----

func (b *Backend) sameSize(what string, ts ...*nn.Tensor) bool {
	for _, t := range ts[1:] {
		if t.Numel() != ts[0].Numel() {
			b.fail(fmt.Errorf("%w: %s: %v vs %v", nn.ErrShape, what, ts[0].Shape, t.Shape))
			return false
		}
	}
	return true
}

// ReLU implements nn.Backend.
func (b *Backend) ReLU(y, x *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x) || !b.sameSize("ReLU", y, x) {
		return
	}
	if d, ok := b.residentIO([]*nn.Tensor{y}, x); ok {
		b.vecLaunch("k_bf16_relu", d.numel()/8, a(y, x, d.numel()/8))
		b.setResident(y, d)
		return
	}
	b.setPlain(y)
	b.elem("k_relu", y.Numel(), a(y, x, y.Numel()))
}

// ReLUBackward implements nn.Backend.
func (b *Backend) ReLUBackward(dx, dy, y *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dy, y) || !b.sameSize("ReLUBackward", dx, dy, y) {
		return
	}
	if d, ok := b.residentIO([]*nn.Tensor{dx}, dy, y); ok {
		b.vecLaunch("k_bf16_relu_bwd", d.numel()/8, a(dx, dy, y, d.numel()/8))
		b.setResident(dx, d)
		return
	}
	b.setPlain(dx)
	if n := dx.Numel(); n > 0 && aligned16(dx, dy, y) {
		b.vecLaunch("k_relu_bwd_v4", n/4, a(dx, dy, y, n/4, n))
		return
	}
	b.elem("k_relu_bwd", dx.Numel(), a(dx, dy, y, dx.Numel()))
}

// Add implements nn.Backend.
func (b *Backend) Add(y, x1, x2 *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x1, x2) || !b.sameSize("Add", y, x1, x2) {
		return
	}
	b.add(y, x1, x2, false)
}

// Axpy implements nn.Backend.
func (b *Backend) Axpy(y *nn.Tensor, alpha float32, x *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x) || !b.sameSize("Axpy", y, x) {
		return
	}
	b.widen(y, x)
	b.elem("k_axpy", y.Numel(), a(y, alpha, x, y.Numel()))
}

// Scale implements nn.Backend.
func (b *Backend) Scale(x *nn.Tensor, alpha float32) {
	defer b.end()
	if !b.begin() || !b.devs(x) {
		return
	}
	b.widen(x)
	b.elem("k_scale", x.Numel(), a(x, alpha, x.Numel()))
}

// Mul implements nn.Backend.
func (b *Backend) Mul(y, x1, x2 *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x1, x2) || !b.sameSize("Mul", y, x1, x2) {
		return
	}
	b.widen(x1, x2)
	b.setPlain(y)
	b.elem("k_mul", y.Numel(), a(y, x1, x2, y.Numel()))
}

// ---- pooling ----

// MaxPool2d implements nn.Backend.
func (b *Backend) MaxPool2d(y, argmax, x *nn.Tensor, p nn.PoolParams) {
	defer b.end()
	if !b.begin() || !b.devs(y, argmax, x) {
		return
	}
	if p.N*p.C*p.H*p.W != x.Numel() || p.N*p.C*p.P()*p.Q() != y.Numel() || argmax.Numel() != y.Numel() {
		b.fail(fmt.Errorf("%w: MaxPool2d %+v x %v y %v", nn.ErrShape, p, x.Shape, y.Shape))
		return
	}
	if d, ok := b.resident(x); ok && aligned16(y) {
		b.elem("k_nhwc_maxpool", y.Numel(), a(y, argmax, x, p.N, p.C, p.H, p.W, p.P(), p.Q(), p.Kernel, p.Stride, p.Pad))
		b.setResident(y, actDims{d.n, d.c, p.P() * p.Q()})
		b.setPlain(argmax)
		b.resIdx[ptr(argmax)] = true
		return
	}
	b.widen(x)
	b.setPlain(y, argmax)
	b.elem("k_maxpool", y.Numel(), a(y, argmax, x, p.N*p.C, p.H, p.W, p.P(), p.Q(), p.Kernel, p.Stride, p.Pad))
}

// MaxPool2dBackward implements nn.Backend.
func (b *Backend) MaxPool2dBackward(dx, dy, argmax *nn.Tensor, p nn.PoolParams) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dy, argmax) {
		return
	}
	if p.N*p.C*p.H*p.W != dx.Numel() || p.N*p.C*p.P()*p.Q() != dy.Numel() {
		b.fail(fmt.Errorf("%w: MaxPool2dBackward %+v dx %v dy %v", nn.ErrShape, p, dx.Shape, dy.Shape))
		return
	}
	if b.resIdx[ptr(argmax)] {
		// argmax is in resident order: run on resident dy and dx.
		dyp := b.residentPtr("pool_dy", dy, actDims{p.N, p.C, p.P() * p.Q()})
		d := actDims{p.N, p.C, p.H * p.W}
		out := ptr(dx)
		if !aligned16(dx) {
			out = b.getScratch("pool_dx", uint64(dx.Numel())*2)
		}
		if b.err != nil {
			return
		}
		b.elem("k_nhwc_maxpool_bwd", dx.Numel(), a(out, dyp, argmax, p.N, p.C, p.H, p.W, p.P(), p.Q(), p.Kernel, p.Stride, p.Pad))
		if out != ptr(dx) {
			b.setPlain(dx)
			b.fromNHWC(ptr(dx), out, d.n, d.c, d.hw, false)
			return
		}
		b.setResident(dx, d)
		return
	}
	b.widen(dy)
	b.setPlain(dx)
	b.elem("k_maxpool_bwd", dx.Numel(), a(dx, dy, argmax, p.N*p.C, p.H, p.W, p.P(), p.Q(), p.Kernel, p.Stride, p.Pad))
}

// GlobalAvgPool implements nn.Backend.
func (b *Backend) GlobalAvgPool(y, x *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(y, x) {
		return
	}
	b.setPlain(y)
	if d, ok := b.resident(x); ok {
		b.elem("k_nhwc_gap", d.n*d.c, a(y, x, d.n, d.c, d.hw))
		return
	}
	n, c, hw := dims4(x)
	b.elem("k_gap", n*c, a(y, x, n*c, hw))
}

// GlobalAvgPoolBackward implements nn.Backend.
func (b *Backend) GlobalAvgPoolBackward(dx, dy *nn.Tensor) {
	defer b.end()
	if !b.begin() || !b.devs(dx, dy) {
		return
	}
	b.widen(dy)
	b.setPlain(dx)
	n, c, hw := dims4(dx)
	b.elem("k_gap_bwd", dx.Numel(), a(dx, dy, n*c, hw))
}

// ---- loss ----

// SoftmaxCrossEntropy implements nn.Backend. Labels are copied to the
// device (a label outside [0,K) sets the sticky error).
func (b *Backend) SoftmaxCrossEntropy(loss, dlogits, probs, logits *nn.Tensor, labels []int32, smoothing, gradScale float32) {
	defer b.end()
	if !b.begin() || !b.devs(loss, dlogits, probs, logits) {
		return
	}
	b.widen(logits)
	b.setPlain(loss, dlogits, probs)
	N := logits.Shape[0]
	K := logits.Numel() / N
	if len(labels) != N {
		b.fail(fmt.Errorf("%w: %d labels for %d rows", nn.ErrShape, len(labels), N))
		return
	}
	for i, l := range labels {
		if l < 0 || int(l) >= K {
			b.fail(fmt.Errorf("%w: label %d of row %d outside [0,%d)", ErrBadInput, l, i, K))
			return
		}
	}
	if b.hostDuringCapture("SoftmaxCrossEntropy (host labels)") {
		return
	}
	dl := b.getScratch("labels", uint64(N)*4)
	rows := b.getScratch("rowloss", uint64(N)*4)
	if b.err != nil {
		return
	}
	if !b.ok(b.dev.upload(dl, unsafe.Pointer(&labels[0]), uint64(N)*4)) {
		return
	}
	b.xent(loss, dlogits, probs, logits, dl, rows, N, K, smoothing, gradScale)
}

// xent launches the cross-entropy kernels with labels at the device
// address labels and rowloss scratch at rows.
func (b *Backend) xent(loss, dlogits, probs, logits *nn.Tensor, labels, rows uint64, N, K int, smoothing, gradScale float32) {
	if !b.ok(b.dev.launch("k_xent_rows", dim3{uint32(N), 1, 1}, dim3{128, 1, 1},
		a(logits, labels, N, K, smoothing, gradScale, rows, dlogits, probs))) {
		return
	}
	b.ok(b.dev.launch("k_mean", dim3{1, 1, 1}, dim3{256, 1, 1}, a(loss, rows, N)))
}

// ---- optimizers ----

// SGDStep implements nn.Backend (the CPU backend's operation order).
func (b *Backend) SGDStep(p, g, buf *nn.Tensor, o nn.SGDParams, first bool) {
	defer b.end()
	if !b.begin() || !b.devs(p, g, buf) || !b.sameSize("SGDStep", p, g) {
		return
	}
	if o.Momentum != 0 && (buf == nil || !b.sameSize("SGDStep", p, buf)) {
		b.fail(fmt.Errorf("%w: SGDStep with momentum needs a buffer of %v", nn.ErrShape, p.Shape))
		return
	}
	damp1 := float32(1 - float64(o.Dampening))
	negLR := float32(-float64(o.LR))
	b.elem("k_sgd", p.Numel(), a(p, g, buf, p.Numel(), negLR, o.Momentum, damp1, o.WeightDecay, o.Nesterov, first))
}

// AdamStep implements nn.Backend (the CPU backend's operation order).
func (b *Backend) AdamStep(p, g, m, v, vMax *nn.Tensor, o nn.AdamParams) {
	defer b.end()
	if !b.begin() || !b.devs(p, g, m, v, vMax) || !b.sameSize("AdamStep", p, g, m, v) {
		return
	}
	if o.AMSGrad && (vMax == nil || !b.sameSize("AdamStep", p, vMax)) {
		b.fail(fmt.Errorf("%w: AdamStep with AMSGrad needs vMax of %v", nn.ErrShape, p.Shape))
		return
	}
	if o.Step < 1 {
		b.fail(fmt.Errorf("%w: AdamStep step %d (1-based)", ErrBadInput, o.Step))
		return
	}
	lr, wd := float64(o.LR), float64(o.WeightDecay)
	beta1, beta2 := float64(o.Beta1), float64(o.Beta2)
	bc1 := 1 - math.Pow(beta1, float64(o.Step))
	bc2 := 1 - math.Pow(beta2, float64(o.Step))
	negStep := float32(-(lr / bc1))
	bc2sqrt := float32(math.Sqrt(bc2))
	b.elem("k_adam", p.Numel(), a(p, g, m, v, vMax, p.Numel(), float32(beta1), float32(beta2),
		float32(1-beta1), float32(1-beta2), o.Eps, o.WeightDecay, float32(1-lr*wd), o.Decoupled, o.AMSGrad,
		negStep, bc2sqrt))
}

// AdagradStep implements nn.Backend (the CPU backend's operation order).
func (b *Backend) AdagradStep(p, g, sum *nn.Tensor, o nn.AdagradParams) {
	defer b.end()
	if !b.begin() || !b.devs(p, g, sum) || !b.sameSize("AdagradStep", p, g, sum) {
		return
	}
	if o.Step < 1 {
		b.fail(fmt.Errorf("%w: AdagradStep step %d (1-based)", ErrBadInput, o.Step))
		return
	}
	clr := float64(o.LR) / (1 + float64(o.Step-1)*float64(o.LRDecay))
	b.elem("k_adagrad", p.Numel(), a(p, g, sum, p.Numel(), float32(-clr), o.WeightDecay, o.Eps))
}

// RMSpropStep implements nn.Backend (the CPU backend's operation order).
func (b *Backend) RMSpropStep(p, g, sq, buf, gAvg *nn.Tensor, o nn.RMSpropParams) {
	defer b.end()
	if !b.begin() || !b.devs(p, g, sq, buf, gAvg) || !b.sameSize("RMSpropStep", p, g, sq) {
		return
	}
	if (o.Momentum > 0 && (buf == nil || !b.sameSize("RMSpropStep", p, buf))) || (o.Centered && (gAvg == nil || !b.sameSize("RMSpropStep", p, gAvg))) {
		b.fail(fmt.Errorf("%w: RMSpropStep state tensors missing for %v", nn.ErrShape, p.Shape))
		return
	}
	b.elem("k_rmsprop", p.Numel(), a(p, g, sq, buf, gAvg, p.Numel(), float32(-float64(o.LR)), o.Alpha,
		float32(1-float64(o.Alpha)), o.Eps, o.WeightDecay, o.Momentum, o.Centered))
}

// ---- checks ----

// CountNonFinite implements nn.Backend. It synchronises. On a device error
// it returns t.Numel() (everything suspect, so a caller skips the step)
// and Sync reports the error.
func (b *Backend) CountNonFinite(t *nn.Tensor) int {
	defer b.end()
	if !b.begin() || !b.devs(t) {
		return t.Numel()
	}
	if b.hostDuringCapture("CountNonFinite") {
		return t.Numel()
	}
	b.widen(t)
	n := t.Numel()
	cnt := b.getScratch("count", 4)
	if b.err != nil {
		return n
	}
	b.ok(b.dev.memsetD32(cnt, 0, 1))
	b.elem("k_count_nonfinite", n, a(t, n, cnt))
	var out uint32
	if !b.ok(b.dev.download(unsafe.Pointer(&out), cnt, 4)) {
		return n
	}
	return int(out)
}

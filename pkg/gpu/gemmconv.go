package gpu

import "github.com/ringtrain/ringtrain/pkg/nn"

// Convolutions in the bf16 precision done as one cuBLAS GEMM over an
// explicit column matrix, where cuDNN's implicit-GEMM kernels do badly
// (measured on an H100 with cuDNN 9.14, ResNet-18 at batch 512; see
// docs/gpu.md):
//
//   - small output planes (P*Q <= Options.GemmPlanes, 16 by default: the
//     last stage at 32x32 inputs, 4x4 planes): cuDNN reached 120-170
//     TFLOP/s there; the GEMM has M = N*P*Q rows and K = R*S*C, shapes
//     cuBLAS runs near its peak. Resident tensors only (C and K multiples
//     of 8); forward and weight gradient (the data gradient's float32
//     column matrix and col2im pass measured slower than cuDNN, 0.73 vs
//     0.50-0.68 ms a step for the three 4x4 layers, so it runs only where
//     cuDNN is missing, instead of im2col). The column matrix is channels-last,
//     (N*P*Q, R*S*C), so forward writes the resident output directly and
//     the weight gradient comes out (K, R*S, C), permuted into (K, C, R, S).
//   - a narrow reduction (C*R*S <= narrowCRS) over a float32 input: the
//     cifar stem's 3x3 convolution of the 3-channel image, which cuDNN ran
//     at a fraction of the memory bandwidth it needs. Forward and weight
//     gradient (nothing needs the image's gradient).
//
// Numerics are cuDNN's bf16 ones: bf16 operands, float32 accumulation,
// bf16 activations out, float32 weight gradients. cuBLAS results are
// bit-reproducible on one GPU model and library version.

// narrowCRS bounds C*R*S for the narrow-reduction path.
const narrowCRS = 64

// defaultGemmPlanes is Options.GemmPlanes' default.
const defaultGemmPlanes = 16

// gemmConv runs direction dir of convolution p as a GEMM when one of the
// cases above applies, and reports whether it did. Arguments follow
// dnnConv: fwd (x, w, y), bwd-data (x = dx, w, y = dy), bwd-filter
// (x, w = dw, y = dy).
func (b *Backend) gemmConv(dir int, p nn.ConvParams, x, w, y *nn.Tensor) bool {
	if !b.bf16 || b.opts.FP32Activations || b.forceIm2col || b.opts.Conv == ConvIm2col {
		return false
	}
	PQ, CRS := p.P()*p.Q(), p.C*p.R*p.S
	NPQ := p.N * PQ
	xres := false
	if dir != convBwdData { // x is an input (for bwd-data, the output: its record is stale)
		_, xres = b.resident(x)
	}
	switch {
	case p.C%8 == 0 && p.K%8 == 0 && PQ <= b.opts.GemmPlanes && aligned16(x, y) &&
		(dir != convBwdData || b.gemmBwdData || !b.hasCUDNN()):
		need := uint64(NPQ*CRS) * 2
		if dir == convBwdData {
			need *= 2 // float32 column gradients
		}
		if need > uint64(b.opts.ScratchBytes) {
			return false
		}
		b.smallPlaneConv(dir, p, x, w, y)
		return true
	case !xres && CRS <= narrowCRS && dir != convBwdData && p.K%8 == 0 && aligned16(y):
		if uint64(NPQ*CRS)*2 > uint64(b.opts.ScratchBytes) {
			return false
		}
		b.narrowConv(dir, p, x, w, y)
		return true
	}
	return false
}

func (b *Backend) smallPlaneConv(dir int, p nn.ConvParams, x, w, y *nn.Tensor) {
	P, Q := p.P(), p.Q()
	PQ, RS := P*Q, p.R*p.S
	NPQ, RSC := p.N*PQ, RS*p.C
	xd, yd := actDims{p.N, p.C, p.H * p.W}, actDims{p.N, p.K, PQ}
	im2col := func(xb uint64) uint64 {
		col := b.getScratch("gcol", uint64(NPQ*RSC)*2)
		if b.err == nil {
			b.elem("k_nhwc_im2col", NPQ*RSC/8, a(col, xb, p.N, p.C, p.H, p.W, p.R, p.S, P, Q,
				p.StrideH, p.StrideW, p.PadH, p.PadW))
		}
		return col
	}
	switch dir {
	case convFwd:
		xb := b.residentPtr("dnn_x", x, xd)
		wb := b.toNHWC("dnn_w", w, p.K, p.C, RS) // (K, R*S, C)
		col := im2col(xb)
		if b.err != nil {
			return
		}
		if b.ok(b.dev.gemm(gemmCall{m: NPQ, n: p.K, k: RSC, alpha: 1, a: col, lda: RSC, transB: true, b: wb, ldb: RSC,
			c: ptr(y), ldc: p.K, bf16Operands: true, bf16Out: true})) {
			b.setResident(y, yd)
		}
	case convBwdData:
		dyb := b.residentPtr("dnn_y", y, yd)
		wb := b.toNHWC("dnn_w", w, p.K, p.C, RS)
		dcol := b.getScratch("gdcol", uint64(NPQ*RSC)*4)
		if b.err != nil {
			return
		}
		b.ok(b.dev.gemm(gemmCall{m: NPQ, n: RSC, k: p.K, alpha: 1, a: dyb, lda: p.K, b: wb, ldb: RSC,
			c: dcol, ldc: RSC, bf16Operands: true}))
		b.elem("k_nhwc_col2im", xd.numel(), a(x, dcol, p.N, p.C, p.H, p.W, p.R, p.S, P, Q,
			p.StrideH, p.StrideW, p.PadH, p.PadW))
		if b.err == nil {
			b.setResident(x, xd)
		}
	default:
		xb := b.residentPtr("dnn_x", x, xd)
		dyb := b.residentPtr("dnn_y", y, yd)
		col := im2col(xb)
		dwk := b.getScratch("gdw", uint64(p.K*RSC)*4)
		if b.err != nil {
			return
		}
		b.ok(b.dev.gemm(gemmCall{transA: true, m: p.K, n: RSC, k: NPQ, alpha: 1, a: dyb, lda: p.K, b: col, ldb: RSC,
			c: dwk, ldc: RSC, bf16Operands: true}))
		b.elem("k_krsc_to_kcrs_acc", p.K*RSC, a(w, dwk, p.K, p.C, RS))
	}
}

func (b *Backend) narrowConv(dir int, p nn.ConvParams, x, w, y *nn.Tensor) {
	PQ, CRS := p.P()*p.Q(), p.C*p.R*p.S
	NPQ := p.N * PQ
	col := b.getScratch("gcol", uint64(CRS*NPQ)*2) // (C*R*S, N*P*Q)
	if b.err != nil {
		return
	}
	b.im2col("k_im2col_bf16", col, ptr(x), p, p.N)
	if dir == convFwd {
		wb := b.weightOperand(w) // (K, C*R*S) bf16
		if b.err != nil {
			return
		}
		if b.ok(b.dev.gemm(gemmCall{transA: true, m: NPQ, n: p.K, k: CRS, alpha: 1, a: col, lda: NPQ, transB: true, b: wb,
			ldb: CRS, c: ptr(y), ldc: p.K, bf16Operands: true, bf16Out: true})) {
			b.setResident(y, actDims{p.N, p.K, PQ})
		}
		return
	}
	dyb := b.residentPtr("dnn_y", y, actDims{p.N, p.K, PQ})
	if b.err != nil {
		return
	}
	b.ok(b.dev.gemm(gemmCall{transA: true, m: p.K, n: CRS, k: NPQ, alpha: 1, beta: 1, a: dyb, lda: p.K, transB: true,
		b: col, ldb: NPQ, c: ptr(w), ldc: CRS, bf16Operands: true}))
}

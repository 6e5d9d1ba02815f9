//go:build amd64

#include "textflag.h"

// func maxPool3s2RowAVX512(out, idx, in *float32, w, q, r0, nr int, consts *[3][16]int32)
//
// One output row of a 3x3, stride-2, pad-1 max-pool over the plane in
// (w wide): the windows' valid rows are r0 .. r0+nr-1. 16 outputs per
// block; per window element, in row-major order, an element wins when
// it is greater than the best so far or a NaN (maxPoolPlane's rule).
// Columns outside the plane load as -Inf, which never wins.
// consts: {0, 2, .., 30}, {1, 3, .., 31}, {0, 1, .., 15}.
TEXT ·maxPool3s2RowAVX512(SB), NOSPLIT, $0-64
	MOVQ out+0(FP), DI
	MOVQ idx+8(FP), R8
	MOVQ in+16(FP), SI
	MOVQ w+24(FP), R9
	MOVQ q+32(FP), R10
	MOVQ r0+40(FP), R11
	MOVQ nr+48(FP), R12
	MOVQ consts+56(FP), AX
	VMOVDQU32 (AX), Z28    // even lanes {0, 2, .., 30}
	VMOVDQU32 64(AX), Z27  // odd lanes {1, 3, .., 31}
	VMOVDQU32 128(AX), Z31 // iota
	MOVL $0xff800000, AX
	VPBROADCASTD AX, Z29   // -Inf
	VPBROADCASTD R9, Z26   // w
	VPXORD Z25, Z25, Z25
	MOVL $1, AX
	VPBROADCASTD AX, Z24
	MOVL $2, AX
	VPBROADCASTD AX, Z23
	XORQ BX, BX            // first output of the block

block:
	// K7: the block's outputs (q - BX of them, at most 16).
	MOVQ R10, DX
	SUBQ BX, DX
	MOVL $0xffff, AX
	CMPQ DX, $16
	JGE  full
	MOVQ $1, AX
	SHLXQ DX, AX, AX
	DECQ AX

full:
	KMOVW AX, K7

	// R14 = b: column of the first window's first element (2*BX - 1).
	LEAQ -1(BX)(BX*1), R14

	// K1..K4: the columns of loads at b, b+16, b+2, b+18 inside [0, w).
	MOVQ R14, AX
	VPBROADCASTD AX, Z10
	VPADDD Z31, Z10, Z10
	VPCMPD $5, Z25, Z10, K1
	VPCMPD $1, Z26, Z10, K5
	KANDW K5, K1, K1
	LEAQ 16(R14), AX
	VPBROADCASTD AX, Z10
	VPADDD Z31, Z10, Z10
	VPCMPD $5, Z25, Z10, K2
	VPCMPD $1, Z26, Z10, K5
	KANDW K5, K2, K2
	LEAQ 2(R14), AX
	VPBROADCASTD AX, Z10
	VPADDD Z31, Z10, Z10
	VPCMPD $5, Z25, Z10, K3
	VPCMPD $1, Z26, Z10, K5
	KANDW K5, K3, K3
	LEAQ 18(R14), AX
	VPBROADCASTD AX, Z10
	VPADDD Z31, Z10, Z10
	VPCMPD $5, Z25, Z10, K4
	VPCMPD $1, Z26, Z10, K5
	KANDW K5, K4, K4

	// best = -Inf; its index: the window's first element,
	// r0*w + max(b + 2*lane, 0).
	VMOVAPS Z29, Z0
	MOVQ R14, AX
	VPBROADCASTD AX, Z8
	VPADDD Z28, Z8, Z8
	VPMAXSD Z25, Z8, Z8
	MOVQ R11, AX
	IMULQ R9, AX
	VPBROADCASTD AX, Z10
	VPADDD Z10, Z8, Z8

	MOVQ R11, CX // row
	MOVQ R12, DX // rows left

row:
	// R13 = &in[row*w + b]; index base Z16 = row*w + b + 2*lane.
	MOVQ CX, AX
	IMULQ R9, AX
	ADDQ R14, AX
	VPBROADCASTD AX, Z16
	VPADDD Z28, Z16, Z16
	LEAQ (SI)(AX*4), R13

	VMOVAPS Z29, Z1
	VMOVUPS (R13), K1, Z1
	VMOVAPS Z29, Z2
	VMOVUPS 64(R13), K2, Z2
	VMOVAPS Z29, Z3
	VMOVUPS 8(R13), K3, Z3
	VMOVAPS Z29, Z4
	VMOVUPS 72(R13), K4, Z4
	VMOVDQA32 Z28, Z5
	VPERMI2PS Z2, Z1, Z5 // columns b + 2*lane
	VMOVDQA32 Z27, Z6
	VPERMI2PS Z2, Z1, Z6 // b + 1 + 2*lane
	VMOVDQA32 Z28, Z7
	VPERMI2PS Z4, Z3, Z7 // b + 2 + 2*lane

	VCMPPS $0x1e, Z0, Z5, K5 // v > best
	VCMPPS $3, Z5, Z5, K6    // v is a NaN
	KORW K6, K5, K5
	VBLENDMPS Z5, Z0, K5, Z0
	VPBLENDMD Z16, Z8, K5, Z8

	VPADDD Z24, Z16, Z17
	VCMPPS $0x1e, Z0, Z6, K5
	VCMPPS $3, Z6, Z6, K6
	KORW K6, K5, K5
	VBLENDMPS Z6, Z0, K5, Z0
	VPBLENDMD Z17, Z8, K5, Z8

	VPADDD Z23, Z16, Z17
	VCMPPS $0x1e, Z0, Z7, K5
	VCMPPS $3, Z7, Z7, K6
	KORW K6, K5, K5
	VBLENDMPS Z7, Z0, K5, Z0
	VPBLENDMD Z17, Z8, K5, Z8

	INCQ CX
	DECQ DX
	JNZ  row

	VCVTDQ2PS Z8, Z9
	VMOVUPS Z0, K7, (DI)(BX*4)
	VMOVUPS Z9, K7, (R8)(BX*4)
	ADDQ $16, BX
	CMPQ BX, R10
	JLT  block

	VZEROUPPER
	RET

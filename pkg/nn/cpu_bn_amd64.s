//go:build amd64

#include "textflag.h"

// func bnApplyAVX512(y, x, a, b *float32, n, cstep int, relu bool)
//
// y[i] = x[i]*a[i] + b[i] (a rounded multiply, then a rounded add, as the
// Go loop), then max(y, 0) in CPU.ReLU's sense when relu is set (kept
// where y > 0 or y is a NaN, else +0). The coefficient pointers advance
// cstep bytes per 16 elements: 64 for per-element arrays, 0 to repeat one
// 16-value block (a per-plane broadcast).
TEXT ·bnApplyAVX512(SB), NOSPLIT, $0-49
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ a+16(FP), R8
	MOVQ b+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ cstep+40(FP), R10
	MOVBQZX relu+48(FP), R11
	VPXORD Z31, Z31, Z31

loop:
	CMPQ CX, $16
	JLT  tail
	VMOVUPS (SI), Z0
	VMULPS (R8), Z0, Z0
	VADDPS (R9), Z0, Z0
	TESTQ R11, R11
	JZ    store
	VCMPPS $6, Z31, Z0, K1 // not (y <= 0): y > 0 or a NaN
	VMOVAPS.Z Z0, K1, Z0

store:
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ R10, R8
	ADDQ R10, R9
	SUBQ $16, CX
	JMP  loop

tail:
	TESTQ CX, CX
	JZ    done
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K2
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS.Z (R8), K2, Z1
	VMULPS Z1, Z0, Z0
	VMOVUPS.Z (R9), K2, Z1
	VADDPS Z1, Z0, Z0
	TESTQ R11, R11
	JZ    tailstore
	VCMPPS $6, Z31, Z0, K1
	VMOVAPS.Z Z0, K1, Z0

tailstore:
	VMOVUPS Z0, K2, (DI)

done:
	VZEROUPPER
	RET

// func bnBackwardAVX512(dx, dy, x, mu, proj, gm, ws *float32, n, cstep int)
//
// dx[i] = (dy[i] - (x[i]-mu[i])*proj[i] - gm[i]) * ws[i], each operation
// rounded in that order (the Go loop's); coefficients as in bnApplyAVX512.
TEXT ·bnBackwardAVX512(SB), NOSPLIT, $0-72
	MOVQ dx+0(FP), DI
	MOVQ dy+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ mu+24(FP), R8
	MOVQ proj+32(FP), R9
	MOVQ gm+40(FP), R12
	MOVQ ws+48(FP), R13
	MOVQ n+56(FP), CX
	MOVQ cstep+64(FP), R10

bloop:
	CMPQ CX, $16
	JLT  btail
	VMOVUPS (SI), Z0
	VSUBPS (R8), Z0, Z0
	VMULPS (R9), Z0, Z0
	VMOVUPS (DX), Z1
	VSUBPS Z0, Z1, Z1
	VSUBPS (R12), Z1, Z1
	VMULPS (R13), Z1, Z1
	VMOVUPS Z1, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, DX
	ADDQ R10, R8
	ADDQ R10, R9
	ADDQ R10, R12
	ADDQ R10, R13
	SUBQ $16, CX
	JMP  bloop

btail:
	TESTQ CX, CX
	JZ    bdone
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K2
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS.Z (R8), K2, Z2
	VSUBPS Z2, Z0, Z0
	VMOVUPS.Z (R9), K2, Z2
	VMULPS Z2, Z0, Z0
	VMOVUPS.Z (DX), K2, Z1
	VSUBPS Z0, Z1, Z1
	VMOVUPS.Z (R12), K2, Z2
	VSUBPS Z2, Z1, Z1
	VMOVUPS.Z (R13), K2, Z2
	VMULPS Z2, Z1, Z1
	VMOVUPS Z1, K2, (DI)

bdone:
	VZEROUPPER
	RET

// LANETREE adds the 16 float64 lanes lo (lanes 0-7) and hi (8-15) as
// t_j = l_j + l_(j+8), then t_j + t_(j+4), then + t_(j+2), then t_0 + t_1
// (laneTree's order), leaving the sum in the low element of lo's xmm.
#define LANETREE(lo, hi, ylo, yt, xlo, xt) \
	VADDPD hi, lo, lo \
	VEXTRACTF64X4 $1, lo, yt \
	VADDPD yt, ylo, ylo \
	VEXTRACTF128 $1, ylo, xt \
	VADDPD xt, xlo, xlo \
	VPERMILPD $1, xlo, xt \
	VADDSD xt, xlo, xlo

// func sumSqAVX512(x *float32, n int, out *[2]float64)
//
// out = {Σ x, Σ x*x} in float64 over 16 lanes (element i in lane i%16),
// combined by LANETREE: sumSqWide's order. n >= 1.
TEXT ·sumSqAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), DI
	VXORPD Z0, Z0, Z0
	VXORPD Z1, Z1, Z1
	VXORPD Z2, Z2, Z2
	VXORPD Z3, Z3, Z3

sqloop:
	CMPQ CX, $16
	JLT  sqtail
	VCVTPS2PD (SI), Z4
	VCVTPS2PD 32(SI), Z5
	VADDPD Z4, Z0, Z0
	VADDPD Z5, Z1, Z1
	VMULPD Z4, Z4, Z6 // exact: a float32 squared fits a float64
	VMULPD Z5, Z5, Z7
	VADDPD Z6, Z2, Z2
	VADDPD Z7, Z3, Z3
	ADDQ $64, SI
	SUBQ $16, CX
	JMP  sqloop

sqtail:
	TESTQ CX, CX
	JZ    sqdone
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K1
	KSHIFTRW $8, K1, K2
	VMOVUPS.Z (SI), K1, Z8
	VCVTPS2PD Y8, Z4
	VEXTRACTF64X4 $1, Z8, Y9
	VCVTPS2PD Y9, Z5
	VADDPD Z4, Z0, K1, Z0 // lanes past the end keep their sums
	VADDPD Z5, Z1, K2, Z1
	VMULPD Z4, Z4, Z6
	VMULPD Z5, Z5, Z7
	VADDPD Z6, Z2, K1, Z2
	VADDPD Z7, Z3, K2, Z3

sqdone:
	LANETREE(Z0, Z1, Y0, Y10, X0, X10)
	LANETREE(Z2, Z3, Y2, Y11, X2, X11)
	MOVSD X0, (DI)
	MOVSD X2, 8(DI)
	VZEROUPPER
	RET

// func bnBwdSumsAVX512(dy, y, x *float32, n int, mu float64, mask bool, out *[2]float64)
//
// out = {Σ d, Σ d*(x-mu)} in float64 over 16 lanes as sumSqAVX512, with
// d = dy, or, when mask is set, d = dy where y > 0 (else +0), stored back
// into dy (ReLU's backward): bnBwdSumsWide's order. n >= 1.
TEXT ·bnBwdSumsAVX512(SB), NOSPLIT, $0-56
	MOVQ dy+0(FP), DX
	MOVQ y+8(FP), R8
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	VBROADCASTSD mu+32(FP), Z31
	MOVBQZX mask+40(FP), R11
	MOVQ out+48(FP), DI
	VXORPS Z30, Z30, Z30
	VXORPD Z0, Z0, Z0
	VXORPD Z1, Z1, Z1
	VXORPD Z2, Z2, Z2
	VXORPD Z3, Z3, Z3

bsloop:
	CMPQ CX, $16
	JLT  bstail
	VMOVUPS (DX), Z6
	TESTQ R11, R11
	JZ    bsnomask
	VMOVUPS (R8), Z7
	VCMPPS $0x1e, Z30, Z7, K3 // y > 0, not a NaN
	VMOVAPS.Z Z6, K3, Z6
	VMOVUPS Z6, (DX)

bsnomask:
	VCVTPS2PD Y6, Z4
	VEXTRACTF64X4 $1, Z6, Y7
	VCVTPS2PD Y7, Z5
	VADDPD Z4, Z0, Z0
	VADDPD Z5, Z1, Z1
	VCVTPS2PD (SI), Z8
	VCVTPS2PD 32(SI), Z9
	VSUBPD Z31, Z8, Z8
	VSUBPD Z31, Z9, Z9
	VMULPD Z4, Z8, Z8
	VMULPD Z5, Z9, Z9
	VADDPD Z8, Z2, Z2
	VADDPD Z9, Z3, Z3
	ADDQ $64, DX
	ADDQ $64, R8
	ADDQ $64, SI
	SUBQ $16, CX
	JMP  bsloop

bstail:
	TESTQ CX, CX
	JZ    bsdone
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K1
	KSHIFTRW $8, K1, K2
	VMOVUPS.Z (DX), K1, Z6
	TESTQ R11, R11
	JZ    bstailnomask
	VMOVUPS.Z (R8), K1, Z7
	VCMPPS $0x1e, Z30, Z7, K3
	VMOVAPS.Z Z6, K3, Z6
	VMOVUPS Z6, K1, (DX)

bstailnomask:
	VCVTPS2PD Y6, Z4
	VEXTRACTF64X4 $1, Z6, Y7
	VCVTPS2PD Y7, Z5
	VADDPD Z4, Z0, K1, Z0
	VADDPD Z5, Z1, K2, Z1
	VMOVUPS.Z (SI), K1, Z10
	VCVTPS2PD Y10, Z8
	VEXTRACTF64X4 $1, Z10, Y11
	VCVTPS2PD Y11, Z9
	VSUBPD Z31, Z8, Z8
	VSUBPD Z31, Z9, Z9
	VMULPD Z4, Z8, Z8
	VMULPD Z5, Z9, Z9
	VADDPD Z8, Z2, K1, Z2
	VADDPD Z9, Z3, K2, Z3

bsdone:
	LANETREE(Z0, Z1, Y0, Y10, X0, X10)
	LANETREE(Z2, Z3, Y2, Y11, X2, X11)
	MOVSD X0, (DI)
	MOVSD X2, 8(DI)
	VZEROUPPER
	RET

//go:build amd64

#include "textflag.h"

// func sgdMomentumAVX512(p, grad, buf *float32, n int, wd, mom, negLR float32)
//
// n is a multiple of 16. Per element, in SGDStep's order:
//	d = fma(p, wd, g); b = d + buf*mom; buf = b; p = fma(b, negLR, p)
TEXT ·sgdMomentumAVX512(SB), NOSPLIT, $0-44
	MOVQ p+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ buf+16(FP), DX
	MOVQ n+24(FP), CX
	MOVSS wd+32(FP), X0
	VBROADCASTSS X0, Z29
	MOVSS mom+36(FP), X0
	VBROADCASTSS X0, Z30
	MOVSS negLR+40(FP), X0
	VBROADCASTSS X0, Z31
	SHRQ $4, CX
	JZ done

loop:
	VMOVUPS (DI), Z0
	VMOVUPS (SI), Z1
	VFMADD231PS Z29, Z0, Z1
	VMULPS (DX), Z30, Z2
	VADDPS Z2, Z1, Z2
	VMOVUPS Z2, (DX)
	VFMADD231PS Z31, Z2, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, DI
	ADDQ $64, SI
	ADDQ $64, DX
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

//go:build amd64

#include "textflag.h"

// func addAVX512(y, a, b *float32, n int, relu bool)
//
// y[i] = a[i] + b[i] (one rounded add, as the Go loop; y may alias a or
// b), then, when relu is set, CPU.ReLU's max(y, 0): kept where y > 0 or y
// is a NaN, else +0.
TEXT ·addAVX512(SB), NOSPLIT, $0-33
	MOVQ y+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	MOVBQZX relu+32(FP), R11
	VPXORD Z31, Z31, Z31

aloop:
	CMPQ CX, $16
	JLT  atail
	VMOVUPS (SI), Z0
	VADDPS (DX), Z0, Z0
	TESTQ R11, R11
	JZ    astore
	VCMPPS $6, Z31, Z0, K2 // not (y <= 0)
	VMOVAPS.Z Z0, K2, Z0

astore:
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  aloop

atail:
	TESTQ CX, CX
	JZ    adone
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z (DX), K1, Z1
	VADDPS Z1, Z0, Z0
	TESTQ R11, R11
	JZ    atstore
	VCMPPS $6, Z31, Z0, K2
	VMOVAPS.Z Z0, K2, Z0

atstore:
	VMOVUPS Z0, K1, (DI)

adone:
	VZEROUPPER
	RET

// func reluMaskAVX512(dx, dy, y *float32, n int)
//
// dx[i] = dy[i] where y[i] > 0 (not a NaN), else +0: ReLUBackward.
TEXT ·reluMaskAVX512(SB), NOSPLIT, $0-32
	MOVQ dx+0(FP), DI
	MOVQ dy+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX
	VPXORD Z31, Z31, Z31

rloop:
	CMPQ CX, $16
	JLT  rtail
	VMOVUPS (DX), Z1
	VCMPPS $0x1e, Z31, Z1, K2 // y > 0, ordered
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  rloop

rtail:
	TESTQ CX, CX
	JZ    rdone
	MOVQ $1, AX
	SHLXQ CX, AX, AX
	DECQ AX
	KMOVW AX, K1
	VMOVUPS.Z (DX), K1, Z1
	VCMPPS $0x1e, Z31, Z1, K2
	KANDW K1, K2, K2
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS Z0, K1, (DI)

rdone:
	VZEROUPPER
	RET

//go:build amd64

#include "textflag.h"

// func copySegsAVX512(dst, src *float32, rowOff *int, rows, stride4 int, segs *asmSeg, nseg int)
//
// For each row: base = src + 4*rowOff[r]; for each segment (pos, off, mlo,
// mhi): masked zmm load of up to 16 floats at base+4*off (lanes mlo) and
// store at dst+4*pos, then the same for lanes 16..31 (mhi) when mhi != 0.
// Masked-off lanes are neither read nor written (AVX-512 fault suppression),
// so no byte outside the validated ranges is touched.
TEXT ·copySegsAVX512(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ rowOff+16(FP), R8
	MOVQ rows+24(FP), CX
	MOVQ stride4+32(FP), R9
	MOVQ segs+40(FP), R10
	MOVQ nseg+48(FP), R11

row:
	MOVQ (R8), AX
	LEAQ (SI)(AX*4), BX
	MOVQ R10, R12
	MOVQ R11, R13

seg:
	MOVQ 0(R12), AX
	MOVQ 8(R12), DX
	KMOVW 16(R12), K1
	VMOVUPS.Z (BX)(DX*4), K1, Z0
	VMOVUPS Z0, K1, (DI)(AX*4)
	MOVQ 24(R12), R14
	TESTQ R14, R14
	JZ next
	KMOVW 24(R12), K2
	VMOVUPS.Z 64(BX)(DX*4), K2, Z1
	VMOVUPS Z1, K2, 64(DI)(AX*4)

next:
	ADDQ $32, R12
	DECQ R13
	JNZ seg
	ADDQ R9, DI
	ADDQ $8, R8
	DECQ CX
	JNZ row
	VZEROUPPER
	RET

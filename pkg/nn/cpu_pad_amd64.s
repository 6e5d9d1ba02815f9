//go:build amd64

#include "textflag.h"

// func padPlanesAVX512(dst, src *float32, planes, h, w, wp, ph, off int)
//
// For each of planes planes: clears dst's plane (ph floats), then copies
// the h rows of w floats (w <= 16) of src's plane (h*w floats) to dst at
// off + y*wp: padInput's zero-bordered layout, one masked store per row.
TEXT ·padPlanesAVX512(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ planes+16(FP), CX
	MOVQ h+24(FP), R8
	MOVQ w+32(FP), R9
	MOVQ wp+40(FP), R10
	MOVQ ph+48(FP), R11
	MOVQ off+56(FP), R12
	MOVQ $1, AX
	SHLXQ R9, AX, AX
	DECQ AX
	KMOVW AX, K1 // a row
	MOVQ R11, AX
	ANDQ $15, AX
	MOVQ $1, BX
	SHLXQ AX, BX, BX
	DECQ BX
	KMOVW BX, K2 // the plane's last partial block
	MOVQ R11, R13
	SHRQ $4, R13 // its full blocks
	SHLQ $2, R9
	SHLQ $2, R10
	SHLQ $2, R11
	SHLQ $2, R12
	VPXORD Z0, Z0, Z0

plane:
	MOVQ DI, AX
	MOVQ R13, DX

zero:
	TESTQ DX, DX
	JZ    zpart
	VMOVUPS Z0, (AX)
	ADDQ $64, AX
	DECQ DX
	JMP  zero

zpart:
	VMOVUPS Z0, K2, (AX)
	LEAQ (DI)(R12*1), AX
	MOVQ R8, DX

row:
	VMOVUPS.Z (SI), K1, Z1
	VMOVUPS Z1, K1, (AX)
	ADDQ R9, SI
	ADDQ R10, AX
	DECQ DX
	JNZ  row
	ADDQ R11, DI
	DECQ CX
	JNZ  plane
	VZEROUPPER
	RET

// func padPhaseAVX512(dst, src *float32, planes, h, w, padH, padW, hs, ws int, consts *[3][16]int32)
//
// padInput's stride-2 layout for w <= 32: per plane, clears the four phase
// planes (4*hs*ws floats), then splits each src row into its even and odd
// padded columns (permutes of two masked loads) and stores each run into
// its phase plane's row. consts: laneTables ({0, 2, ..}, {1, 3, ..}).
TEXT ·padPhaseAVX512(SB), NOSPLIT, $0-80
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ w+32(FP), R9
	MOVQ consts+72(FP), AX
	VMOVDQU32 (AX), Z28   // {0, 2, .., 30}
	VMOVDQU32 64(AX), Z27 // {1, 3, .., 31}
	VPXORD Z0, Z0, Z0

	// Source row masks: K1 lanes 0-15, K2 lanes 16-31 of w.
	MOVQ R9, AX
	CMPQ AX, $16
	JLE  m1
	MOVQ $16, AX

m1:
	MOVQ $1, BX
	SHLXQ AX, BX, BX
	DECQ BX
	KMOVW BX, K1
	MOVQ R9, AX
	SUBQ $16, AX
	JGE  m2
	XORQ AX, AX

m2:
	MOVQ $1, BX
	SHLXQ AX, BX, BX
	DECQ BX
	KMOVW BX, K2

	// Run b (b = 0: even padded columns, 1: odd): first source column
	// wb = (b - padW) & 1, first position pb = (padW + wb) >> 1, length
	// nb = (w - wb + 1) >> 1 (mask K3, K4), permute table Z5 / Z6.
	MOVQ padW+48(FP), R10
	MOVQ R10, AX
	NEGQ AX
	ANDQ $1, AX // w0
	MOVQ R10, R12
	ADDQ AX, R12
	SHRQ $1, R12 // p0
	MOVQ R9, BX
	SUBQ AX, BX
	INCQ BX
	SHRQ $1, BX // n0
	MOVQ $1, DX
	SHLXQ BX, DX, DX
	DECQ DX
	KMOVW DX, K3
	VMOVDQA32 Z28, Z5
	TESTQ AX, AX
	JZ    t0
	VMOVDQA32 Z27, Z5

t0:
	MOVQ $1, CX
	SUBQ AX, CX // w1
	MOVQ R10, R13
	ADDQ CX, R13
	SHRQ $1, R13 // p1
	MOVQ R9, BX
	SUBQ CX, BX
	INCQ BX
	SHRQ $1, BX // n1
	MOVQ $1, DX
	SHLXQ BX, DX, DX
	DECQ DX
	KMOVW DX, K4
	VMOVDQA32 Z28, Z6
	TESTQ CX, CX
	JZ    t1
	VMOVDQA32 Z27, Z6

t1:
	MOVQ hs+56(FP), AX
	MOVQ ws+64(FP), R11
	IMULQ R11, AX
	SHLQ $2, AX
	MOVQ AX, R14 // phase plane bytes
	SHLQ $2, R11 // phase row bytes
	SHLQ $2, R12 // p0 bytes
	SHLQ $2, R13 // p1 bytes
	SHLQ $2, R9  // src row bytes
	MOVQ planes+16(FP), CX

pplane:
	// Clear the four phase planes (4*hs*ws floats, hs*ws*16 bytes).
	MOVQ DI, AX
	MOVQ R14, DX
	SHLQ $2, DX
	LEAQ (DI)(DX*1), R15

pzero:
	MOVQ R15, BX
	SUBQ AX, BX
	CMPQ BX, $64
	JLT  pzpart
	VMOVUPS Z0, (AX)
	ADDQ $64, AX
	JMP  pzero

pzpart:
	SHRQ $2, BX
	MOVQ $1, DX
	SHLXQ BX, DX, DX
	DECQ DX
	KMOVW DX, K5
	VMOVUPS Z0, K5, (AX)

	MOVQ padH+40(FP), R8 // padded row y
	MOVQ h+24(FP), BX    // rows left

prow:
	VMOVUPS.Z (SI), K1, Z1
	VMOVUPS.Z 64(SI), K2, Z2
	// Row base: phase plane (y&1)*2 (+1 for odd columns), row y>>1.
	MOVQ R8, AX
	ANDQ $1, AX
	SHLQ $1, AX
	IMULQ R14, AX
	MOVQ R8, DX
	SHRQ $1, DX
	IMULQ R11, DX
	ADDQ DX, AX
	ADDQ DI, AX // &plane (y&1)*2, row y>>1
	VMOVDQA32 Z5, Z3
	VPERMI2PS Z2, Z1, Z3
	VMOVUPS Z3, K3, (AX)(R12*1)
	ADDQ R14, AX // the odd-column plane
	VMOVDQA32 Z6, Z4
	VPERMI2PS Z2, Z1, Z4
	VMOVUPS Z4, K4, (AX)(R13*1)
	ADDQ R9, SI
	INCQ R8
	DECQ BX
	JNZ  prow

	LEAQ (DI)(R14*4), DI
	DECQ CX
	JNZ  pplane
	VZEROUPPER
	RET

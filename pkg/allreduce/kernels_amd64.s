#include "textflag.h"

// func addF32Blocks(dst, src []float32)
// dst[i] = dst[i] + src[i] for i < len(dst) rounded down to a multiple of
// 16; len(src) >= len(dst). SSE2 only (every amd64 has it).
TEXT ·addF32Blocks(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	SHRQ $4, CX
	JZ   done

loop:
	MOVUPS 0(DI), X0
	MOVUPS 16(DI), X1
	MOVUPS 32(DI), X2
	MOVUPS 48(DI), X3
	MOVUPS 0(SI), X4
	MOVUPS 16(SI), X5
	MOVUPS 32(SI), X6
	MOVUPS 48(SI), X7
	ADDPS  X4, X0
	ADDPS  X5, X1
	ADDPS  X6, X2
	ADDPS  X7, X3
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	ADDQ   $64, DI
	ADDQ   $64, SI
	DECQ   CX
	JNZ    loop

done:
	RET

// func addF32ToBlocks(dst, a, b []float32)
// dst[i] = a[i] + b[i] for i < len(dst) rounded down to a multiple of 16;
// len(a), len(b) >= len(dst). a is the first operand, as in addF32Blocks.
TEXT ·addF32ToBlocks(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ a_base+24(FP), SI
	MOVQ b_base+48(FP), DX
	SHRQ $4, CX
	JZ   todone

toloop:
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	MOVUPS 0(DX), X4
	MOVUPS 16(DX), X5
	MOVUPS 32(DX), X6
	MOVUPS 48(DX), X7
	ADDPS  X4, X0
	ADDPS  X5, X1
	ADDPS  X6, X2
	ADDPS  X7, X3
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	ADDQ   $64, DI
	ADDQ   $64, SI
	ADDQ   $64, DX
	DECQ   CX
	JNZ    toloop

todone:
	RET

// func addF32DualBlocks(dst, out, src []float32)
// dst[i] = dst[i] + src[i]; out[i] = dst[i], for i < len(dst) rounded
// down to a multiple of 16; len(out), len(src) >= len(dst).
TEXT ·addF32DualBlocks(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ out_base+24(FP), DX
	MOVQ src_base+48(FP), SI
	SHRQ $4, CX
	JZ   dualdone

dualloop:
	MOVUPS 0(DI), X0
	MOVUPS 16(DI), X1
	MOVUPS 32(DI), X2
	MOVUPS 48(DI), X3
	MOVUPS 0(SI), X4
	MOVUPS 16(SI), X5
	MOVUPS 32(SI), X6
	MOVUPS 48(SI), X7
	ADDPS  X4, X0
	ADDPS  X5, X1
	ADDPS  X6, X2
	ADDPS  X7, X3
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	MOVUPS X0, 0(DX)
	MOVUPS X1, 16(DX)
	MOVUPS X2, 32(DX)
	MOVUPS X3, 48(DX)
	ADDQ   $64, DI
	ADDQ   $64, SI
	ADDQ   $64, DX
	DECQ   CX
	JNZ    dualloop

dualdone:
	RET

// func copyF32DualBlocks(dst, out, src []float32)
// dst[i] = src[i]; out[i] = src[i], for i < len(dst) rounded down to a
// multiple of 16; len(out), len(src) >= len(dst). One read, two writes.
TEXT ·copyF32DualBlocks(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ out_base+24(FP), DX
	MOVQ src_base+48(FP), SI
	SHRQ $4, CX
	JZ   cpdone

cploop:
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	MOVUPS X0, 0(DX)
	MOVUPS X1, 16(DX)
	MOVUPS X2, 32(DX)
	MOVUPS X3, 48(DX)
	ADDQ   $64, DI
	ADDQ   $64, SI
	ADDQ   $64, DX
	DECQ   CX
	JNZ    cploop

cpdone:
	RET

// func copyF32DualStreamBlocks(dst, out, src []float32)
// dst[i] = src[i]; out[i] = src[i], for i < len(dst) rounded down to a
// multiple of 16; len(out), len(src) >= len(dst); dst 16-byte aligned.
// dst is written with non-temporal stores (no read for ownership, not
// kept in cache), out with ordinary ones; an SFENCE at the end makes the
// streamed stores globally visible before the function returns.
TEXT ·copyF32DualStreamBlocks(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ out_base+24(FP), DX
	MOVQ src_base+48(FP), SI
	SHRQ $4, CX
	JZ   csdone

csloop:
	MOVUPS  0(SI), X0
	MOVUPS  16(SI), X1
	MOVUPS  32(SI), X2
	MOVUPS  48(SI), X3
	MOVNTPS X0, 0(DI)
	MOVNTPS X1, 16(DI)
	MOVNTPS X2, 32(DI)
	MOVNTPS X3, 48(DI)
	MOVUPS  X0, 0(DX)
	MOVUPS  X1, 16(DX)
	MOVUPS  X2, 32(DX)
	MOVUPS  X3, 48(DX)
	ADDQ    $64, DI
	ADDQ    $64, SI
	ADDQ    $64, DX
	DECQ    CX
	JNZ     csloop

csdone:
	SFENCE
	RET

// func copyF32StreamBlocks(dst, src []float32)
// dst[i] = src[i] for i < len(dst) rounded down to a multiple of 16;
// len(src) >= len(dst); dst 16-byte aligned; non-temporal stores, then
// SFENCE.
TEXT ·copyF32StreamBlocks(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	SHRQ $4, CX
	JZ   stdone

stloop:
	MOVUPS  0(SI), X0
	MOVUPS  16(SI), X1
	MOVUPS  32(SI), X2
	MOVUPS  48(SI), X3
	MOVNTPS X0, 0(DI)
	MOVNTPS X1, 16(DI)
	MOVNTPS X2, 32(DI)
	MOVNTPS X3, 48(DI)
	ADDQ    $64, DI
	ADDQ    $64, SI
	DECQ    CX
	JNZ     stloop

stdone:
	SFENCE
	RET

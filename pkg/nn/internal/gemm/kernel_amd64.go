//go:build amd64

package gemm

import (
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// Assembly micro-kernels (kernel_amd64.s); contract as kernel.fn with raw
// pointers. They read k*mr values at a and k*nr at b, and the tile at c.
//
//go:noescape
func kern14x32(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kern6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

var (
	avx512 = &kernel{name: "avx512", mr: 14, nr: 32, kc: 256, mc: 14 * 72, nc: 512, fn: kernAVX512}
	avx2   = &kernel{name: "avx2", mr: 6, nr: 16, kc: 256, mc: 6 * 168, nc: 512, fn: kernAVX2}
)

func kernAVX512(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	_, _ = a[14*k-1], b[32*k-1] // bounds: the kernel reads this much
	_ = c[13*ldc+31]
	kern14x32(k, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

func kernAVX2(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	_, _ = a[6*k-1], b[16*k-1]
	_ = c[5*ldc+15]
	kern6x16(k, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

//go:generate go run ./asmgen -o kernel_amd64.s

// archKernels lists the assembly paths this CPU and OS support, best first.
func archKernels() []*kernel {
	var ks []*kernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, avx512)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2)
	}
	return ks
}

//go:noescape
func packGather(dst, src *float32, idx *int32, kc, w4, mlo, mhi int)

//go:noescape
func packTr16(dst, src *float32, ld4, kb, w4, h int)

//go:noescape
func packTr8(dst, src *float32, ld4, kb, w4, h int, mask *int32)

//go:noescape
func packCopyMask(dst, src *float32, ld4, kc, w4, mlo, mhi int)

//go:noescape
func packCopy8(dst, src *float32, ld4, kc, w int)

// The avx512 path packs with AVX-512 transposes and masked copies; the
// avx2 path uses only AVX instructions (8x8 transposes, ymm copies), so
// forcing it on an AVX-512 machine behaves as on an AVX2-only CPU.
func init() {
	avx512.packT, avx512.packCopy = packTransposeAVX512, packCopyAVX512
	avx2.packT, avx2.packCopy = packTransposeAVX, packCopyAVX
}

// packTransposeAVX512 is packT for panel widths up to 32: 16x16 register
// transposes for whole blocks of 16 k, gathers for the remaining k.
func packTransposeAVX512(dst, src []float32, ld, kc, w int) bool {
	if w > 32 || w < 1 || kc < 1 || (w-1)*ld > math.MaxInt32/4 {
		return false
	}
	_, _ = dst[w*kc-1], src[(w-1)*ld+kc-1]
	kb := kc / 16
	if kb > 0 {
		for g := 0; g*16 < w; g++ {
			packTr16(&dst[16*g], &src[16*g*ld], 4*ld, kb, 4*w, min(16, w-16*g))
		}
	}
	p0 := kb * 16
	if p0 == kc {
		return true
	}
	var idx [32]int32
	for r := 0; r < w; r++ {
		idx[r] = int32(r * ld)
	}
	lo, hi := min(w, 16), max(w-16, 0)
	packGather(&dst[p0*w], &src[p0], &idx[0], kc-p0, 4*w, 1<<lo-1, 1<<hi-1)
	return true
}

// laneMasks[h] has -1 in the first h of 8 lanes: VMASKMOVPS masks.
var laneMasks = func() (m [9][8]int32) {
	for h := range m {
		for i := 0; i < h; i++ {
			m[h][i] = -1
		}
	}
	return m
}()

// packTransposeAVX is packT with AVX 8x8 register transposes for whole
// blocks of 8 k, and Go for the remaining k.
func packTransposeAVX(dst, src []float32, ld, kc, w int) bool {
	if w < 1 || kc < 1 {
		return false
	}
	_, _ = dst[w*kc-1], src[(w-1)*ld+kc-1]
	kb := kc / 8
	if kb > 0 {
		for g := 0; g*8 < w; g++ {
			h := min(8, w-8*g)
			packTr8(&dst[8*g], &src[8*g*ld], 4*ld, kb, 4*w, h, &laneMasks[h][0])
		}
	}
	for r := 0; r < w; r++ {
		for p := kb * 8; p < kc; p++ {
			dst[p*w+r] = src[r*ld+p]
		}
	}
	return true
}

// packCopyAVX512 is packCopy with masked zmm moves, for widths up to 32.
func packCopyAVX512(dst, src []float32, ld, kc, w int) bool {
	if w > 32 || w < 1 || kc < 1 {
		return false
	}
	_, _ = dst[w*kc-1], src[(kc-1)*ld+w-1]
	lo, hi := min(w, 16), max(w-16, 0)
	packCopyMask(unsafe.SliceData(dst), unsafe.SliceData(src), 4*ld, kc, 4*w, 1<<lo-1, 1<<hi-1)
	return true
}

// packCopyAVX is packCopy with ymm moves, for widths that are multiples of 8.
func packCopyAVX(dst, src []float32, ld, kc, w int) bool {
	if w%8 != 0 || w < 8 || kc < 1 {
		return false
	}
	_, _ = dst[w*kc-1], src[(kc-1)*ld+w-1]
	packCopy8(unsafe.SliceData(dst), unsafe.SliceData(src), ld*4, kc, w)
	return true
}

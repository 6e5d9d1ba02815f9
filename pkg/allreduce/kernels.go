package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The element kernels of the ring. Payload bytes are little-endian; on a
// little-endian host (checked in NewRing) float32 payloads are copied and
// added without per-element decoding when the pieces are 4-byte aligned.

// hostLittleEndian reports whether the host stores integers little-endian.
func hostLittleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// f32Bytes views v as bytes (no copy).
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// alignedF32 views b (a multiple of 4 bytes) as float32 when its address is
// 4-byte aligned.
func alignedF32(b []byte) ([]float32, bool) {
	if len(b) == 0 {
		return nil, true
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}

// bf16FromF32 rounds f to bfloat16, to nearest even; NaN stays NaN.
func bf16FromF32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it quiet and non-zero
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// f32FromBF16 widens a bfloat16 exactly.
func f32FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// roundBF16 rounds every element of v to the nearest bfloat16 in place.
func roundBF16(v []float32) {
	for i, f := range v {
		v[i] = f32FromBF16(bf16FromF32(f))
	}
}

// encode writes src into dst in dtype d; len(dst) == len(src)*d.Size().
func encode(dst []byte, src []float32, d DType) {
	if d == DTypeBF16 {
		dst = dst[:2*len(src)]
		for i, f := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], bf16FromF32(f))
		}
		return
	}
	copy(dst, f32Bytes(src))
}

// forEachRun splits the concatenation of pieces into runs of whole elements
// of esize bytes and calls fn(first element, bytes) for each, in order. An
// element split across pieces is passed alone, from a small copy.
func forEachRun(pieces [][]byte, esize int, fn func(elem int, b []byte)) {
	var carry [4]byte
	nc, elem := 0, 0
	for _, p := range pieces {
		if nc > 0 {
			k := copy(carry[nc:esize], p)
			nc += k
			p = p[k:]
			if nc < esize {
				continue
			}
			fn(elem, carry[:esize])
			elem++
			nc = 0
		}
		whole := len(p) / esize * esize
		if whole > 0 {
			fn(elem, p[:whole])
			elem += whole / esize
		}
		nc = copy(carry[:], p[whole:])
	}
}

// addRun adds the elements in b (dtype d) into dst: dst[i] = b[i] + dst[i].
func addRun(dst []float32, b []byte, d DType) {
	if d == DTypeBF16 {
		n := len(b) / 2
		dst = dst[:n]
		for i := range dst {
			dst[i] += f32FromBF16(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return
	}
	if src, ok := alignedF32(b); ok {
		addF32(dst[:len(src)], src)
		return
	}
	n := len(b) / 4
	dst = dst[:n]
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// copyRun stores the elements in b (dtype d) into dst.
func copyRun(dst []float32, b []byte, d DType) {
	if d == DTypeBF16 {
		n := len(b) / 2
		dst = dst[:n]
		for i := range dst {
			dst[i] = f32FromBF16(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return
	}
	copy(f32Bytes(dst[:len(b)/4]), b)
}

// addF32 sets dst[i] = dst[i] + src[i] (len(src) >= len(dst)): the bulk
// in addF32Blocks (SIMD on amd64), the tail here. Every element is one
// float32 addition with the operands in the same order as a plain loop
// (dst first, which decides a NaN's payload), so the bits are the same on
// every path and every worker.
func addF32(dst, src []float32) {
	src = src[:len(dst)]
	n := len(dst) / addF32Block * addF32Block
	if n > 0 {
		addF32Blocks(dst[:n], src[:n])
	}
	for i := n; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// addF32To sets dst[i] = a[i] + b[i] (len(a), len(b) >= len(dst)): the
// fused reduce-scatter step that writes the sum of the incoming partial
// sum and this rank's values straight into the outgoing frame. Same
// operand order as addF32 (a plays dst's part), so the same bits.
func addF32To(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	n := len(dst) / addF32Block * addF32Block
	if n > 0 {
		addF32ToBlocks(dst[:n], a[:n], b[:n])
	}
	for i := n; i < len(dst); i++ {
		dst[i] = a[i] + b[i]
	}
}

// addF32Dual sets dst[i] = dst[i] + src[i] and out[i] = dst[i] (len(out),
// len(src) >= len(dst)): the last reduce-scatter step, which keeps the
// finished sum and forwards it in the same pass.
func addF32Dual(dst, out, src []float32) {
	out, src = out[:len(dst)], src[:len(dst)]
	n := len(dst) / addF32Block * addF32Block
	if n > 0 {
		addF32DualBlocks(dst[:n], out[:n], src[:n])
	}
	for i := n; i < len(dst); i++ {
		dst[i] += src[i]
		out[i] = dst[i]
	}
}

// copyF32Dual sets dst[i] = out[i] = src[i] (len(out), len(src) >=
// len(dst)): an all-gather step that stores and forwards from one read.
func copyF32Dual(dst, out, src []float32) {
	out, src = out[:len(dst)], src[:len(dst)]
	n := len(dst) / addF32Block * addF32Block
	if n > 0 {
		copyF32DualBlocks(dst[:n], out[:n], src[:n])
	}
	copy(dst[n:], src[n:])
	copy(out[n:], src[n:])
}

// streamHead is how many leading elements of dst precede its first
// 16-byte boundary (the non-temporal kernels need an aligned dst).
func streamHead(dst []float32) int {
	if len(dst) == 0 {
		return 0
	}
	mis := int(uintptr(unsafe.Pointer(&dst[0])) & 15)
	return min(len(dst), (16-mis)&15/4)
}

// copyF32DualStream is copyF32Dual with dst written by non-temporal
// stores: no read of dst's old contents into the cache and no eviction of
// what is there (out, a shared-memory slot the neighbour reads next, is
// written normally). For an all-gather into a vector far larger than the
// cache, whose lines would be fetched only to be overwritten. The values
// are the same bits as copyF32Dual's; the stores are fenced before it
// returns.
func copyF32DualStream(dst, out, src []float32) {
	out, src = out[:len(dst)], src[:len(dst)]
	h := streamHead(dst)
	copy(dst[:h], src[:h])
	copy(out[:h], src[:h])
	n := h + (len(dst)-h)/addF32Block*addF32Block
	if n > h {
		copyF32DualStreamBlocks(dst[h:n], out[h:n], src[h:n])
	}
	copy(dst[n:], src[n:])
	copy(out[n:], src[n:])
}

// copyF32Stream sets dst[i] = src[i] (len(src) >= len(dst)) with
// non-temporal stores, as copyF32DualStream does for dst.
func copyF32Stream(dst, src []float32) {
	src = src[:len(dst)]
	h := streamHead(dst)
	copy(dst[:h], src[:h])
	n := h + (len(dst)-h)/addF32Block*addF32Block
	if n > h {
		copyF32StreamBlocks(dst[h:n], src[h:n])
	}
	copy(dst[n:], src[n:])
}

// addPieces adds a received payload into dst; copyPieces stores it.
func addPieces(dst []float32, pieces [][]byte, d DType) {
	forEachRun(pieces, d.Size(), func(e int, b []byte) { addRun(dst[e:], b, d) })
}

func copyPieces(dst []float32, pieces [][]byte, d DType) {
	forEachRun(pieces, d.Size(), func(e int, b []byte) { copyRun(dst[e:], b, d) })
}

// piecesLen returns the total length of pieces.
func piecesLen(pieces [][]byte) int {
	n := 0
	for _, p := range pieces {
		n += len(p)
	}
	return n
}

// The Device kernels' arithmetic on host slices, defined once: the host
// ring's small path sums with SumRanks64, and the CPU twins of a Device
// (MemDevice, ipcbench's file device) run these for RingAdd, RingDiv and
// RingSum64, so that a twin computes exactly what the ring promises.

// AddDiv sets a[i] = a[i] + b[i] (float32), then a[i] / div when div != 0
// (Device.RingAdd).
func AddDiv(a, b []float32, div float32) {
	for i := range a {
		v := a[i] + b[i]
		if div != 0 {
			v /= div
		}
		a[i] = v
	}
}

// DivInto sets a[i] = b[i] / div (Device.RingDiv).
func DivInto(a, b []float32, div float32) {
	for i := range a {
		a[i] = b[i] / div
	}
}

// SumRanks64 sets out[i] = float32(sum over k < w of float64(all[k*l+i])),
// divided by w when mean, summed in k order, where l = len(out)
// (Device.RingSum64; the host ring's small path).
func SumRanks64(out, all []float32, w int, mean bool) {
	l := len(out)
	for i := range out {
		s := 0.0
		for k := 0; k < w; k++ {
			s += float64(all[k*l+i])
		}
		if mean {
			s /= float64(w)
		}
		out[i] = float32(s)
	}
}

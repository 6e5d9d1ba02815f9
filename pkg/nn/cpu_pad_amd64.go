//go:build amd64

package nn

import "golang.org/x/sys/cpu"

// padPlanesAVX512 writes planes zero-bordered copies of src's h x w planes
// (w <= 16, h >= 1, planes >= 1) into dst's planes of ph floats, the
// interior at off + y*wp (cpu_pad_amd64.s): padInput's layout, the same
// values as its Go loop.
//
//go:noescape
func padPlanesAVX512(dst, src *float32, planes, h, w, wp, ph, off int)

// usePadAsm is whether padInput may use padPlanesAVX512 (tests turn it
// off to compare with the Go loop).
var usePadAsm = cpu.X86.HasAVX512F && cpu.X86.HasBMI2

// padPhaseAVX512 writes planes stride-2 padded copies (four phase planes
// of hs x ws each) of src's h x w planes (w <= 32, h >= 1, planes >= 1)
// into dst (cpu_pad_amd64.s): padInput's phase layout, the same values as
// its Go loop.
//
//go:noescape
func padPhaseAVX512(dst, src *float32, planes, h, w, padH, padW, hs, ws int, consts *[3][16]int32)

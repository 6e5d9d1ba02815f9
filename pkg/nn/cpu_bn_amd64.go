//go:build amd64

package nn

import "golang.org/x/sys/cpu"

// bnApplyAVX512 and bnBackwardAVX512 are the inner loops of bnApply and
// BatchNormBackward on 16 floats per instruction (cpu_bn_amd64.s):
// the same operations in the same order (no fused multiply-adds), so
// bit-identical to the Go loops.
//
//go:noescape
func bnApplyAVX512(y, x, a, b *float32, n, cstep int, relu bool)

//go:noescape
func bnBackwardAVX512(dx, dy, x, mu, proj, gm, ws *float32, n, cstep int)

// useBNAsm is whether the BatchNorm passes use the AVX-512 loops (tests
// turn it off to compare with the Go loops).
var useBNAsm = cpu.X86.HasAVX512F && cpu.X86.HasBMI2

// sumSqAVX512 and bnBwdSumsAVX512 are sumSqWide and bnBwdSumsWide on
// AVX-512 (cpu_bn_amd64.s): the same 16 float64 lanes and lane tree, so
// bit-identical to them. n >= 1.
//
//go:noescape
func sumSqAVX512(x *float32, n int, out *[2]float64)

//go:noescape
func bnBwdSumsAVX512(dy, y, x *float32, n int, mu float64, mask bool, out *[2]float64)

//go:build amd64

package nn

import "golang.org/x/sys/cpu"

//go:generate go run ./internal/winogen -o cpu_winograd_amd64.s

// winoInputAVX512 and winoOutputAVX512 are the transforms of 16 tiles per
// call (cpu_winograd_amd64.s, written by internal/winogen), bit-identical
// to winoInputGo and winoOutputGo.
//
//go:noescape
func winoInputAVX512(v *float32, st int, xp *float32, ph int, c int, offs *int32, wp int, tb int)

//go:noescape
func winoOutputAVX512(y *float32, m *float32, st int, k int, tb int, offs *int32, pq int, q int)

// useWinoAsm is whether the AVX-512 transforms run (tests turn it off to
// compare with the Go loops).
var useWinoAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ

// winoInputRowAVX512 and winoOutputRowAVX512 are the same transforms for
// 16 tiles in two runs of 8 consecutive tiles of a tile row (d1 bytes
// apart), winoInputQuadAVX512 and winoOutputQuadAVX512 for four runs of 4
// (d1, d2, d3 bytes after the first): contiguous loads and stores and
// permutes instead of gathers and scatters.
//
//go:noescape
func winoInputRowAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, d1 int)

//go:noescape
func winoOutputRowAVX512(y *float32, m *float32, st int, k int, tb int, pq int, q int, d1 int)

//go:noescape
func winoInputQuadAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, d1, d2, d3 int)

//go:noescape
func winoOutputQuadAVX512(y *float32, m *float32, st int, k int, tb int, pq int, q int, d1, d2, d3 int)

// winoGradOutAVX512 (gathered), winoGradOutRowAVX512 (two runs of 8) and
// winoGradOutQuadAVX512 (four runs of 4) are winoGradOutGo's transform of
// dy for 16 tiles, bit-identical to it.
//
//go:noescape
func winoGradOutAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, offs *int32)

//go:noescape
func winoGradOutRowAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, d1 int)

//go:noescape
func winoGradOutQuadAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, d1, d2, d3 int)

// winoInputOctAVX512 is winoInputAVX512 for 16 tiles in eight runs of 2
// consecutive tiles (planes 4 wide), run i offs[i] bytes after run 0.
//
//go:noescape
func winoInputOctAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, offs *int)

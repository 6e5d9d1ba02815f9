//go:build !amd64

package nn

// No vector transforms on this architecture: the Go loops run.
var useWinoAsm = false

func winoInputAVX512(v *float32, st int, xp *float32, ph int, c int, offs *int32, wp int, tb int) {
	panic("nn: winoInputAVX512 called without AVX-512")
}

func winoOutputAVX512(y *float32, m *float32, st int, k int, tb int, offs *int32, pq int, q int) {
	panic("nn: winoOutputAVX512 called without AVX-512")
}

func winoInputRowAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, d1 int) {
	panic("nn: winoInputRowAVX512 called without AVX-512")
}

func winoOutputRowAVX512(y *float32, m *float32, st int, k int, tb int, pq int, q int, d1 int) {
	panic("nn: winoOutputRowAVX512 called without AVX-512")
}

func winoInputQuadAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, d1, d2, d3 int) {
	panic("nn: winoInputQuadAVX512 called without AVX-512")
}

func winoOutputQuadAVX512(y *float32, m *float32, st int, k int, tb int, pq int, q int, d1, d2, d3 int) {
	panic("nn: winoOutputQuadAVX512 called without AVX-512")
}

func winoGradOutAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, offs *int32) {
	panic("nn: winoGradOutAVX512 called without AVX-512")
}

func winoGradOutRowAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, d1 int) {
	panic("nn: winoGradOutRowAVX512 called without AVX-512")
}

func winoGradOutQuadAVX512(z *float32, st int, dy *float32, k int, tb int, pq int, q int, d1, d2, d3 int) {
	panic("nn: winoGradOutQuadAVX512 called without AVX-512")
}

func winoInputOctAVX512(v *float32, st int, xp *float32, ph int, c int, wp int, tb int, offs *int) {
	panic("nn: winoInputOctAVX512 called without AVX-512")
}

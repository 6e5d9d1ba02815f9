//go:build !amd64

package nn

// No vector loops on this architecture: the Go loops run (the stubs are
// never called).
var useBNAsm = false

func bnApplyAVX512(y, x, a, b *float32, n, cstep int, relu bool) {
	panic("nn: no vector BatchNorm on this architecture")
}

func bnBackwardAVX512(dx, dy, x, mu, proj, gm, ws *float32, n, cstep int) {
	panic("nn: no vector BatchNorm on this architecture")
}

func sumSqAVX512(x *float32, n int, out *[2]float64) {
	panic("nn: no vector BatchNorm on this architecture")
}

func bnBwdSumsAVX512(dy, y, x *float32, n int, mu float64, mask bool, out *[2]float64) {
	panic("nn: no vector BatchNorm on this architecture")
}

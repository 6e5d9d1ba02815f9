//go:build !amd64

package nn

// No vector loops on this architecture: the Go loops run (the stubs are
// never called).
func addAVX512(y, a, b *float32, n int, relu bool) {
	panic("nn: no vector loops on this architecture")
}

func reluMaskAVX512(dx, dy, y *float32, n int) {
	panic("nn: no vector loops on this architecture")
}

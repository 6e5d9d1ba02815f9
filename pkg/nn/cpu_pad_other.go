//go:build !amd64

package nn

// No vector loops on this architecture: the Go loops run (the stubs are
// never called).
var usePadAsm = false

func padPlanesAVX512(dst, src *float32, planes, h, w, wp, ph, off int) {
	panic("nn: no vector padding on this architecture")
}

func padPhaseAVX512(dst, src *float32, planes, h, w, padH, padW, hs, ws int, consts *[3][16]int32) {
	panic("nn: no vector padding on this architecture")
}

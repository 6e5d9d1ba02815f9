//go:build !amd64

package nn

var useSGDAsm = false

// sgdMomentumVector: no vector path on this architecture.
func sgdMomentumVector(p, g, buf []float32, wd, mom, negLR float32) int { return 0 }

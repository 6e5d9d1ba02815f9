//go:build !amd64

package nn

var usePoolAsm = false

// maxPoolVector: no vector path on this architecture.
func maxPoolVector(out, idx, in []float32, p PoolParams) bool { return false }

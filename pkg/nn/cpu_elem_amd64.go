//go:build amd64

package nn

// addAVX512 and reluMaskAVX512 are the loops of CPU.Add (and AddReLU)
// and CPU.ReLUBackward on 16 floats per instruction (cpu_elem_amd64.s), the
// same operations, so bit-identical to the Go loops. Gated by useBNAsm.
//
//go:noescape
func addAVX512(y, a, b *float32, n int, relu bool)

//go:noescape
func reluMaskAVX512(dx, dy, y *float32, n int)

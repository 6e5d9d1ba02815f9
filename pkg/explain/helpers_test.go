package explain_test

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

var (
	torchOnce sync.Once
	torchPy   string
)

// torchPython returns a Python that imports torch and torchvision, or
// skips the test with a message saying how to get one.
func torchPython(t *testing.T) string {
	t.Helper()
	torchOnce.Do(func() {
		cands := []string{os.Getenv("PYTHON"), "python3", "/usr/bin/python3"}
		for _, c := range cands {
			if c == "" {
				continue
			}
			if exec.Command(c, "-c", "import torch, torchvision").Run() == nil {
				torchPy = c
				return
			}
		}
	})
	if torchPy == "" {
		t.Skip("PyTorch reference skipped: no python3 with torch and torchvision (apt-get install python3-torch python3-torchvision, or set PYTHON)")
	}
	return torchPy
}

// randomise gives the model's BN layers non-trivial affine parameters and
// running statistics, so that evaluation mode is not close to the identity.
func randomise(t *testing.T, m *nn.Model, seed int64) {
	t.Helper()
	r := nn.NewRNG(seed)
	u := func(lo, hi float64) float32 { return float32(r.Uniform(lo, hi)) }
	for _, p := range m.Params() {
		if len(p.Value.Shape) != 1 || p.Name == "fc.bias" { // BN weight and bias only
			continue
		}
		for i := range p.Value.Data {
			if filepath.Ext(p.Name) == ".weight" {
				p.Value.Data[i] = u(0.5, 1.5)
			} else {
				p.Value.Data[i] = u(-0.2, 0.2)
			}
		}
	}
	for _, b := range m.Buffers() {
		if b.Value == nil {
			continue
		}
		for i := range b.Value.Data {
			if filepath.Ext(b.Name) == ".running_var" {
				b.Value.Data[i] = u(0.5, 2)
			} else {
				b.Value.Data[i] = u(-0.2, 0.2)
			}
		}
	}
}

// randomImage is a (3,h,w) image of standard-normal-ish values.
func randomImage(seed int64, h, w int) []float32 {
	r := nn.NewRNG(seed)
	img := make([]float32, 3*h*w)
	for i := range img {
		img[i] = float32(r.Normal())
	}
	return img
}

func writeRaw(t *testing.T, path string, v []float32) {
	t.Helper()
	buf := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// relErr is max|got-want| / max|want|.
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, s float64
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i])-want[i]))
		s = math.Max(s, math.Abs(want[i]))
	}
	if s == 0 {
		return d
	}
	return d / s
}

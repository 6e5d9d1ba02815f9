package gpu

import (
	"math"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// TestFusedOptimizerOnDevice: on the device (or the kernel emulator), an
// optimizer fused over the model's flat tensors (one kernel launch per step,
// over a run whose start is aligned where single parameters often are not)
// gives the per-parameter path's parameters bit for bit, and the CPU's.
func TestFusedOptimizerOnDevice(t *testing.T) {
	b := freshDevice(t, "fp32")
	cpu := nn.NewCPU(1)
	cfgs := map[string]func(nn.Backend, []*nn.Param) (nn.Optimizer, error){
		"sgd-nesterov": func(b nn.Backend, ps []*nn.Param) (nn.Optimizer, error) {
			return nn.NewSGD(b, ps, nn.SGDConfig{LR: 0.4, Momentum: 0.9, Nesterov: true, WeightDecay: 5e-4})
		},
		"adamw": func(b nn.Backend, ps []*nn.Param) (nn.Optimizer, error) {
			return nn.NewAdamW(b, ps, nn.DefaultAdamWConfig())
		},
	}
	for name, newOpt := range cfgs {
		t.Run(name, func(t *testing.T) {
			var params [3][]float32
			for k, c := range []struct {
				b     nn.Backend
				fused bool
			}{{b, false}, {b, true}, {cpu, true}} {
				m, err := nn.NewResNet(c.b, nn.ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 3})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Free()
				o, err := newOpt(c.b, m.Params())
				if err != nil {
					t.Fatal(err)
				}
				if c.fused {
					if runs, err := o.(nn.Fuser).Fuse(m.ParamsFlat(), m.GradsFlat()); err != nil || runs != 1 {
						t.Fatalf("Fuse: %d runs, %v", runs, err)
					}
				}
				g := make([]float32, m.GradsFlat().Numel())
				for s := 0; s < 3; s++ {
					for i := range g {
						g[i] = float32(math.Cos(float64(i)*0.11+float64(s))) * 0.05
					}
					c.b.FromHost(m.GradsFlat(), g)
					if err := o.Step(); err != nil {
						t.Fatal(err)
					}
				}
				params[k] = make([]float32, m.ParamsFlat().Numel())
				c.b.ToHost(params[k], m.ParamsFlat())
				if err := c.b.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			for k, what := range []string{"fused on the device", "fused on the CPU"} {
				for i, v := range params[0] {
					if math.Float32bits(v) != math.Float32bits(params[k+1][i]) {
						t.Fatalf("%s: element %d is %v, per parameter on the device %v", what, i, params[k+1][i], v)
					}
				}
			}
		})
	}
}

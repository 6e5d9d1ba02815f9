package gpu

import (
	"math"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/explain"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// TestExplainOnGPU runs Grad-CAM (the model's tap and backward pass) and
// a Shapley estimate (batched forward passes) on the CUDA backend (the
// kernel emulator without a GPU) and on the CPU backend with the same
// weights, and wants the same maps and values.
func TestExplainOnGPU(t *testing.T) {
	for _, prec := range []string{PrecisionFP32, PrecisionBF16} {
		t.Run(prec, func(t *testing.T) {
			g := openGPU(t, prec)
			cfg := nn.ResNetConfig{Depth: 18, Stem: "cifar", Width: 0.125, Classes: 10, Seed: 3}
			mg, err := nn.NewResNet(g, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mg.Free()
			mc, err := nn.NewResNet(plainCPU(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mc.Free()
			r := nn.NewRNG(5) // non-trivial evaluation-mode batch norm
			for _, b := range mc.Buffers() {
				if b.Value != nil {
					for i := range b.Value.Data {
						if i%2 == 0 || b.Name[len(b.Name)-3:] == "var" {
							b.Value.Data[i] = float32(r.Uniform(0.5, 2))
						} else {
							b.Value.Data[i] = float32(r.Uniform(-0.3, 0.3))
						}
					}
				}
			}
			copyModel(t, mg, mc)
			const h, w = 16, 16
			img := make([]float32, 3*h*w)
			for i := range img {
				img[i] = float32(math.Sin(float64(i)*0.37)) * 1.5
			}
			tol := 1e-4
			if prec == PrecisionBF16 {
				tol = 0.15 // bf16 convolutions and activations: about 3 significant digits per op, compounded
			}
			for _, layer := range []string{"layer3", "layer2.1"} {
				o := explain.GradCAMOptions{Layer: layer, Class: -1}
				cg, err := explain.ComputeGradCAM(mg, img, h, w, o)
				if err != nil {
					t.Fatal(err)
				}
				cc, err := explain.ComputeGradCAM(mc, img, h, w, o)
				if err != nil {
					t.Fatal(err)
				}
				peak := 0.0
				for _, v := range cc.Map {
					peak = math.Max(peak, float64(v))
				}
				if peak == 0 {
					t.Fatalf("%s: the CPU map is all zero: the comparison shows nothing", layer)
				}
				if e := relMax(cg.Map, cc.Map); e > tol {
					t.Errorf("%s: Grad-CAM map on the GPU backend differs from the CPU's: relative %.3g > %g", layer, e, tol)
				} else {
					t.Logf("%s %dx%d: Grad-CAM peak %.4g, relative difference %.3g; Shapley next", layer, cg.P, cg.Q, peak, e)
				}
			}
			so := explain.ShapleyOptions{Grid: 2, Samples: 6, Class: -1, Seed: 2}
			sg, err := explain.EstimateShapley(mg, img, h, w, so)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := explain.EstimateShapley(mc, img, h, w, so)
			if err != nil {
				t.Fatal(err)
			}
			a, b := make([]float32, 4), make([]float32, 4)
			for i := range a {
				a[i], b[i] = float32(sg.Values[i]), float32(sc.Values[i])
			}
			if e := relMax(a, b); e > tol {
				t.Errorf("Shapley values differ: GPU %v, CPU %v (relative %.3g)", sg.Values, sc.Values, e)
			}
			if sc.Sum() == 0 {
				t.Errorf("Shapley values all zero on the CPU: the comparison shows nothing")
			}
			t.Logf("Shapley (2x2, 6 permutations): GPU %.4f, CPU %.4f", sg.Values, sc.Values)
			if _, _, ok := sg.Efficiency(); !ok {
				t.Errorf("efficiency fails on the GPU backend: sum %.5f vs %.5f", sg.Sum(), sg.FImage-sg.FBaseline)
			}
		})
	}
}

// relMax is max |a-b| / max |b|.
func relMax(a, b []float32) float64 {
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	if s == 0 {
		return d
	}
	return d / s
}

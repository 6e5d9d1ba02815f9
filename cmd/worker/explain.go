package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/explain"
)

// explainOpts are explain's own flags.
type explainOpts struct {
	method   string
	out      string
	layer    string
	class    string
	grid     int
	samples  int
	baseline string
	sigma    float64
	seed     uint64
}

func explainCmd() *cobra.Command {
	f := &inferFlags{}
	o := &explainOpts{}
	cmd := &cobra.Command{
		Use:   "explain --weights MODEL.safetensors --method gradcam|shapley|both --out DIR [flags] IMAGE|FOLDER...",
		Short: "Explain predictions: Grad-CAM maps and Shapley values of image patches, as PNGs and JSON",
		Long: `Explain what a trained model looks at, per image:

  gradcam  Grad-CAM of a residual stage for a class (default: the predicted one) at
           --layer (default: the last stage whose map is at least 4x4 for the input):
           <out>/<image>.gradcam.png (the map over the image, colour bar) and
           <out>/<image>.gradcam.json (the raw map, channel weights, logits).
  shapley  Shapley values of a --grid x --grid patch grid for the class logit,
           estimated from --samples random permutations (batched forward passes),
           each with its standard error; absent patches take the --baseline image's
           values. Prints the efficiency check: the values must sum to
           f(image) - f(baseline). <out>/<image>.shapley.png (signed colours) and
           <out>/<image>.shapley.json.

Images are read and transformed as by predict; the architecture comes from the
weights file.`,
		Example: `  worker explain --weights runs/ringtrain/model.safetensors --method both --out explain/ cat.png
  worker explain --weights model.safetensors --method gradcam --layer layer3 --class dog --out maps/ photos/
  worker explain --weights model.safetensors --method shapley --grid 8 --samples 200 --baseline blur --out shap/ cat.png`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExplain(cmd, f, o, args)
		},
	}
	bindInferFlags(cmd, f)
	fs := cmd.Flags()
	fs.StringVar(&o.method, "method", "both", "gradcam | shapley | both")
	fs.StringVar(&o.out, "out", "explain", "output directory (created)")
	fs.StringVar(&o.layer, "layer", "", "Grad-CAM layer: stem, layer1..layer4 or a block such as layer3.1 (default: the last stage with a map of at least 4x4)")
	fs.StringVar(&o.class, "class", "", "explained class, by number or name (default: the predicted class)")
	fs.IntVar(&o.grid, "grid", 4, "Shapley: the image is cut into GRID x GRID patches")
	fs.IntVar(&o.samples, "samples", 64, "Shapley: random permutations")
	fs.StringVar(&o.baseline, "baseline", "mean", "Shapley: value of absent patches: mean (the dataset's mean colour) | blur (the image blurred)")
	fs.Float64Var(&o.sigma, "blur-sigma", 0, "Shapley: blur baseline's Gaussian sigma in pixels (0 = half a patch)")
	fs.Uint64Var(&o.seed, "seed-permutations", 1, "Shapley: seed of the permutations")
	return cmd
}

func runExplain(cmd *cobra.Command, f *inferFlags, o *explainOpts, args []string) error {
	doCAM, doShap := false, false
	switch o.method {
	case "gradcam":
		doCAM = true
	case "shapley":
		doShap = true
	case "both":
		doCAM, doShap = true, true
	default:
		return fmt.Errorf("explain: --method %q: want gradcam, shapley or both", o.method)
	}
	if o.baseline != "mean" && o.baseline != "blur" {
		return fmt.Errorf("explain: --baseline %q: want mean or blur", o.baseline)
	}
	// The library reads 0 as its default; here a value the user typed is
	// taken at its word, so 0 is refused like any other impossible value.
	if doShap {
		if o.grid < 1 {
			return fmt.Errorf("explain: --grid %d: want at least 1 (patches per side)", o.grid)
		}
		if o.samples < 2 {
			return fmt.Errorf("explain: --samples %d: want at least 2 permutations (for a standard error)", o.samples)
		}
		if o.sigma < 0 || math.IsNaN(o.sigma) || math.IsInf(o.sigma, 0) {
			return fmt.Errorf("explain: --blur-sigma %g: want 0 (half a patch) or a positive number of pixels", o.sigma)
		}
	}
	files, err := imageFiles(args)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	l, err := f.open(cmd, "explain")
	if err != nil {
		return err
	}
	defer l.model.Free()
	if doShap && o.grid > l.size {
		return fmt.Errorf("explain: --grid %d: the %dx%d input has fewer pixels per side; want at most %d", o.grid, l.size, l.size, l.size)
	}
	class := -1
	if o.class != "" {
		if class, err = parseClass(o.class, l.names); err != nil {
			return fmt.Errorf("explain: %w", err)
		}
	}
	if doCAM && o.layer != "" { // an unknown layer fails before any image is read
		if _, err := l.model.LayerShape(o.layer, []int{1, 3, l.size, l.size}); err != nil {
			return fmt.Errorf("explain: --layer: %w", err)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("explain: --out: %w", err)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "explain: %s from %s on %s; class names from %s\n", l.arch, l.spec.Transfer.Weights, l.backend.Name(), l.namesOf)
	fmt.Fprintf(out, "explain: each image: %s\n", transformNote(l.size))
	names := outputNames(files)
	failed := 0
	for i, path := range files {
		in, err := readInput(path, l.size)
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		logits, err := runLogits(l.model, in.x, 1, l.size)
		if err != nil {
			return fmt.Errorf("explain: %s: %w", path, err)
		}
		prob := softmax(logits)
		top := 0
		for c := range prob {
			if prob[c] > prob[top] {
				top = c
			}
		}
		fmt.Fprintf(out, "\n%s (%s): predicted %s (%.1f%%)\n", path, in.info, l.names[top], 100*prob[top])
		fig := explain.Figure{RGB: in.rgb, H: l.size, W: l.size, Title: fmt.Sprintf("%s: %s (%.0f%%)", filepath.Base(path), l.names[top], 100*prob[top])}
		base := filepath.Join(o.out, names[i])
		if doCAM {
			if err := explainCAM(out, l, in, fig, o, class, base); err != nil {
				return err
			}
		}
		if doShap {
			ok, err := explainShapley(out, l, in, fig, o, class, base)
			if err != nil {
				return err
			}
			if !ok {
				failed++
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("explain: the Shapley efficiency check failed for %d image(s): the estimate is wrong (see above)", failed)
	}
	return nil
}

func explainCAM(out io.Writer, l *loaded, in *input, fig explain.Figure, o *explainOpts, class int, base string) error {
	g, err := explain.ComputeGradCAM(l.model, in.x, l.size, l.size, explain.GradCAMOptions{Layer: o.layer, Class: class})
	if err != nil {
		return fmt.Errorf("explain: %s: grad-cam: %w", in.path, err)
	}
	peak, at := 0.0, 0
	for i, v := range g.Map {
		if float64(v) > peak {
			peak, at = float64(v), i
		}
	}
	png, js := base+".gradcam.png", base+".gradcam.json"
	if err := explain.WriteGradCAMPNG(png, fig, g, l.names[g.Class]); err != nil {
		return err
	}
	rec := map[string]any{
		"file": in.path, "method": "gradcam", "layer": g.Layer, "class": g.Class, "class_name": l.names[g.Class],
		"predicted": g.Predicted, "logits": g.Logits, "map_shape": []int{g.P, g.Q}, "map": g.Map,
		"channel_weights": g.Weights, "input_shape": []int{g.H, g.W}, "upsampled": g.Upsampled,
	}
	if err := writeJSON(js, rec); err != nil {
		return err
	}
	where := "all zero: no positive evidence for this class at this layer"
	if peak > 0 {
		where = fmt.Sprintf("peak %.4g at row %d, column %d", peak, at/g.Q, at%g.Q)
	}
	fmt.Fprintf(out, "  grad-cam: layer %s (%dx%d map), class %s: %s\n    -> %s, %s\n", g.Layer, g.P, g.Q, l.names[g.Class], where, png, js)
	return nil
}

func explainShapley(out io.Writer, l *loaded, in *input, fig explain.Figure, o *explainOpts, class int, base string) (bool, error) {
	n := l.size
	baseline, what := explain.MeanBaseline(n, n), "mean colour"
	if o.baseline == "blur" {
		sigma := o.sigma
		if sigma <= 0 {
			sigma = float64(n) / float64(max(o.grid, 1)) / 2
		}
		baseline, what = explain.BlurBaseline(in.x, n, n, sigma), fmt.Sprintf("blurred image (sigma %.3g px)", sigma)
	}
	s, err := explain.EstimateShapley(l.model, in.x, n, n, explain.ShapleyOptions{
		Grid: o.grid, Samples: o.samples, Baseline: baseline, Class: class, Seed: o.seed})
	if err != nil {
		return false, fmt.Errorf("explain: %s: shapley: %w", in.path, err)
	}
	gap, tol, ok := s.Efficiency()
	verdict := "holds"
	if !ok {
		verdict = "VIOLATED"
	}
	fmt.Fprintf(out, "  shapley: %dx%d patches, %d permutations (%d forward images), baseline %s, class %s (logit)\n",
		s.Grid, s.Grid, s.Samples, s.Samples*(s.Grid*s.Grid+1)+2, what, l.names[s.Class])
	fmt.Fprintf(out, "    efficiency: sum of values %+.5f vs f(image) - f(baseline) = %.5f - %.5f = %+.5f: %s (gap %.2g, allowed %.2g)\n",
		s.Sum(), s.FImage, s.FBaseline, s.FImage-s.FBaseline, verdict, gap, tol)
	order := make([]int, len(s.Values))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return math.Abs(s.Values[order[a]]) > math.Abs(s.Values[order[b]]) })
	var parts []string
	for _, i := range order[:min(3, len(order))] {
		parts = append(parts, fmt.Sprintf("patch (%d,%d) %+.4f ± %.4f", i/s.Grid, i%s.Grid, s.Values[i], s.StdErr[i]))
	}
	fmt.Fprintf(out, "    largest: %s\n", strings.Join(parts, ", "))
	png, js := base+".shapley.png", base+".shapley.json"
	if err := explain.WriteShapleyPNG(png, fig, s, l.names[s.Class]); err != nil {
		return false, err
	}
	rec := map[string]any{
		"file": in.path, "method": "shapley", "grid": s.Grid, "class": s.Class, "class_name": l.names[s.Class],
		"predicted": s.Predicted, "permutations": s.Samples, "baseline": o.baseline, "values": s.Values, "std_err": s.StdErr,
		"f_image": s.FImage, "f_baseline": s.FBaseline, "sum": s.Sum(), "efficiency_gap": gap, "efficiency_ok": ok,
	}
	if err := writeJSON(js, rec); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "    -> %s, %s\n", png, js)
	return ok, nil
}

// parseClass reads a class given by number or by name.
func parseClass(s string, names []string) (int, error) {
	if c, err := strconv.Atoi(s); err == nil {
		if c < 0 || c >= len(names) {
			return 0, fmt.Errorf("--class %d: the model has classes 0..%d", c, len(names)-1)
		}
		return c, nil
	}
	for i, n := range names {
		if strings.EqualFold(n, s) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("--class %q: not a class name (%s)", s, strings.Join(names, ", "))
}

// outputNames gives every file a distinct output base name: its base name
// without extension, prefixed with its directory's name when two files
// share one (val/cat/0000.png -> cat-0000), numbered if still not unique.
func outputNames(files []string) []string {
	stem := func(f string) string { return strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)) }
	count := map[string]int{}
	for _, f := range files {
		count[stem(f)]++
	}
	out := make([]string, len(files))
	seen := map[string]bool{}
	for i, f := range files {
		b := stem(f)
		if count[b] > 1 {
			b = filepath.Base(filepath.Dir(f)) + "-" + b
		}
		if seen[b] {
			b = fmt.Sprintf("%s-%d", b, i)
		}
		seen[b] = true
		out[i] = b
	}
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("explain: %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	return nil
}

package nn_test

// PyTorch parity: the engine is run on the golden cases written by
// scripts/parity/gen.py (committed in testdata/parity; PARITY_DIR points at
// another directory, e.g. the full-width set of `make parity-torch`) and every
// tensor is compared with torch's.
//
// Metric: for a tensor a (ours) against b (torch),
//
//	relative error = max_i |a_i - b_i| / max(scale, 1e-12)
//
// where scale = max_i |b_i|, or, for weights after optimizer steps,
// max_i |b_i - init_i| (the size of torch's update, so that the update itself
// is what is checked). A check passes when the relative error is at most its
// tolerance, i.e. every element satisfies |a_i - b_i| <= atol with
// atol = tolerance*scale (rtol 0); NaN/Inf never passes. Integer tensors
// (num_batches_tracked) must be equal.
//
// Tolerance of a check = max(floor, parityNoiseFactor * noise), where noise is
// the worst float32-vs-float64 error torch itself shows for that kind of
// tensor in that case (recorded by the generator in the case's JSON). The
// floors are the parityFloor* constants.
//
// TestParity ends by printing
//
//	parity: N checks, F failed, worst relative error E
//
// and fails when F > 0 (`make parity` forwards that line and the status).

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Tolerance floors per kind of tensor (relative errors as defined above).
const (
	parityNoiseFactor  = 10.0 // tolerance >= this many times torch's own f32 error
	parityFloorForward = 2e-5 // logits, eval logits, loss
	parityFloorStats   = 2e-5 // BN running mean/var after one train forward
	parityFloorGrad    = 1e-4 // parameter gradients
	parityFloorUpdate  = 1e-3 // parameter updates after optimizer steps
	parityFloorOptBuf  = 1e-4 // BN running stats after optimizer steps
	parityScaleTiny    = 1e-12
)

// parityTally counts the checks of one TestParity run.
type parityTally struct {
	mu        sync.Mutex // guards the fields below
	checks    int
	failed    int
	worst     float64 // worst relative error over all float checks
	worstName string
	worstTol  float64
	groups    map[string]*groupWorst // by a check's name less its last element
	order     []string               // group names in first-seen order
	verbose   bool
}

// groupWorst is the worst float check of a group: a case's forward
// outputs, its gradients, its buffers, one optimizer's results.
type groupWorst struct {
	rel, tol float64
	name     string
}

// result is one comparison.
type result struct {
	rel      float64 // relative error; +Inf when a value is not finite
	scale    float64
	beyond   int // elements with |a-b| > tol*scale
	worstIdx int
	got      float64
	want     float64
}

// compare computes the relative error of got against want; init, when not
// nil, makes the scale the size of the update want-init.
func compare(got, want, init []float32, tol float64) result {
	r := result{worstIdx: -1}
	if len(got) != len(want) || (init != nil && len(init) != len(want)) {
		r.rel = math.Inf(1)
		return r
	}
	for i, w := range want {
		m := math.Abs(float64(w))
		if init != nil {
			m = math.Abs(float64(w) - float64(init[i]))
		}
		r.scale = math.Max(r.scale, m)
	}
	scale := math.Max(r.scale, parityScaleTiny)
	maxd := -1.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) || math.IsInf(d, 0) {
			d = math.Inf(1)
		}
		if d > tol*scale {
			r.beyond++
		}
		if d > maxd {
			maxd, r.worstIdx = d, i
		}
	}
	if r.worstIdx >= 0 {
		r.got, r.want = float64(got[r.worstIdx]), float64(want[r.worstIdx])
		r.rel = maxd / scale
	}
	return r
}

// check records one float comparison and reports a mismatch.
func (tl *parityTally) check(t testing.TB, name string, got, want, init []float32, tol float64) {
	t.Helper()
	r := compare(got, want, init, tol)
	ok := r.rel <= tol
	tl.mu.Lock()
	tl.checks++
	if !ok {
		tl.failed++
	}
	if r.rel > tl.worst || tl.worstName == "" {
		tl.worst, tl.worstName, tl.worstTol = r.rel, name, tol
	}
	if tl.groups == nil {
		tl.groups = map[string]*groupWorst{}
	}
	g := name
	if i := strings.LastIndex(name, "/"); i > 0 {
		g = name[:i]
	}
	if gw := tl.groups[g]; gw == nil {
		tl.groups[g] = &groupWorst{rel: r.rel, tol: tol, name: name}
		tl.order = append(tl.order, g)
	} else if r.rel > gw.rel {
		*gw = groupWorst{rel: r.rel, tol: tol, name: name}
	}
	verbose := tl.verbose
	tl.mu.Unlock()
	switch {
	case !ok && len(got) != len(want):
		t.Errorf("MISMATCH %s: %d values, torch has %d", name, len(got), len(want))
	case !ok:
		t.Errorf("MISMATCH %s: relative error %.3g > tolerance %.3g (%d of %d elements beyond; worst at %d: got %.8g, torch %.8g, scale %.3g)",
			name, r.rel, tol, r.beyond, len(want), r.worstIdx, r.got, r.want, r.scale)
	case verbose:
		t.Logf("ok %s: relative error %.3g (tolerance %.3g, %d elements)", name, r.rel, tol, len(want))
	}
}

// checkExact records an integer comparison.
func (tl *parityTally) checkExact(t testing.TB, name string, got, want int64) {
	t.Helper()
	tl.mu.Lock()
	tl.checks++
	if got != want {
		tl.failed++
	}
	tl.mu.Unlock()
	if got != want {
		t.Errorf("MISMATCH %s: got %d, torch %d", name, got, want)
	}
}

// pass records a check that succeeded without a numeric comparison.
func (tl *parityTally) pass(t testing.TB, name string) {
	t.Helper()
	tl.mu.Lock()
	tl.checks++
	verbose := tl.verbose
	tl.mu.Unlock()
	if verbose {
		t.Logf("ok %s", name)
	}
}

// fail records a check that could not be made (the engine returned an
// error, a tensor is missing, ...).
func (tl *parityTally) fail(t testing.TB, name string, format string, args ...any) {
	t.Helper()
	tl.mu.Lock()
	tl.checks++
	tl.failed++
	tl.mu.Unlock()
	t.Errorf("FAILED %s: %s", name, fmt.Sprintf(format, args...))
}

// tolFor is max(floor, parityNoiseFactor*noise).
func tolFor(floor, noise float64) float64 {
	return math.Max(floor, parityNoiseFactor*noise)
}

// parityDir is PARITY_DIR or the committed goldens. A relative PARITY_DIR
// is relative to this package's directory (where go test runs).
func parityDir() string {
	if d := os.Getenv("PARITY_DIR"); d != "" {
		return d
	}
	return filepath.Join("testdata", "parity")
}

func TestParity(t *testing.T) {
	tl := &parityTally{verbose: os.Getenv("PARITY_VERBOSE") != ""}
	defer func() {
		for _, g := range tl.order {
			gw := tl.groups[g]
			fmt.Printf("parity: %-40s worst relative error %-9.3g tolerance %-9.3g %s\n", g, gw.rel, gw.tol, gw.name[len(g):])
		}
		worst := fmt.Sprintf("%.3g", tl.worst)
		if tl.worstName != "" {
			fmt.Printf("parity: worst is %s (relative error %s, tolerance %.3g)\n", tl.worstName, worst, tl.worstTol)
		}
		fmt.Printf("parity: %d checks, %d failed, worst relative error %s\n", tl.checks, tl.failed, worst)
	}()

	dir := parityDir()
	var man goldenManifest
	if err := readJSON(filepath.Join(dir, "manifest.json"), &man); err != nil {
		tl.fail(t, "manifest", "%v", err)
		return
	}
	if man.Format != goldenFormat || len(man.Cases) == 0 {
		tl.fail(t, "manifest", "format %d with %d cases (want format %d, at least one case)", man.Format, len(man.Cases), goldenFormat)
		return
	}
	for _, name := range man.Cases {
		t.Run(name, func(t *testing.T) {
			// An engine panic fails this case, not the whole run and its summary.
			defer func() {
				if r := recover(); r != nil {
					tl.fail(t, name, "panic: %v\n%s", r, debug.Stack())
				}
			}()
			c, f, err := loadCase(dir, name)
			if err != nil {
				tl.fail(t, name, "%v", err)
				return
			}
			switch c.Kind {
			case "model":
				runModelCase(t, tl, c, f)
			case "optim":
				runOptimCase(t, tl, c, f)
			default:
				tl.fail(t, name, "unknown case kind %q", c.Kind)
			}
		})
	}
}

// newParityModel builds the case's model and loads the golden's init/
// tensors into it, checking that names and shapes match torch's state_dict
// exactly (one check).
func newParityModel(t *testing.T, tl *parityTally, c *goldenCase, f *goldenFile) (nn.Backend, *nn.Model, bool) {
	t.Helper()
	b := nn.NewCPU(0)
	m, err := nn.NewResNet(b, nn.ResNetConfig{
		Depth: c.Model.Depth, Stem: c.Model.Stem, Width: c.Model.Width,
		Classes: c.Model.Classes, Seed: c.Seed,
	})
	if err != nil {
		tl.fail(t, c.Case+"/build", "NewResNet: %v", err)
		return nil, nil, false
	}
	if err := loadState(b, m, f, "init/"); err != nil {
		tl.fail(t, c.Case+"/state_dict", "%v", err)
		m.Free()
		return nil, nil, false
	}
	tl.pass(t, c.Case+"/state_dict")
	return b, m, true
}

// loadState copies prefix+name tensors into the model's parameters and
// buffers; every name of either side must be on the other, with equal shapes.
func loadState(b nn.Backend, m *nn.Model, f *goldenFile, prefix string) error {
	have := map[string]bool{}
	var problems []string
	for _, p := range m.Params() {
		have[p.Name] = true
		gt, err := f.f32(prefix + p.Name)
		if err != nil {
			problems = append(problems, "missing in torch: "+p.Name)
			continue
		}
		if !nn.SameShape(gt.Shape, p.Value.Shape) {
			problems = append(problems, fmt.Sprintf("%s: shape %v, torch %v", p.Name, p.Value.Shape, gt.Shape))
			continue
		}
		b.FromHost(p.Value, gt.F32)
	}
	for _, bf := range m.Buffers() {
		have[bf.Name] = true
		if bf.Count != nil {
			gt, err := f.i64(prefix + bf.Name)
			if err != nil || len(gt.I64) != 1 {
				problems = append(problems, "missing in torch: "+bf.Name)
				continue
			}
			*bf.Count = gt.I64[0]
			continue
		}
		gt, err := f.f32(prefix + bf.Name)
		if err != nil {
			problems = append(problems, "missing in torch: "+bf.Name)
			continue
		}
		if !nn.SameShape(gt.Shape, bf.Value.Shape) {
			problems = append(problems, fmt.Sprintf("%s: shape %v, torch %v", bf.Name, bf.Value.Shape, gt.Shape))
			continue
		}
		b.FromHost(bf.Value, gt.F32)
	}
	for _, name := range f.withPrefix(prefix) {
		if !have[name] {
			problems = append(problems, "not in the model: "+name)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%w: state_dict differs from torch's: %s", errGolden, strings.Join(problems, "; "))
	}
	return nb(b)
}

// nb waits for the backend (device backends copy asynchronously).
func nb(b nn.Backend) error {
	if err := b.Sync(); err != nil {
		return fmt.Errorf("parity: backend: %w", err)
	}
	return nil
}

// host copies a tensor to a fresh host slice.
func host(b nn.Backend, x *nn.Tensor) []float32 {
	out := make([]float32, x.Numel())
	b.ToHost(out, x)
	return out
}

// inputTensor puts a golden input on the backend, checking its shape.
func inputTensor(b nn.Backend, f *goldenFile, name string, shape []int) (*nn.Tensor, error) {
	gt, err := f.f32(name)
	if err != nil {
		return nil, err
	}
	if shape != nil && !nn.SameShape(gt.Shape, shape) {
		return nil, fmt.Errorf("%w: %s has shape %v, metadata says %v", errGolden, name, gt.Shape, shape)
	}
	x := b.New(gt.Shape...)
	b.FromHost(x, gt.F32)
	return x, nil
}

// runModelCase: one train-mode forward + loss + backward from the golden
// weights, then an eval-mode forward; compares logits, loss, every gradient,
// the BN buffers and the eval logits.
func runModelCase(t *testing.T, tl *parityTally, c *goldenCase, f *goldenFile) {
	b, m, ok := newParityModel(t, tl, c, f)
	if !ok {
		return
	}
	defer m.Free()
	name := func(s string) string { return c.Case + "/" + s }

	x, err := inputTensor(b, f, "input", c.InputShape)
	if err != nil {
		tl.fail(t, name("input"), "%v", err)
		return
	}
	defer b.Free(x)
	labels, err := f.labels("labels")
	if err != nil {
		tl.fail(t, name("labels"), "%v", err)
		return
	}
	want := func(s string) []float32 {
		gt, err := f.f32(s)
		if err != nil {
			tl.fail(t, name(s), "%v", err)
			return nil
		}
		return gt.F32
	}

	fwdTol := tolFor(parityFloorForward, c.noise("logits"))
	m.SetTrain(true)
	logits, err := m.Forward(x)
	if err != nil {
		tl.fail(t, name("logits"), "Forward: %v", err)
		return
	}
	if w := want("logits"); w != nil {
		tl.check(t, name("logits"), host(b, logits), w, nil, fwdTol)
	}

	ce := &nn.CrossEntropy{Smoothing: float32(c.LabelSmoothing)}
	loss, dlogits, err := ce.Compute(b, logits, labels)
	if err != nil {
		tl.fail(t, name("loss"), "CrossEntropy: %v", err)
		return
	}
	if w := want("loss"); w != nil {
		tl.check(t, name("loss"), []float32{loss}, w, nil, tolFor(parityFloorForward, c.noise("loss")))
	}

	m.ZeroGrad()
	if err := m.Backward(dlogits); err != nil {
		tl.fail(t, name("grad"), "Backward: %v", err)
		return
	}
	if err := nb(b); err != nil {
		tl.fail(t, name("grad"), "%v", err)
		return
	}
	gradTol := tolFor(parityFloorGrad, c.noise("grad_worst"))
	for _, p := range m.Params() {
		if w := want("grad/" + p.Name); w != nil {
			tl.check(t, name("grad/"+p.Name), host(b, p.Grad), w, nil, gradTol)
		}
	}
	statTol := tolFor(parityFloorStats, c.noise("running_stats_worst"))
	for _, bf := range m.Buffers() {
		if bf.Count != nil {
			gt, err := f.i64("after/" + bf.Name)
			if err != nil || len(gt.I64) != 1 {
				tl.fail(t, name("after/"+bf.Name), "no torch value: %v", err)
				continue
			}
			tl.checkExact(t, name("after/"+bf.Name), *bf.Count, gt.I64[0])
			continue
		}
		if w := want("after/" + bf.Name); w != nil {
			tl.check(t, name("after/"+bf.Name), host(b, bf.Value), w, nil, statTol)
		}
	}

	m.SetTrain(false)
	ev, err := m.Forward(x)
	if err != nil {
		tl.fail(t, name("eval_logits"), "Forward (eval): %v", err)
		return
	}
	if w := want("eval_logits"); w != nil {
		tl.check(t, name("eval_logits"), host(b, ev), w, nil, tolFor(parityFloorForward, c.noise("eval_logits")))
	}
}

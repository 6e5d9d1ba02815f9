package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// freshDevice opens a backend of its own: on a GPU when there is one,
// else on the kernel emulator (with its graph twin, graph_emu_test.go).
func freshDevice(t *testing.T, prec string) *Backend {
	t.Helper()
	if b, err := Open(Options{Precision: prec, Graphs: true}); err == nil {
		t.Cleanup(func() { b.Close() })
		return b
	}
	b, err := openEmuGraph(prec)
	if errors.Is(err, errNoCompiler) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// soloReducer is tr's reducer over a one-rank in-memory ring (closed when
// the test ends): a single worker's steps.
func soloReducer(t *testing.T, tr *worker.Trainer) *allreduce.Reducer {
	t.Helper()
	net := allreduce.NewInmemNetwork()
	ring, err := allreduce.Open(context.Background(), net.Transport("a"), allreduce.DefaultConfig("j", 1, 0, 1), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Close() })
	red, err := tr.NewReducer(ring)
	if err != nil {
		t.Fatal(err)
	}
	return red
}

// tinySpec is a small ResNet on synthetic data for trainer tests.
func tinySpec() job.Spec {
	spec := job.Default()
	spec.Model = job.Model{Arch: "resnet18", Stem: "cifar", Width: 1.0 / 16}
	spec.Data.Dataset, spec.Data.SyntheticSize, spec.Data.Augment = "synthetic", 64, true
	spec.GlobalBatch, spec.Epochs, spec.Device = 8, 1, "cuda"
	return spec
}

// stepRun is what trainSteps saw.
type stepRun struct {
	res    []worker.StepResult
	err    error // the first step error (the run stops there)
	failAt int64 // the trainer's step when it failed
	eval   worker.EvalResult
	params []float32
}

// trainSteps runs steps single-worker steps of spec on b (configure
// adjusts the trainer), then evaluates.
func trainSteps(t *testing.T, b nn.Backend, spec job.Spec, steps int, configure func(*worker.Trainer)) stepRun {
	t.Helper()
	ctx := context.Background()
	train, test, err := worker.OpenDatasets(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := worker.NewTrainer(spec, b, train, test)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if configure != nil {
		configure(tr)
	}
	red := soloReducer(t, tr)
	ld, err := tr.Loader(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	var out stepRun
	for s := 0; s < steps; s++ {
		bt, err := ld.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, err := tr.TrainStep(ctx, bt, red, 1)
		if err != nil {
			out.err, out.failAt = err, tr.Step
			return out
		}
		out.res = append(out.res, r)
	}
	if out.eval, err = tr.Evaluate(ctx, nil, 0, 1, allreduce.Tag{}); err != nil {
		t.Fatal(err)
	}
	p := tr.Model.ParamsFlat()
	out.params = make([]float32, p.Numel())
	b.ToHost(out.params, p)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameSteps fails unless a and b gave the same losses, counts, evaluation
// and parameters, bit for bit.
func sameSteps(t *testing.T, what string, a, b stepRun) {
	t.Helper()
	if a.err != nil || b.err != nil || len(a.res) != len(b.res) {
		t.Fatalf("%s: %d steps (%v) against %d (%v)", what, len(b.res), b.err, len(a.res), a.err)
	}
	for s := range a.res {
		x, y := a.res[s], b.res[s]
		if math.Float64bits(x.Loss) != math.Float64bits(y.Loss) || x.Correct != y.Correct || x.N != y.N || x.LocalN != y.LocalN {
			t.Errorf("%s: step %d (%d samples): loss %v correct %d, against %v %d", what, s, y.LocalN, y.Loss, y.Correct, x.Loss, x.Correct)
		}
	}
	if a.eval != b.eval {
		t.Errorf("%s: evaluation %+v, against %+v", what, b.eval, a.eval)
	}
	for i := range a.params {
		if math.Float32bits(a.params[i]) != math.Float32bits(b.params[i]) {
			t.Fatalf("%s: parameter %d: %v, against %v", what, i, b.params[i], a.params[i])
		}
	}
}

// syncOnly hides the device backend's optional capabilities
// (nn.DeviceCounter, nn.AsyncCopier): the trainer then takes the path it
// took before the device step (host checks, loss and logits read back,
// a sync per step).
type syncOnly struct{ nn.Backend }

// The device step computes what the synchronous path computed: the same
// losses, counts, evaluation and parameters, bit for bit (the same
// kernels in the same order; only the read-backs moved, and the input
// comes from the loader's page-locked buffers without a staging copy).
func TestDeviceStepMatchesSyncPath(t *testing.T) {
	dev := freshDevice(t, PrecisionFP32)
	spec := tinySpec()
	const steps = 4
	old := trainSteps(t, syncOnly{dev}, spec, steps, nil)
	cur := trainSteps(t, dev, spec, steps, nil)
	if old.err != nil || cur.err != nil {
		t.Fatalf("sync path: %v, device step: %v", old.err, cur.err)
	}
	if d, ok := dev.dev.(*emuGraphDevice); ok && d.pinnedUploads != steps {
		// Every step's input from the loader's page-locked buffers.
		t.Fatalf("%d pinned uploads in %d steps", d.pinnedUploads, steps)
	}
	sameSteps(t, "device step against the sync path", old, cur)
}

// The job's device step (counts on the device, one read per step) and
// the CPU step agree over several steps: losses within 1e-4 relative
// (fp32: each step's logits are within 1e-4 norm-wise, see docs/gpu.md's
// tolerances, and the small model's loss moves less), the same correct
// counts, and the evaluation's loss within 1e-3 relative (eval-mode BN
// divides by running variances estimated from four batches of 8, which
// amplifies the parameters' last-bit differences; the emulator shows
// 1.2e-4) with the same accuracy.
func TestDeviceStepMatchesCPU(t *testing.T) {
	dev := freshDevice(t, PrecisionFP32)
	spec := tinySpec()
	const steps = 4
	cpu := trainSteps(t, nn.NewCPU(1), spec, steps, nil)
	gpu := trainSteps(t, dev, spec, steps, nil)
	if cpu.err != nil || gpu.err != nil {
		t.Fatalf("cpu: %v, device: %v", cpu.err, gpu.err)
	}
	for s := range cpu.res {
		c, g := cpu.res[s], gpu.res[s]
		t.Logf("step %d: loss cpu %.7f device %.7f, correct %d/%d", s, c.Loss, g.Loss, c.Correct, g.Correct)
		if math.Abs(c.Loss-g.Loss) > 1e-4*math.Abs(c.Loss) {
			t.Errorf("step %d: loss cpu %v, device %v", s, c.Loss, g.Loss)
		}
		if c.Correct != g.Correct || c.N != g.N {
			t.Errorf("step %d: correct %d/%d on the cpu, %d/%d on the device", s, c.Correct, c.N, g.Correct, g.N)
		}
	}
	t.Logf("eval: cpu %+v, device %+v", cpu.eval, gpu.eval)
	if cpu.eval.N != gpu.eval.N || math.Abs(cpu.eval.Accuracy-gpu.eval.Accuracy) > 0 ||
		math.Abs(cpu.eval.Loss-gpu.eval.Loss) > 1e-3*math.Abs(cpu.eval.Loss) {
		t.Errorf("evaluation: cpu %+v, device %+v", cpu.eval, gpu.eval)
	}
}

// poisonBackend writes NaN into the fc bias gradient (after
// LinearBackward) or into the logits (after Linear) from step armAt on.
type poisonBackend struct {
	*Backend
	where         string // "grad" or "logits"
	armAt, linear int    // linear counts training forwards (one Linear each)
	backwards     int
}

func (p *poisonBackend) Linear(y, x, w, b *nn.Tensor) {
	p.Backend.Linear(y, x, w, b)
	if p.where == "logits" && p.linear >= p.armAt {
		p.Fill(y.View(0, 1), float32(math.NaN()))
	}
	p.linear++
}

func (p *poisonBackend) LinearBackward(dx, dw, db, dy, x, w *nn.Tensor) {
	p.Backend.LinearBackward(dx, dw, db, dy, x, w)
	if p.where == "grad" && p.backwards >= p.armAt && db != nil {
		p.Fill(db.View(0, 1), float32(math.NaN()))
	}
	p.backwards++
}

// A NaN in step 2's gradients (only there: the logits and loss are
// finite) stops the device step at step 2 with ErrNonFinite naming the
// gradients, before the step is committed; a NaN in the logits is named
// as such. Steps 0 and 1 are unaffected.
func TestDeviceStepDetectsNaN(t *testing.T) {
	for _, where := range []string{"grad", "logits"} {
		dev := freshDevice(t, PrecisionFP32)
		p := &poisonBackend{Backend: dev, where: where, armAt: 2}
		r := trainSteps(t, p, tinySpec(), 4, nil)
		if !errors.Is(r.err, nn.ErrNonFinite) {
			t.Fatalf("%s: err %v, want ErrNonFinite", where, r.err)
		}
		want := map[string]string{"grad": "gradients have", "logits": "logits or loss have"}[where]
		if !strings.Contains(r.err.Error(), want) || r.failAt != 2 || len(r.res) != 2 {
			t.Fatalf("%s: failed at step %d after %d steps with %q, want step 2 and %q", where, r.failAt, len(r.res), r.err, want)
		}
		if !worker.IsInputError(r.err) {
			t.Fatalf("%s: %v is not an input error: the job would not stop", where, r.err)
		}
		t.Logf("%s: %v", where, r.err)
	}
}

// A CUDA graph step gives the same loss sequence as the eager step, bit
// for bit, and the same parameters and evaluation: over two epochs of a
// dataset whose last batch is short, so the graph is captured (after one
// eager step), launched, dropped for the short batch and the next epoch's
// first step, and captured again.
func TestGraphStepMatchesEager(t *testing.T) {
	spec := tinySpec()
	spec.Data.SyntheticSize, spec.Epochs = 60, 2 // 8 steps an epoch, the last of 4 samples
	const steps = 11
	var tr *worker.Trainer
	eager := trainSteps(t, freshDevice(t, PrecisionFP32), spec, steps, nil)
	graph := trainSteps(t, freshDevice(t, PrecisionFP32), spec, steps, func(w *worker.Trainer) { w.Graphs, tr = true, w })
	if eager.err != nil || graph.err != nil {
		t.Fatalf("eager: %v, graph: %v", eager.err, graph.err)
	}
	captures, launches := tr.GraphStats()
	t.Logf("%d captures, %d graph launches in %d steps", captures, launches, steps)
	// Step 0 eager, 1 captured, 2-6 launched, 7 (4 samples) and 8 (the
	// next epoch's first) eager, 9 captured, 10 launched.
	if captures != 2 || launches != 8 {
		t.Fatalf("%d captures and %d launches, want 2 and 8", captures, launches)
	}
	sameSteps(t, "graph step against the eager step", eager, graph)
}

// hostInStep makes every step's forward read the device (CountNonFinite
// after the classifier), which a captured region cannot do.
type hostInStep struct{ *Backend }

func (h hostInStep) Linear(y, x, w, b *nn.Tensor) {
	h.Backend.Linear(y, x, w, b)
	_ = h.CountNonFinite(y)
}

// When the capture fails, graphs turn off (logged once) and every step
// runs eagerly with the eager step's results.
func TestGraphCaptureFailureFallsBackToEager(t *testing.T) {
	spec := tinySpec()
	const steps = 4
	eager := trainSteps(t, freshDevice(t, PrecisionFP32), spec, steps, nil)
	var tr *worker.Trainer
	var logs []string
	graph := trainSteps(t, hostInStep{freshDevice(t, PrecisionFP32)}, spec, steps, func(w *worker.Trainer) {
		w.Graphs, tr = true, w
		w.Logf = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	})
	if eager.err != nil || graph.err != nil {
		t.Fatalf("eager: %v, graph: %v", eager.err, graph.err)
	}
	if c, l := tr.GraphStats(); c != 0 || l != 0 || len(logs) != 1 || !strings.Contains(logs[0], "needs the host") {
		t.Fatalf("%d captures, %d launches, logs %q; want none, none and one line saying why", c, l, logs)
	}
	t.Log(logs[0])
	for s := range eager.res {
		if eager.res[s].Loss != graph.res[s].Loss {
			t.Errorf("step %d: eager loss %v, after the failed capture %v", s, eager.res[s].Loss, graph.res[s].Loss)
		}
	}
}

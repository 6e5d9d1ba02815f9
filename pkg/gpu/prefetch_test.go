package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// The prefetch (pkg/worker/prefetch.go): step s+1's input goes up on the
// copy stream while step s computes. On the emulator the copy stream's
// twin (copystream_emu_test.go) defers every copy until it is waited for,
// so a step that reads its input without waiting reads stale data.

// testTrainer is a single-worker trainer of spec on b with its reducer.
func testTrainer(t *testing.T, b nn.Backend, spec job.Spec, configure func(*worker.Trainer)) (*worker.Trainer, *allreduce.Reducer) {
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
	t.Cleanup(tr.Close)
	if configure != nil {
		configure(tr)
	}
	return tr, soloReducer(t, tr)
}

// feedRun is what trainFeed saw.
type feedRun struct {
	res                []worker.StepResult
	idx                [][]int             // each step's dataset indices
	evals              []worker.EvalResult // at each epoch's end, as the worker evaluates
	params             []float32
	stats              worker.PrefetchStats
	captures, launches int
	allocs             []int // the pool's driver allocations after each step
}

// step trains the feed's next batch and records it in r; at an epoch's
// end it evaluates, as the worker's training state does.
func (r *feedRun) step(t *testing.T, tr *worker.Trainer, f *worker.Feed, red *allreduce.Reducer) {
	t.Helper()
	ctx := context.Background()
	b, err := f.Next(ctx)
	if err != nil {
		t.Fatalf("step %d: next batch: %v", tr.Step, err)
	}
	epoch := b.Pos.Epoch
	res, err := tr.TrainStep(ctx, b, red, 1)
	if err != nil {
		t.Fatalf("step %d: %v", tr.Step, err)
	}
	r.res = append(r.res, res)
	r.idx = append(r.idx, slices.Clone(b.Indices))
	if gb, ok := tr.B.(*Backend); ok {
		r.allocs = append(r.allocs, gb.PoolStats().DriverAllocs)
	}
	if tr.Pos.Epoch > epoch {
		ev, err := tr.Evaluate(ctx, nil, 0, 1, allreduce.Tag{})
		if err != nil {
			t.Fatal(err)
		}
		r.evals = append(r.evals, ev)
	}
}

// finish reads the parameters and counters.
func (r *feedRun) finish(t *testing.T, tr *worker.Trainer) {
	t.Helper()
	p := tr.Model.ParamsFlat()
	r.params = make([]float32, p.Numel())
	tr.B.ToHost(r.params, p)
	if err := tr.B.Sync(); err != nil {
		t.Fatal(err)
	}
	r.stats = tr.PrefetchStats()
	r.captures, r.launches = tr.GraphStats()
}

// trainFeed runs steps single-worker steps of spec on b from one Feed.
func trainFeed(t *testing.T, b nn.Backend, spec job.Spec, steps int, configure func(*worker.Trainer)) feedRun {
	t.Helper()
	tr, red := testTrainer(t, b, spec, configure)
	f, err := tr.Feed(context.Background(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r feedRun
	for range steps {
		r.step(t, tr, f, red)
	}
	r.finish(t, tr)
	return r
}

// sameRun fails unless a and b trained the same samples to the same
// losses, counts, evaluations and parameters, bit for bit.
func sameRun(t *testing.T, what string, a, b feedRun) {
	t.Helper()
	if len(a.res) != len(b.res) || len(a.evals) != len(b.evals) {
		t.Fatalf("%s: %d steps and %d evaluations against %d and %d", what, len(b.res), len(b.evals), len(a.res), len(a.evals))
	}
	for s := range a.res {
		x, y := a.res[s], b.res[s]
		if math.Float64bits(x.Loss) != math.Float64bits(y.Loss) || x.Correct != y.Correct || x.LocalN != y.LocalN || !slices.Equal(a.idx[s], b.idx[s]) {
			t.Errorf("%s: step %d (%d samples): loss %v correct %d, against %v %d (samples equal: %v)",
				what, s, y.LocalN, y.Loss, y.Correct, x.Loss, x.Correct, slices.Equal(a.idx[s], b.idx[s]))
		}
	}
	for e := range a.evals {
		if a.evals[e] != b.evals[e] {
			t.Errorf("%s: evaluation %d: %+v, against %+v", what, e, b.evals[e], a.evals[e])
		}
	}
	for i := range a.params {
		if math.Float32bits(a.params[i]) != math.Float32bits(b.params[i]) {
			t.Fatalf("%s: parameter %d: %v, against %v", what, i, b.params[i], a.params[i])
		}
	}
}

// twoEpochs is tinySpec over two epochs of 8 steps whose last batch is
// short (4 samples), so a run crosses an epoch boundary with an
// evaluation and a short batch.
func twoEpochs() job.Spec {
	spec := tinySpec()
	spec.Data.SyntheticSize, spec.Epochs = 60, 2
	return spec
}

// The overlap changes where uploads run, not what is computed: with the
// prefetch, the losses, correct counts, evaluations (after each epoch)
// and final parameters are bit-identical to each step uploading its own
// input, over 11 steps with a short last batch and an epoch boundary;
// every batch after the first went up during the step before it, and the
// steady-state steps make no driver allocations.
func TestPrefetchMatchesInStepUpload(t *testing.T) {
	const steps = 11
	spec := twoEpochs()
	off := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, nil)
	dev := freshDevice(t, PrecisionFP32)
	on := trainFeed(t, dev, spec, steps, func(w *worker.Trainer) { w.Prefetch = true })
	if off.stats != (worker.PrefetchStats{}) {
		t.Fatalf("prefetch off, yet %+v", off.stats)
	}
	t.Logf("prefetch: %+v", on.stats)
	// Batch 0 goes up in its own step, batches 1-11 during the step
	// before theirs (the 12th is dropped by Close, after these counts).
	if on.stats.Uploads != steps+1 || on.stats.Ahead != steps || on.stats.Dropped != 0 {
		t.Errorf("%+v: want %d uploads, %d of them ahead, none dropped", on.stats, steps+1, steps)
	}
	// Both slots exist after step 0 (its own and the next batch's): no
	// driver allocation until the epoch's end (step 7, then evaluation).
	if on.allocs[6] != on.allocs[0] || off.allocs[6] != off.allocs[0] {
		t.Errorf("driver allocations after steps 0-6: %v with the prefetch, %v without; want none after step 0", on.allocs[:7], off.allocs[:7])
	}
	if len(off.evals) != 1 {
		t.Fatalf("%d evaluations, want 1 (the first epoch's end)", len(off.evals))
	}
	sameRun(t, "prefetch", off, on)
	if d, ok := dev.dev.(*emuGraphDevice); ok {
		if d.streams.waits < steps || d.streams.ran != 2*(steps+1) {
			t.Errorf("copy stream: %d compute waits, %d copies run; want >= %d and %d", d.streams.waits, d.streams.ran, steps, 2*(steps+1))
		}
	}
}

// With graphs the prefetched slot is copied into the captured buffers:
// the graph steps with the prefetch match the eager steps without it,
// bit for bit, and graphs are captured and launched.
func TestPrefetchGraphMatchesEager(t *testing.T) {
	const steps = 11
	spec := twoEpochs()
	eager := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, nil)
	graph := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, func(w *worker.Trainer) { w.Prefetch, w.Graphs = true, true })
	t.Logf("graphs with the prefetch: %d captures, %d launches; %+v", graph.captures, graph.launches, graph.stats)
	if graph.captures < 2 || graph.launches < 5 || graph.stats.Ahead < steps-1 {
		t.Fatalf("%d captures, %d launches, %+v: the graph path with the prefetch did not run", graph.captures, graph.launches, graph.stats)
	}
	sameRun(t, "graphs + prefetch", eager, graph)
}

// noComputeWait drops the compute stream's waits for the copy stream
// while armed: the steps then read their input before it landed.
type noComputeWait struct {
	*Backend
	armed bool
}

func (n *noComputeWait) ComputeAfter(f nn.Fence) {
	if !n.armed {
		n.Backend.ComputeAfter(f)
	}
}

// The emulator's copy stream catches a missing wait: without the compute
// stream's wait for the copies, the steps read stale input (zeros, then
// earlier batches) and the losses differ from the run with the wait.
func TestPrefetchMissingWaitIsCaught(t *testing.T) {
	const steps = 4
	spec := tinySpec()
	dev, emu := emuGraphOrSkip(t)
	good := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, func(w *worker.Trainer) { w.Prefetch = true })
	bad := &noComputeWait{Backend: dev, armed: true}
	tr, red := testTrainer(t, bad, spec, func(w *worker.Trainer) { w.Prefetch = true })
	f, err := tr.Feed(context.Background(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var r feedRun
	for range steps {
		r.step(t, tr, f, red)
	}
	// The copies never waited for would read page-locked buffers the
	// loader has recycled and is refilling (a data race, part of what the
	// missing wait breaks): drop them before Close.
	emu.streams.pending = nil
	bad.armed = false
	f.Close()
	differ := 0
	for s := range good.res {
		t.Logf("step %d: loss with the wait %.7f, without %.7f", s, good.res[s].Loss, r.res[s].Loss)
		if good.res[s].Loss != r.res[s].Loss {
			differ++
		}
	}
	if differ < steps {
		t.Fatalf("only %d of %d steps differ without the wait: the emulator's copy stream did not catch it", differ, steps)
	}
}

// A rollback drops the prefetched batch: restoring an earlier state while
// a batch is uploaded ahead retires the feed (its Next fails, nothing of
// it is trained), waits for its copies, and a new feed from the restored
// position trains exactly the batches and numbers of a run that never
// rolled back.
func TestPrefetchRollbackDropsBatch(t *testing.T) {
	const steps = 9
	spec := twoEpochs()
	ref := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, func(w *worker.Trainer) { w.Prefetch = true })

	ctx := context.Background()
	tr, red := testTrainer(t, freshDevice(t, PrecisionFP32), spec, func(w *worker.Trainer) { w.Prefetch = true })
	f, err := tr.Feed(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var r feedRun
	for range 3 {
		r.step(t, tr, f, red)
	}
	snap, err := tr.Snapshot(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lost feedRun // steps 3 and 4, rolled back
	lost.step(t, tr, f, red)
	lost.step(t, tr, f, red) // batch 5 is uploaded ahead now
	before := tr.PrefetchStats()
	if err := tr.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Next(ctx); !errors.Is(err, worker.ErrStaleFeed) {
		t.Fatalf("the feed after a restore gave %v, want ErrStaleFeed", err)
	}
	f.Close()
	after := tr.PrefetchStats()
	if after.Dropped != before.Dropped+1 || after.HostWait <= before.HostWait {
		t.Fatalf("restore: %+v before, %+v after; want one batch dropped after a host wait for its copies", before, after)
	}
	if tr.Step != 3 {
		t.Fatalf("restored to step %d, want 3", tr.Step)
	}

	f, err = tr.Feed(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for tr.Step < steps {
		r.step(t, tr, f, red)
	}
	r.finish(t, tr)
	sameRun(t, "after the rollbacks", ref, r)
}

// A failed step's prefetched batch is dropped when the feed closes (the
// worker ends its session): a NaN in step 2's gradients is reported after
// batch 3 went up; closing the feed waits for its copies and drops it.
func TestPrefetchFailedStepDropsBatch(t *testing.T) {
	ctx := context.Background()
	p := &poisonBackend{Backend: freshDevice(t, PrecisionFP32), where: "grad", armAt: 2}
	tr, red := testTrainer(t, p, tinySpec(), func(w *worker.Trainer) { w.Prefetch = true })
	f, err := tr.Feed(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var r feedRun
	r.step(t, tr, f, red)
	r.step(t, tr, f, red)
	b, err := f.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.TrainStep(ctx, b, red, 1); !errors.Is(err, nn.ErrNonFinite) {
		t.Fatalf("step 2: %v, want ErrNonFinite", err)
	}
	before := tr.PrefetchStats()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	after := tr.PrefetchStats()
	t.Logf("before close %+v, after %+v", before, after)
	if before.Ahead != 3 || after.Dropped != before.Dropped+1 || after.HostWait != before.HostWait+1 {
		t.Fatalf("%+v before close, %+v after: want batch 3 uploaded ahead, then dropped after one host wait", before, after)
	}
}

// Two workers (one emulated GPU each, over the in-memory ring): with the
// prefetch, through host memory and device to device, every rank's
// parameters, BN buffers and step losses and counts are bit-identical to
// the host ring without it, and the batches after the first went up
// during the step before theirs.
func TestPrefetchRingMatches(t *testing.T) {
	spec := tinySpec()
	spec.GlobalBatch, spec.BatchNorm = 12, "average"
	train, test, err := worker.OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	const world, steps = 2, 4
	backends := []*Backend{emuOrSkip(t), emuOrSkip(t)}
	run := func(prefetch, deviceRing bool) [][]float32 {
		net := allreduce.NewInmemNetwork()
		peers := []string{"a", "b"}
		out := make([][]float32, world)
		errs := make([]error, world)
		var wg sync.WaitGroup
		for r := range world {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[r] = func() error {
					ctx := context.Background()
					tr, err := worker.NewTrainer(spec, backends[r], train, test)
					if err != nil {
						return err
					}
					defer tr.Close()
					tr.Prefetch, tr.DeviceRing = prefetch, deviceRing
					ring, err := allreduce.Open(ctx, net.Transport(peers[r]), allreduce.DefaultConfig("j", 1, r, world), peers)
					if err != nil {
						return err
					}
					defer ring.Close()
					red, err := tr.NewReducer(ring)
					if err != nil {
						return err
					}
					if _, err := tr.AttachDeviceRing(ctx, ring, world); err != nil {
						return err
					}
					defer tr.DetachDeviceRing()
					if tr.DeviceRingActive() != deviceRing {
						return fmt.Errorf("device ring active %v, want %v", tr.DeviceRingActive(), deviceRing)
					}
					f, err := tr.Feed(ctx, r, world)
					if err != nil {
						return err
					}
					defer f.Close()
					var metrics []float32
					for range steps {
						b, err := f.Next(ctx)
						if err != nil {
							return err
						}
						res, err := tr.TrainStep(ctx, b, red, world)
						if err != nil {
							return err
						}
						metrics = append(metrics, float32(res.Loss), float32(res.Correct))
					}
					if st := tr.PrefetchStats(); prefetch && st.Ahead != steps {
						return fmt.Errorf("prefetch %+v: want %d batches uploaded ahead", st, steps)
					}
					p, bufs := tr.Model.ParamsFlat(), tr.Model.BuffersFlat()
					out[r] = make([]float32, p.Numel()+bufs.Numel())
					backends[r].ToHost(out[r][:p.Numel()], p)
					backends[r].ToHost(out[r][p.Numel():], bufs)
					out[r] = append(out[r], metrics...)
					return backends[r].Err()
				}()
			}()
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("prefetch %v, device ring %v, rank %d: %v", prefetch, deviceRing, r, err)
			}
		}
		return out
	}
	ref := run(false, false)
	for _, c := range []struct{ prefetch, deviceRing bool }{{true, false}, {true, true}} {
		got := run(c.prefetch, c.deviceRing)
		for r := range world {
			for i := range ref[0] {
				if math.Float32bits(got[r][i]) != math.Float32bits(ref[0][i]) {
					t.Fatalf("prefetch %v, device ring %v: rank %d value %d (parameters, BN buffers, then each step's loss and count) %v, host ring without prefetch %v",
						c.prefetch, c.deviceRing, r, i, got[r][i], ref[0][i])
				}
			}
		}
	}
}

// badSample makes one sample of a dataset bad: an out-of-range label, or
// a NaN pixel.
type badSample struct {
	data.Dataset
	at  int
	nan bool
}

func (d badSample) Get(i int, dst []float32) (int, error) {
	l, err := d.Dataset.Get(i, dst)
	if i == d.at {
		if d.nan {
			sh := d.Shape()
			dst[sh.H/2*sh.W+sh.W/2] = float32(math.NaN()) // the centre: kept by any crop
		} else {
			l = len(d.Classes()) + 3
		}
	}
	return l, err
}

// A bad input still fails its own step, not the one before it (during
// which the prefetch takes it from the loader): an out-of-range label in
// step 2's batch (the loader's error) comes from the feed's Next for step
// 2, a NaN pixel fails step 2 with nn.ErrNonFinite naming the input, with
// and without the prefetch, after the same two good steps.
func TestPrefetchBadInputFailsItsStep(t *testing.T) {
	spec := tinySpec()
	ref := trainFeed(t, freshDevice(t, PrecisionFP32), spec, 3, nil)
	at := ref.idx[2][3] // a sample of step 2's batch
	ctx := context.Background()
	for _, nan := range []bool{false, true} {
		for _, prefetch := range []bool{false, true} {
			train, test, err := worker.OpenDatasets(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := worker.NewTrainer(spec, freshDevice(t, PrecisionFP32), badSample{train, at, nan}, test)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			tr.Prefetch = prefetch
			red := soloReducer(t, tr)
			f, err := tr.Feed(ctx, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			for s := 0; s < 3 && serr == nil; s++ {
				b, err := f.Next(ctx)
				if err != nil {
					serr = err
					break
				}
				var res worker.StepResult
				if res, serr = tr.TrainStep(ctx, b, red, 1); serr == nil && res.Loss != ref.res[s].Loss {
					t.Fatalf("nan %v prefetch %v: step %d loss %v, want %v", nan, prefetch, s, res.Loss, ref.res[s].Loss)
				}
			}
			f.Close()
			want, text := data.ErrCorrupt, "has label 13"
			if nan {
				want, text = nn.ErrNonFinite, "input has 1 NaN/Inf"
			}
			if !errors.Is(serr, want) || !strings.Contains(serr.Error(), text) || tr.Step != 2 {
				t.Fatalf("nan %v prefetch %v: %v at step %d; want %q at step 2", nan, prefetch, serr, tr.Step, text)
			}
			t.Logf("nan %v prefetch %v: %v", nan, prefetch, serr)
		}
	}
}

// A device that cannot make the copy stream turns the prefetch off for
// the trainer, logged once, without a sticky error: the steps upload
// their own input, with the same results.
func TestPrefetchWithoutCopyStreamFallsBack(t *testing.T) {
	const steps = 3
	spec := tinySpec()
	off := trainFeed(t, freshDevice(t, PrecisionFP32), spec, steps, nil)
	dev, emu := emuGraphOrSkip(t)
	emu.streams.noStream = true
	var logs []string
	on := trainFeed(t, dev, spec, steps, func(w *worker.Trainer) {
		w.Prefetch = true
		w.Logf = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	})
	if len(logs) != 1 || !strings.Contains(logs[0], "input prefetch off") || on.stats != (worker.PrefetchStats{}) || dev.Err() != nil {
		t.Fatalf("logs %q, %+v, sticky %v; want one line saying the prefetch is off, no uploads, no error", logs, on.stats, dev.Err())
	}
	t.Log(logs[0])
	sameRun(t, "no copy stream", off, on)
}

// Trainers made one after another on one backend (a worker's benchmark
// rounds) reuse the prefetch's fences: the device's events stay at the
// first trainer's four, and each trainer still prefetches. A closed trainer
// leaves no device memory behind.
func TestPrefetchFencesReused(t *testing.T) {
	dev, emu := emuGraphOrSkip(t)
	spec := tinySpec()
	ctx := context.Background()
	var live uint64 // device memory in use after the first trainer closed
	for round := 0; round < 3; round++ {
		tr, red := testTrainer(t, dev, spec, func(w *worker.Trainer) { w.Prefetch = true })
		f, err := tr.Feed(ctx, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		var r feedRun
		for range 3 {
			r.step(t, tr, f, red)
		}
		if st := tr.PrefetchStats(); st.Ahead == 0 {
			t.Fatalf("round %d: no batch uploaded ahead: %+v", round, st)
		}
		f.Close()
		tr.Close()
		if n := len(emu.streams.events); n != 4 {
			t.Fatalf("round %d: the device holds %d events, want the first trainer's 4", round, n)
		}
		// Nothing of a closed trainer stays allocated (model, optimizer
		// state, input slots, the step's buffers): what is left is the
		// backend's own scratch, the same after every round.
		if l := dev.PoolStats().LiveBytes; round == 0 {
			live = l
		} else if l != live {
			t.Fatalf("round %d: %d bytes of device memory in use after the trainer closed, %d after the first", round, l, live)
		}
	}
	if err := dev.Err(); err != nil {
		t.Fatal(err)
	}
}

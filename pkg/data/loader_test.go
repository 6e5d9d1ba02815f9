package data

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func newTestLoader(t *testing.T, cfg LoaderConfig) *Loader {
	t.Helper()
	l, err := NewLoader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// drain reads batches until io.EOF, copying what it keeps.
type seenBatch struct {
	shard  Shard
	labels []int32
	hash   uint64
}

func drain(t *testing.T, l *Loader, max int) []seenBatch {
	t.Helper()
	var out []seenBatch
	for len(out) < max {
		b, err := l.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b.X) != b.N*b.Shape.Len() || len(b.Labels) != b.N || len(b.Indices) != b.N {
			t.Fatalf("batch of %d: %d values, %d labels, %d indices", b.N, len(b.X), len(b.Labels), len(b.Indices))
		}
		h := fnv.New64a()
		for _, v := range b.X {
			bits := math.Float32bits(v)
			h.Write([]byte{byte(bits), byte(bits >> 8), byte(bits >> 16), byte(bits >> 24)})
		}
		out = append(out, seenBatch{shard: b.Shard, labels: slices.Clone(b.Labels), hash: h.Sum64()})
	}
	return out
}

func TestLoaderBatchesAreSamplerStepsTransformed(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(301, 9)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 3, Shuffle: true})
	tr := TrainTransform()
	const b, world = 40, 3
	seen := make([]int, 2*ds.Len())
	for rank := range world {
		l := newTestLoader(t, LoaderConfig{Dataset: ds, Sampler: sampler, Transform: tr, Seed: 17,
			GlobalBatch: b, Rank: rank, World: world, StopEpoch: 2, Workers: 3, Prefetch: 2})
		pos := Position{}
		src := make([]float32, CIFARShape.Len())
		want := make([]float32, CIFARShape.Len())
		for {
			bt, err := l.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			sh, _ := sampler.Step(pos, b, rank, world)
			if bt.Pos != pos || !slices.Equal(bt.Indices, sh.Indices) || bt.Next != sh.Next {
				t.Fatalf("rank %d at %v: batch %v/%v, sampler %v", rank, pos, bt.Pos, bt.Indices, sh.Indices)
			}
			for k, idx := range bt.Indices {
				label, _ := ds.Get(idx, src)
				tr.Apply(want, src, CIFARShape, 17, pos.Epoch, idx)
				if int(bt.Labels[k]) != label || !slices.Equal(bt.X[k*len(want):(k+1)*len(want)], want) {
					t.Fatalf("rank %d sample %d (index %d) differs from a direct transform", rank, k, idx)
				}
				seen[pos.Epoch*ds.Len()+idx]++
			}
			pos = bt.Next
		}
		if pos != (Position{Epoch: 2}) {
			t.Fatalf("rank %d stopped at %v", rank, pos)
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("epoch %d sample %d loaded %d times", i/ds.Len(), i%ds.Len(), c)
		}
	}
}

func TestLoaderSameBatchesWhateverTheWorkers(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(500, 1)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 8, Shuffle: true, DropLast: true})
	cfg := LoaderConfig{Dataset: ds, Sampler: sampler, Transform: TrainTransform(), Seed: 2,
		GlobalBatch: 64, Rank: 1, World: 2, StopEpoch: 3}
	cfg.Workers, cfg.Prefetch = 1, 1
	a := drain(t, newTestLoader(t, cfg), 1000)
	cfg.Workers, cfg.Prefetch = 6, 5
	b := drain(t, newTestLoader(t, cfg), 1000)
	if len(a) != 3*7 || len(a) != len(b) {
		t.Fatalf("%d and %d batches, want 21", len(a), len(b))
	}
	for i := range a {
		if a[i].hash != b[i].hash || !slices.Equal(a[i].labels, b[i].labels) || !slices.Equal(a[i].shard.Indices, b[i].shard.Indices) {
			t.Fatalf("batch %d differs between 1 and 6 workers", i)
		}
	}
}

func TestLoaderResumeAndWorldChange(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(1000, 4)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 6, Shuffle: true})
	base := LoaderConfig{Dataset: ds, Sampler: sampler, Transform: TrainTransform(), Seed: 5, GlobalBatch: 96, World: 1, StopEpoch: 2}
	full := drain(t, newTestLoader(t, base), 1000)
	// Resume from the committed position after step 4 (a fresh sampler,
	// as after a restart): the remaining batches are identical.
	resumed := base
	resumed.Sampler, _ = NewSampler(ds.Len(), SamplerConfig{Seed: 6, Shuffle: true})
	resumed.Start = full[4].shard.Next
	rest := drain(t, newTestLoader(t, resumed), 1000)
	if len(rest) != len(full)-5 {
		t.Fatalf("%d batches after resuming, want %d", len(rest), len(full)-5)
	}
	for i := range rest {
		if rest[i].hash != full[5+i].hash || rest[i].shard.Pos != full[5+i].shard.Pos {
			t.Fatalf("batch %d after resume differs", i)
		}
	}

	// Elastic: 4 ranks for 3 steps, then 3 ranks from the committed
	// position, then 5: every sample of epoch 0 exactly once.
	seen := make([]int, ds.Len())
	pos := Position{}
	for _, phase := range []struct{ world, steps int }{{4, 3}, {3, 4}, {5, 100}} {
		var next Position
		for rank := range phase.world {
			cfg := base
			cfg.Rank, cfg.World, cfg.Start, cfg.StopEpoch = rank, phase.world, pos, 1
			got := drain(t, newTestLoader(t, cfg), phase.steps)
			for _, bt := range got {
				for _, idx := range bt.shard.Indices {
					seen[idx]++
				}
			}
			next = got[len(got)-1].shard.Next
		}
		pos = next
	}
	if pos != (Position{Epoch: 1}) {
		t.Fatalf("elastic run ended at %v", pos)
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("sample %d seen %d times across world sizes 4, 3, 5", i, c)
		}
	}
}

func TestLoaderEndOfDataAndClose(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(100, 1)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{})
	l, err := NewLoader(context.Background(), LoaderConfig{Dataset: ds, Sampler: sampler, GlobalBatch: 32, World: 1, StopEpoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, l, 100)
	if len(got) != 4 || got[3].shard.GlobalSize != 4 || !slices.Equal(got[0].shard.Indices, Iota(32)) {
		t.Fatalf("%d batches (last of %d), want 4 (last of 4) in index order", len(got), got[len(got)-1].shard.GlobalSize)
	}
	if _, err := l.Next(context.Background()); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := l.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	// Closing a loader that is mid-flight (buffers full, workers busy).
	l, _ = NewLoader(context.Background(), LoaderConfig{Dataset: ds, Sampler: sampler, GlobalBatch: 32, World: 1, Prefetch: 4})
	if _, err := l.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// Iota returns 0..n-1.
func Iota(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// gated is a dataset whose Get blocks until the gate opens and counts calls.
type gated struct {
	*Synthetic
	gate  chan struct{}
	calls atomic.Int64
	fail  int // Get of this index fails (-1: never)
	// onCall, when set, sees each call's index and count (before the gate).
	onCall func(i int, n int64)
}

var errGated = errors.New("gated: injected failure")

func (g *gated) Get(i int, dst []float32) (int, error) {
	n := g.calls.Add(1)
	if g.onCall != nil {
		g.onCall(i, n)
	}
	<-g.gate
	if i == g.fail {
		return 0, errGated
	}
	return g.Synthetic.Get(i, dst)
}

func TestLoaderCancellationAndBoundedPrefetch(t *testing.T) {
	noLeaks(t)
	syn, _ := NewSynthetic(1000, 1)
	g := &gated{Synthetic: syn, gate: make(chan struct{}), fail: -1}
	// Steps are samples 10k..10k+9 in order. Three buffers hold steps 0-2
	// (30 samples); step 3's samples may load only once the caller hands a
	// buffer back, which it does after setting released.
	var released atomic.Bool
	var early atomic.Int64
	filled, refilled := make(chan struct{}), make(chan struct{})
	g.onCall = func(i int, n int64) {
		if i >= 30 && !released.Load() {
			early.Add(1)
		}
		switch n {
		case 30:
			close(filled)
		case 40:
			close(refilled)
		}
	}
	sampler, _ := NewSampler(g.Len(), SamplerConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := NewLoader(ctx, LoaderConfig{Dataset: g, Sampler: sampler, GlobalBatch: 10, World: 1, Workers: 2, Prefetch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The caller stops waiting: ctx's error, and the same batch later.
	short, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	if _, err := l.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with an expired context: %v", err)
	}
	close(g.gate)
	b, err := l.Next(context.Background())
	if err != nil || b.Pos != (Position{}) || !slices.Equal(b.Indices, Iota(10)) {
		t.Fatalf("after a timed-out Next: batch at %v, %v", b.Pos, err)
	}
	// Memory is bounded: the producers fill the three buffers and load
	// step 3 only into the buffer the caller hands back with its next Next
	// (an unbounded loader would load it right after step 2).
	awaitClosed(t, filled, "steps 0-2 loaded")
	released.Store(true)
	if b, err := l.Next(context.Background()); err != nil || b.Pos.Cursor != 10 {
		t.Fatalf("second batch: %v, %v", b, err)
	}
	awaitClosed(t, refilled, "step 3 loaded into the returned buffer")
	if n := early.Load(); n > 0 {
		t.Fatalf("%d samples of step 3 loaded before the caller returned a buffer (3 buffers of 10, the caller holding one)", n)
	}
	// Cancelling the loader's context stops it.
	cancel()
	for range 2 { // at once, although batches were prefetched; and again
		if _, err := l.Next(context.Background()); !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: %v", err)
		}
	}
	l.Close()
}

// awaitClosed waits (at most 10 s) for ch to close.
func awaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("not within 10 s: %s", what)
	}
}

func TestLoaderReportsDatasetErrors(t *testing.T) {
	noLeaks(t)
	syn, _ := NewSynthetic(100, 1)
	g := &gated{Synthetic: syn, gate: make(chan struct{}), fail: 25}
	close(g.gate)
	sampler, _ := NewSampler(g.Len(), SamplerConfig{})
	l := newTestLoader(t, LoaderConfig{Dataset: g, Sampler: sampler, GlobalBatch: 20, World: 1})
	for i := range 2 {
		_, err := l.Next(context.Background())
		if i == 0 && err != nil {
			t.Fatal(err)
		}
		if i == 1 && (!errors.Is(err, errGated) || !strings.Contains(err.Error(), "sample 25")) {
			t.Fatalf("failing sample: %v", err)
		}
	}
	if _, err := l.Next(context.Background()); !errors.Is(err, errGated) {
		t.Fatalf("error is not sticky: %v", err)
	}
}

func TestLoaderConfigErrors(t *testing.T) {
	ds, _ := NewSynthetic(10, 1)
	s, _ := NewSampler(10, SamplerConfig{})
	s11, _ := NewSampler(11, SamplerConfig{})
	good := LoaderConfig{Dataset: ds, Sampler: s, GlobalBatch: 4, World: 1}
	for name, mut := range map[string]func(*LoaderConfig){
		"no dataset":      func(c *LoaderConfig) { c.Dataset = nil },
		"no sampler":      func(c *LoaderConfig) { c.Sampler = nil },
		"sampler size":    func(c *LoaderConfig) { c.Sampler = s11 },
		"batch":           func(c *LoaderConfig) { c.GlobalBatch = 0 },
		"rank":            func(c *LoaderConfig) { c.Rank = 1 },
		"world":           func(c *LoaderConfig) { c.World = 0 },
		"start":           func(c *LoaderConfig) { c.Start.Cursor = 11 },
		"workers":         func(c *LoaderConfig) { c.Workers = -1 },
		"hold":            func(c *LoaderConfig) { c.Hold = -1 },
		"hold > prefetch": func(c *LoaderConfig) { c.Hold, c.Prefetch = 3, 2 },
		"bad normalising": func(c *LoaderConfig) { c.Transform = Standard{Mean: []float32{1}, Std: []float32{1}} },
	} {
		c := good
		mut(&c)
		if l, err := NewLoader(context.Background(), c); !errors.Is(err, ErrInvalid) {
			if l != nil {
				l.Close()
			}
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestLoaderRealCIFAR(t *testing.T) {
	noLeaks(t)
	train, _ := loadRealCIFAR(t)
	sampler, _ := NewSampler(train.Len(), SamplerConfig{Seed: 1, Shuffle: true})
	stats := func(tr Transform) (mean, std, padFrac float64) {
		l := newTestLoader(t, LoaderConfig{Dataset: train, Sampler: sampler, Transform: tr, Seed: 1, GlobalBatch: 128, World: 2, Rank: 1})
		pad := (0 - CIFARMean[0]) / CIFARStd[0]
		var sum, sq float64
		var n, pads int
		for range 40 {
			b, err := l.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if b.N != 64 {
				t.Fatalf("rank 1 of 2 got %d samples of 128", b.N)
			}
			for k := range b.N { // the red plane of every image
				for _, v := range b.X[k*3072 : k*3072+1024] {
					sum += float64(v)
					sq += float64(v) * float64(v)
					if v == pad {
						pads++
					}
				}
			}
			n += b.N * 1024
		}
		mean = sum / float64(n)
		return mean, math.Sqrt(sq/float64(n) - mean*mean), float64(pads) / float64(n)
	}
	// Normalisation only: the red channel's mean (0.4913) and std (0.2452)
	// of this copy, in units of the tutorial's constants.
	mean, std, _ := stats(EvalTransform())
	if math.Abs(mean-(0.4913-0.4914)/0.2023) > 0.05 || math.Abs(std-0.2452/0.2023) > 0.06 {
		t.Fatalf("normalised red channel: mean %.3f std %.3f, want about 0 and 1.21", mean, std)
	}
	// Random crops with 4-pixel padding: offsets uniform in -4..4 pad
	// 1 - (32 - E|d|)^2 / 32^2 = 13.4% of the pixels (E|d| = 20/9).
	_, _, frac := stats(TrainTransform())
	if want := 1 - math.Pow(32-20.0/9, 2)/1024; math.Abs(frac-want) > 0.01 {
		t.Fatalf("%.4f of the pixels are padding, want %.4f", frac, want)
	}
}

// noLeaks checks, after the test and all its cleanups (Close included),
// that no goroutine started during the test is still running.
func noLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// BenchmarkLoader measures augmented images per second through the loader
// (CIFAR-10 when the archive is available, else synthetic images).
func BenchmarkLoader(b *testing.B) {
	var ds Dataset
	if p, _ := locateArchive(); p != "" {
		train, err := LoadCIFAR10Archive(p, Train)
		if err != nil {
			b.Fatal(err)
		}
		ds = train
	} else {
		ds, _ = SyntheticSplit(Train, 1)
	}
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 1, Shuffle: true})
	l, err := NewLoader(context.Background(), LoaderConfig{Dataset: ds, Sampler: sampler, Transform: TrainTransform(), Seed: 1, GlobalBatch: 128, World: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	images := 0
	b.ResetTimer()
	for b.Loop() {
		bt, err := l.Next(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		images += bt.N
	}
	b.ReportMetric(float64(images)/b.Elapsed().Seconds(), "images/s")
}

// Alloc's buffers hold the batches (the same batches as ordinary
// memory) and each goes back to Release exactly once, after Close has
// stopped the goroutines; a short buffer from Alloc is not used.
func TestLoaderAllocRelease(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(100, 1)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 3, Shuffle: true})
	cfg := LoaderConfig{Dataset: ds, Sampler: sampler, Transform: TrainTransform(), Seed: 2, GlobalBatch: 16, World: 1, StopEpoch: 1}
	want := drain(t, newTestLoader(t, cfg), 100)
	var given, back [][]float32
	calls := 0
	cfg.Alloc = func(n int) []float32 {
		calls++
		if calls == 2 {
			return make([]float32, n-1) // too short: the loader makes its own
		}
		b := make([]float32, n+7)
		given = append(given, b)
		return b
	}
	cfg.Release = func(b []float32) { back = append(back, b) }
	l, err := NewLoader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	first, err := l.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inAlloc := false
	for _, g := range given {
		inAlloc = inAlloc || &g[0] == &first.X[0]
	}
	got := append([]seenBatch{{}}, drain(t, l, 100)...)
	if !inAlloc || len(got) != len(want) {
		t.Fatalf("first batch in an Alloc buffer: %v; %d batches, want %d", inAlloc, len(got), len(want))
	}
	for i := 1; i < len(want); i++ {
		if got[i].hash != want[i].hash {
			t.Fatalf("batch %d differs from the one in ordinary memory", i)
		}
	}
	if len(back) != 0 {
		t.Fatal("buffers released before Close")
	}
	l.Close()
	l.Close()
	if calls != 3 || len(back) != 2 || len(back[0]) != len(given[0]) || &back[0][0] != &given[0][0] || &back[1][0] != &given[1][0] {
		t.Fatalf("%d Alloc calls, %d buffers back (want 3 and the 2 that were long enough, whole)", calls, len(back))
	}
}

// With Hold 2 the batch returned before the latest stays valid (a trainer
// uploads step s+1's batch while step s still uses its own): its images
// and labels are unchanged while the loader goes on, with however few
// buffers, and the batches are those of Hold 1.
func TestLoaderHoldKeepsTwoBatches(t *testing.T) {
	noLeaks(t)
	ds, _ := NewSynthetic(200, 3)
	sampler, _ := NewSampler(ds.Len(), SamplerConfig{Seed: 4, Shuffle: true})
	cfg := LoaderConfig{Dataset: ds, Sampler: sampler, Transform: TrainTransform(), Seed: 9, GlobalBatch: 16, World: 1, StopEpoch: 2}
	want := drain(t, newTestLoader(t, cfg), 1000)
	for _, prefetch := range []int{2, 0} {
		cfg.Hold, cfg.Prefetch = 2, prefetch
		l := newTestLoader(t, cfg)
		var prev *Batch
		var prevX []float32
		var prevLabels []int32
		n := 0
		for ; ; n++ {
			b, err := l.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // the workers may overwrite a recycled buffer meanwhile
			if prev != nil && (!slices.Equal(prev.X, prevX) || !slices.Equal(prev.Labels, prevLabels)) {
				t.Fatalf("prefetch %d: batch %d changed after the next Next (Hold 2)", prefetch, n-1)
			}
			if n >= len(want) || !slices.Equal(b.Labels, want[n].labels) || !slices.Equal(b.Indices, want[n].shard.Indices) {
				t.Fatalf("prefetch %d: batch %d differs from Hold 1's", prefetch, n)
			}
			prev, prevX, prevLabels = b, slices.Clone(b.X), slices.Clone(b.Labels)
		}
		if n != len(want) {
			t.Fatalf("prefetch %d: %d batches, want %d", prefetch, n, len(want))
		}
	}
}

package allreduce

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"
)

// contiguousSpans lays params of the given lengths out in forward order.
func contiguousSpans(lens ...int) ([]Span, int) {
	s := make([]Span, len(lens))
	off := 0
	for i, l := range lens {
		s[i] = Span{off, l}
		off += l
	}
	return s, off
}

func TestReducerBucketPlan(t *testing.T) {
	ring, err := NewRing(nil, DefaultConfig("j", 1, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	// 4-byte floats: params of 100, 200, 300, 50, 0 (frozen), 400 elements.
	spans, total := contiguousSpans(100, 200, 300, 50, 0, 400)
	r, err := NewReducer(ring, make([]float32, total), spans, ReducerConfig{FirstBucketBytes: 4 * 400, BucketBytes: 4 * 360})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Buckets()
	want := [][]int{{5}, {3, 2}, {1, 0}}
	if len(got) != len(want) {
		t.Fatalf("buckets %+v, want params %v", got, want)
	}
	for i := range want {
		if len(got[i].Params) != len(want[i]) || !got[i].InPlace {
			t.Fatalf("bucket %d: %+v, want params %v in place", i, got[i], want[i])
		}
		for j := range want[i] {
			if got[i].Params[j] != want[i][j] {
				t.Fatalf("bucket %d: %+v, want params %v", i, got[i], want[i])
			}
		}
	}
	if _, err := NewReducer(ring, make([]float32, 10), []Span{{5, 10}}, ReducerConfig{}); !errorsIs(err, ErrLength) {
		t.Fatalf("span outside gradient: %v", err)
	}
	if err := r.MarkReady(0); !errorsIs(err, ErrState) {
		t.Fatalf("MarkReady outside a step: %v", err)
	}
	if err := r.Begin(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := r.MarkReady(5); err != nil {
		t.Fatal(err)
	}
	if err := r.MarkReady(5); !errorsIs(err, ErrState) {
		t.Fatalf("second MarkReady: %v", err)
	}
	if _, err := r.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestReducerSumsAndExtras: three workers, parameters in several buckets
// (one non-contiguous plus BN extras): every worker ends with the same
// bits, gradients equal to the ring-order sum, extras averaged.
func TestReducerSumsAndExtras(t *testing.T) {
	const n = 3
	cfg := DefaultConfig("j", 1, 0, n)
	cfg.ChunkBytes = 4 << 10
	rings := openRings(t, inmemFabric, n, cfg)
	lens := []int{3000, 17, 5000, 1, 8000, 2500}
	spans, total := contiguousSpans(lens...)
	spans[0], spans[1] = Span{17, 3000}, Span{0, 17} // param 1 stored before param 0: still one contiguous range
	grads := inputs(11, n, total)
	orig := clone(grads)
	extra := inputs(12, n, 64)
	origExtra := clone(extra)
	var wg sync.WaitGroup
	errs := make([]error, n)
	reducers := make([]*Reducer, n)
	for w := 0; w < n; w++ {
		var err error
		reducers[w], err = NewReducer(rings[w], grads[w], spans, ReducerConfig{BucketBytes: 4 * 8000, FirstBucketBytes: 4 * 2500, Extra: [][]float32{extra[w]}})
		if err != nil {
			t.Fatal(err)
		}
	}
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := reducers[w]
			if err := r.Begin(context.Background(), 4); err != nil {
				errs[w] = err
				return
			}
			for i := len(spans) - 1; i >= 0; i-- {
				if err := r.MarkReady(i); err != nil {
					errs[w] = err
					return
				}
			}
			_, errs[w] = r.Wait(context.Background())
		}(w)
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", w, err)
		}
	}
	if b := reducers[0].Buckets(); b[len(b)-1].InPlace {
		t.Fatalf("last bucket carries extras but is in place: %+v", b)
	}
	for e := 0; e < total; e++ {
		exact, abs := 0.0, 0.0
		for k := 0; k < n; k++ {
			exact += float64(orig[k][e])
			abs += math.Abs(float64(orig[k][e]))
		}
		for w := 0; w < n; w++ {
			if math.Float32bits(grads[w][e]) != math.Float32bits(grads[0][e]) {
				t.Fatalf("elem %d: worker %d differs from worker 0", e, w)
			}
		}
		if d := math.Abs(float64(grads[0][e]) - exact); d > n*0x1p-24*abs {
			t.Fatalf("elem %d: %v, exact %v", e, grads[0][e], exact)
		}
	}
	for e := range extra[0] {
		mean := 0.0
		for k := 0; k < n; k++ {
			mean += float64(origExtra[k][e])
		}
		mean /= n
		for w := 0; w < n; w++ {
			if math.Abs(float64(extra[w][e])-mean) > 1e-6*math.Abs(mean)+1e-30 || extra[w][e] != extra[0][e] {
				t.Fatalf("extra elem %d worker %d: %v, mean %v", e, w, extra[w][e], mean)
			}
		}
	}
}

// TestReducerOverlap: with a slow fake backward, the first buckets'
// all-reduces finish while backward is still running, and the stats say
// most communication was hidden.
func TestReducerOverlap(t *testing.T) {
	const n, params, per = 2, 6, 200_000
	rings := openRings(t, inmemFabric, n, DefaultConfig("j", 1, 0, n))
	lens := make([]int, params)
	for i := range lens {
		lens[i] = per
	}
	spans, total := contiguousSpans(lens...)
	grads := inputs(3, n, total)
	var wg sync.WaitGroup
	stats := make([]StepStats, n)
	errs := make([]error, n)
	backwardEnd := make([]time.Time, n)
	firstDone := make([]time.Time, n)
	for w := 0; w < n; w++ {
		r, err := NewReducer(rings[w], grads[w], spans, ReducerConfig{BucketBytes: 4 * per, FirstBucketBytes: 4 * per})
		if err != nil {
			t.Fatal(err)
		}
		if nb := len(r.Buckets()); nb != params {
			t.Fatalf("%d buckets, want %d", nb, params)
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if errs[w] = r.Begin(context.Background(), 1); errs[w] != nil {
				return
			}
			for i := params - 1; i >= 0; i-- {
				time.Sleep(40 * time.Millisecond) // the layer's backward
				if errs[w] = r.MarkReady(i); errs[w] != nil {
					return
				}
			}
			time.Sleep(40 * time.Millisecond) // the rest of backward (input layer)
			backwardEnd[w] = time.Now()
			r.mu.Lock()
			op := r.buckets[0].op
			r.mu.Unlock()
			_, firstDone[w] = op.Times()
			stats[w], errs[w] = r.Wait(context.Background())
		}(w)
	}
	wg.Wait()
	for w := 0; w < n; w++ {
		if errs[w] != nil {
			t.Fatalf("worker %d: %v", w, errs[w])
		}
		if !firstDone[w].Before(backwardEnd[w]) {
			t.Fatalf("worker %d: first bucket done at %v, after backward ended at %v", w, firstDone[w], backwardEnd[w])
		}
		s := stats[w]
		t.Logf("worker %d: %d buckets, comm %v, hidden %v (%.0f%%), exposed %v", w, s.Buckets, s.Comm, s.Hidden, 100*s.HiddenFraction(), s.Exposed)
		if s.Buckets != params || s.HiddenFraction() < 0.5 {
			t.Fatalf("worker %d: stats %+v: overlap did not happen", w, s)
		}
	}
}

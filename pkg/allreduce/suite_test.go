package allreduce

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// fabric builds the transports of one n-rank ring for a test; every
// transport runs the same suite.
type fabric struct {
	name string
	make func(t *testing.T, n int) (ts []Transport, peers []string)
}

var inmemFabric = fabric{"inmem", func(t *testing.T, n int) ([]Transport, []string) {
	net := NewInmemNetwork()
	ts := make([]Transport, n)
	peers := make([]string, n)
	for i := range ts {
		peers[i] = fmt.Sprintf("w%d", i)
		ts[i] = net.Transport(peers[i])
	}
	return ts, peers
}}

// openRings opens an n-rank ring over f with cfg (Rank/World filled per
// rank) and closes it when the test ends.
func openRings(t *testing.T, f fabric, n int, cfg Config) []*Ring {
	t.Helper()
	ts, peers := f.make(t, n)
	rings := make([]*Ring, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := cfg
			c.Rank, c.World = i, n
			rings[i], errs[i] = Open(ctx, ts[i], c, peers)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open rank %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		for _, r := range rings {
			_ = r.Close()
		}
	})
	return rings
}

// allReduceAll runs one collective on every ring concurrently.
func allReduceAll(rings []*Ring, tag Tag, vecs [][]float32, red Reduction) []error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i := range rings {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = rings[i].AllReduce(context.Background(), tag, vecs[i], red)
		}(i)
	}
	wg.Wait()
	return errs
}

// inputs returns n random vectors of length l (values of mixed magnitude,
// so that the summation order matters in float32).
func inputs(seed int64, n, l int) [][]float32 {
	rng := rand.New(rand.NewSource(seed))
	v := make([][]float32, n)
	for i := range v {
		v[i] = make([]float32, l)
		for j := range v[i] {
			v[i][j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.Intn(7)-3)))
		}
	}
	return v
}

func clone(v [][]float32) [][]float32 {
	c := make([][]float32, len(v))
	for i := range v {
		c[i] = append([]float32(nil), v[i]...)
	}
	return c
}

// ringOrderSum is the documented summation order of the bandwidth path:
// element e of segment s is ((x_s + x_{s+1}) + ...) + x_{s-1}, all in float32.
func ringOrderSum(in [][]float32, e int) float32 {
	n, l := len(in), len(in[0])
	s := 0
	for ; s < n; s++ {
		if lo, hi := segBounds(l, n, s); e >= lo && e < hi {
			break
		}
	}
	acc := in[s][e]
	for k := 1; k < n; k++ {
		acc = in[(s+k)%n][e] + acc
	}
	return acc
}

func runSuite(t *testing.T, f fabric) {
	t.Run("ExactOrderAllN", func(t *testing.T) { testExactOrder(t, f) })
	t.Run("SmallPath", func(t *testing.T) { testSmallPath(t, f) })
	t.Run("MeanAndRuns", func(t *testing.T) { testMeanAndRuns(t, f) })
	t.Run("BF16Bound", func(t *testing.T) { testBF16(t, f) })
	t.Run("StaleGeneration", func(t *testing.T) { testStaleGeneration(t, f) })
	t.Run("MalformedFrames", func(t *testing.T) { testMalformed(t, f) })
	t.Run("StalledPeer", func(t *testing.T) { testStalledPeer(t, f) })
	t.Run("LengthMismatch", func(t *testing.T) { testLengthMismatch(t, f) })
}

// testExactOrder: for N = 1..16 and lengths around N (and not divisible
// by it), every worker gets exactly the float32 sum in the documented ring
// order (hence identical bits everywhere), and it is within float32
// rounding of the float64 sum.
func testExactOrder(t *testing.T, f fabric) {
	ns := []int{1, 2, 3, 4, 5, 7, 8, 16}
	if testing.Short() {
		ns = []int{1, 2, 3, 5, 16}
	}
	for _, n := range ns {
		cfg := DefaultConfig("job", 7, 0, n)
		cfg.ChunkBytes = 64 // many chunks per segment: exercises the pipeline
		cfg.SmallBytes = -1
		rings := openRings(t, f, n, cfg)
		// 16n + n/2: some segments have one chunk more than others.
		for li, l := range []int{1, n - 1, n, n + 1, 3*n + 2, 61, 1000, 16*n + n/2} {
			if l < 1 {
				continue
			}
			in := inputs(int64(100*n+li), n, l)
			out := clone(in)
			for i, err := range allReduceAll(rings, Tag{Step: 1, Bucket: uint32(li)}, out, Sum) {
				if err != nil {
					t.Fatalf("n=%d l=%d rank %d: %v", n, l, i, err)
				}
			}
			worst := 0.0
			for e := 0; e < l; e++ {
				want := ringOrderSum(in, e)
				abs, exact := 0.0, 0.0
				for k := 0; k < n; k++ {
					exact += float64(in[k][e])
					abs += math.Abs(float64(in[k][e]))
				}
				for i := 0; i < n; i++ {
					if math.Float32bits(out[i][e]) != math.Float32bits(want) {
						t.Fatalf("n=%d l=%d rank %d elem %d: got %v, ring-order sum %v", n, l, i, e, out[i][e], want)
					}
				}
				errRel := math.Abs(float64(want)-exact) / (abs + 1e-30)
				worst = math.Max(worst, errRel)
				if bound := float64(n) * 0x1p-24; errRel > bound {
					t.Fatalf("n=%d l=%d elem %d: |sum-exact|/sum|x| = %g > %g", n, l, e, errRel, bound)
				}
			}
			_ = worst
		}
	}
}

// testSmallPath: the latency path gives every worker the float64 sum in
// rank order, rounded once, for tiny vectors and any N.
func testSmallPath(t *testing.T, f fabric) {
	for _, n := range []int{2, 3, 6} {
		rings := openRings(t, f, n, DefaultConfig("job", 1, 0, n))
		for step, l := range []int{1, 2, 64, 1000} {
			in := inputs(int64(n*7+l), n, l)
			out := clone(in)
			for i, err := range allReduceAll(rings, Tag{Step: uint64(step)}, out, Mean) {
				if err != nil {
					t.Fatalf("n=%d l=%d rank %d: %v", n, l, i, err)
				}
			}
			for e := 0; e < l; e++ {
				s := 0.0
				for k := 0; k < n; k++ {
					s += float64(in[k][e])
				}
				want := float32(s / float64(n))
				for i := 0; i < n; i++ {
					if math.Float32bits(out[i][e]) != math.Float32bits(want) {
						t.Fatalf("n=%d l=%d rank %d elem %d: got %v want %v", n, l, i, e, out[i][e], want)
					}
				}
			}
		}
		// Through the nn.ChannelReducer entry point too.
		vs := inputs(5, n, 16)
		want := make([]float32, 16)
		for e := range want {
			s := 0.0
			for k := 0; k < n; k++ {
				s += float64(vs[k][e])
			}
			want[e] = float32(s)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range rings {
			wg.Add(1)
			go func(i int) { defer wg.Done(); errs[i] = rings[i].AllReduceSum(vs[i]) }(i)
		}
		wg.Wait()
		for i := range rings {
			if errs[i] != nil {
				t.Fatalf("AllReduceSum rank %d: %v", i, errs[i])
			}
			for e := range want {
				if vs[i][e] != want[e] {
					t.Fatalf("AllReduceSum rank %d elem %d: got %v want %v", i, e, vs[i][e], want[e])
				}
			}
		}
	}
}

// testMeanAndRuns: two runs of the same inputs give the same bits on every
// worker, and Mean equals Sum / N of the same order.
func testMeanAndRuns(t *testing.T, f fabric) {
	const n, l = 4, 50_001
	cfg := DefaultConfig("job", 3, 0, n)
	cfg.ChunkBytes = 16 << 10
	rings := openRings(t, f, n, cfg)
	in := inputs(42, n, l)
	var first [][]float32
	for run := 0; run < 2; run++ {
		out := clone(in)
		for i, err := range allReduceAll(rings, Tag{Step: uint64(run)}, out, Mean) {
			if err != nil {
				t.Fatalf("run %d rank %d: %v", run, i, err)
			}
		}
		for i := 1; i < n; i++ {
			for e := range out[i] {
				if math.Float32bits(out[i][e]) != math.Float32bits(out[0][e]) {
					t.Fatalf("run %d: rank %d elem %d = %v, rank 0 = %v", run, i, e, out[i][e], out[0][e])
				}
			}
		}
		if first == nil {
			first = out
			for e := 0; e < l; e++ {
				if want := ringOrderSum(in, e) / n; out[0][e] != want {
					t.Fatalf("mean elem %d: got %v want %v", e, out[0][e], want)
				}
			}
			continue
		}
		for e := range out[0] {
			if math.Float32bits(out[0][e]) != math.Float32bits(first[0][e]) {
				t.Fatalf("run %d elem %d differs from run 0: %v vs %v", run, e, out[0][e], first[0][e])
			}
		}
	}
}

// testBF16: with bf16 on the wire the workers still agree bit for bit, and
// every element is within N * 2^-8 * sum|x| of the exact sum (one bf16
// rounding per hop plus the final one).
func testBF16(t *testing.T, f fabric) {
	for _, n := range []int{2, 5} {
		cfg := DefaultConfig("job", 1, 0, n)
		cfg.Compression = CompressBF16
		cfg.ChunkBytes = 4 << 10
		rings := openRings(t, f, n, cfg)
		const l = 20_000
		in := inputs(int64(n), n, l)
		out := clone(in)
		for i, err := range allReduceAll(rings, Tag{Step: 9}, out, Sum) {
			if err != nil {
				t.Fatalf("rank %d: %v", i, err)
			}
		}
		worst := 0.0
		for e := 0; e < l; e++ {
			exact, abs := 0.0, 0.0
			for k := 0; k < n; k++ {
				exact += float64(in[k][e])
				abs += math.Abs(float64(in[k][e]))
			}
			for i := 1; i < n; i++ {
				if math.Float32bits(out[i][e]) != math.Float32bits(out[0][e]) {
					t.Fatalf("n=%d elem %d: rank %d differs", n, e, i)
				}
			}
			rel := math.Abs(float64(out[0][e])-exact) / abs
			worst = math.Max(worst, rel)
			if bound := float64(n) * 0x1p-8; rel > bound {
				t.Fatalf("n=%d elem %d: error %g of sum|x| > bound %g", n, e, rel, bound)
			}
		}
		if worst == 0 {
			t.Fatalf("n=%d: bf16 result is exact everywhere; compression not in effect", n)
		}
		t.Logf("n=%d bf16 worst error %.3g of sum|x| (bound %.3g)", n, worst, float64(n)*0x1p-8)
	}
}

// testStaleGeneration: a rank of an older plan generation cannot join.
// The two ranks open at the same time, in either order: a hello waits for
// the ring it names, and is refused once a newer generation of the job is
// open (or already is).
func testStaleGeneration(t *testing.T, f fabric) {
	ts, peers := f.make(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var newErr error
	var newLink Link
	wg.Add(1)
	go func() {
		defer wg.Done()
		newLink, newErr = ts[0].Open(ctx, Plan{Job: "job", Generation: 5, Rank: 0, Peers: peers})
	}()
	_, err := ts[1].Open(ctx, Plan{Job: "job", Generation: 4, Rank: 1, Peers: peers})
	if !errorsIs(err, ErrGeneration) {
		t.Fatalf("stale generation open: got %v, want ErrGeneration", err)
	}
	cancel()
	wg.Wait()
	if newErr == nil {
		_ = newLink.Close()
		t.Fatalf("rank 0 opened a ring without its neighbour")
	}
}

// fakeLeft opens rank 1 of a 2-ring as a raw Link, so that the test can
// send rank 0 whatever frames it wants.
func fakePair(t *testing.T, f fabric, cfg Config) (*Ring, Link) {
	t.Helper()
	ts, peers := f.make(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ring *Ring
	var err0 error
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := cfg
		c.Rank, c.World = 0, 2
		ring, err0 = Open(ctx, ts[0], c, peers)
	}()
	link, err := ts[1].Open(ctx, Plan{Job: cfg.Job, Generation: cfg.Generation, Rank: 1, Peers: peers})
	<-done
	if err != nil || err0 != nil {
		t.Fatalf("open: %v / %v", err0, err)
	}
	t.Cleanup(func() { _ = ring.Close(); _ = link.Close() })
	return ring, link
}

// testMalformed: frames with a wrong generation, job, step, size or
// position are refused with the matching sentinel error.
func testMalformed(t *testing.T, f fabric) {
	cfg := DefaultConfig("job", 3, 0, 2)
	cfg.Timeout = 3 * time.Second
	const l = 100
	good := Header{Job: "job", Generation: 3, Step: 1, Seq: 1, Round: 0, Segment: 1,
		Offset: 50, Count: 50, Total: l, DType: DTypeF32}
	cases := []struct {
		name   string
		mutate func(h *Header) int // returns payload bytes
		want   error
	}{
		{"generation", func(h *Header) int { h.Generation = 2; return 200 }, ErrGeneration},
		{"job", func(h *Header) int { h.Job = "other"; return 200 }, ErrJob},
		{"step", func(h *Header) int { h.Step = 2; return 200 }, ErrTag},
		{"sequence", func(h *Header) int { h.Seq = 5; return 200 }, ErrTag},
		{"total", func(h *Header) int { h.Total = 99; return 200 }, ErrLength},
		{"segment", func(h *Header) int { h.Segment = 0; return 200 }, ErrMalformed},
		{"count", func(h *Header) int { h.Count = 49; return 196 }, ErrMalformed},
		{"payload", func(h *Header) int { return 196 }, ErrMalformed},
		{"dtype", func(h *Header) int { h.DType = DTypeBF16; return 100 }, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c := c
			ring, link := fakePair(t, f, cfg)
			h := good
			size := c.mutate(&h)
			go func() {
				if err := link.Send(&h, size, func(dst []byte) {}); err != nil {
					t.Logf("fake send: %v", err)
				}
			}()
			err := ring.AllReduce(context.Background(), Tag{Step: 1}, make([]float32, l), Sum)
			if !errorsIs(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			// The ring is now broken and says so.
			if err := ring.AllReduce(context.Background(), Tag{Step: 2}, make([]float32, l), Sum); !errorsIs(err, ErrBroken) {
				t.Fatalf("after failure: got %v, want ErrBroken", err)
			}
		})
	}
}

// testStalledPeer: one of four workers never joins the collective; all the
// others fail within the deadline.
func testStalledPeer(t *testing.T, f fabric) {
	const n = 4
	cfg := DefaultConfig("job", 1, 0, n)
	cfg.Timeout = 700 * time.Millisecond
	rings := openRings(t, f, n, cfg)
	vecs := inputs(1, n, 100_000)
	errs := make([]error, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := 0; i < n-1; i++ { // rank 3 stalls
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = rings[i].AllReduce(context.Background(), Tag{Step: 1}, vecs[i], Sum)
			took[i] = time.Since(t0)
		}(i)
	}
	wg.Wait()
	for i := 0; i < n-1; i++ {
		if errs[i] == nil {
			t.Fatalf("rank %d: all-reduce with a stalled peer succeeded", i)
		}
		if took[i] > cfg.Timeout+time.Second {
			t.Fatalf("rank %d: failed after %v, deadline %v", i, took[i], cfg.Timeout)
		}
		t.Logf("rank %d failed after %v: %v", i, took[i].Round(time.Millisecond), errs[i])
	}
}

// testLengthMismatch: workers that disagree on the vector length fail.
func testLengthMismatch(t *testing.T, f fabric) {
	cfg := DefaultConfig("job", 1, 0, 3)
	cfg.Timeout = 2 * time.Second
	rings := openRings(t, f, 3, cfg)
	vecs := [][]float32{make([]float32, 10000), make([]float32, 10000), make([]float32, 10001)}
	errs := allReduceAll(rings, Tag{}, vecs, Sum)
	found := false
	for i, err := range errs {
		if err == nil {
			t.Fatalf("rank %d succeeded with mismatched lengths", i)
		}
		found = found || errorsIs(err, ErrLength)
	}
	if !found {
		t.Fatalf("no rank reported ErrLength: %v", errs)
	}
}

func TestInmem(t *testing.T) { runSuite(t, inmemFabric) }

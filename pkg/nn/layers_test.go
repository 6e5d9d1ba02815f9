package nn

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
)

// The float32 CPU layers against the float64 references, forward and
// backward.

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// relErr is max|got-want| / max(max|want|, 1e-6).
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var maxDiff, maxRef float64
	for i := range got {
		d := math.Abs(float64(got[i]) - want[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		maxDiff = math.Max(maxDiff, d)
		maxRef = math.Max(maxRef, math.Abs(want[i]))
	}
	return maxDiff / math.Max(maxRef, 1e-6)
}

func expectClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if e := relErr(got, want); e > tol {
		t.Errorf("%s: relative error %.3g > %.3g", what, e, tol)
	} else if testing.Verbose() {
		t.Logf("%s: relative error %.3g", what, e)
	}
}

// testBuilder returns a builder on a CPU backend with threads goroutines.
func testBuilder(threads int) *builder { return &builder{e: newEnv(NewCPU(threads))} }

// finish lays the builder's parameters and buffers out.
func (bd *builder) finish(seed int64) {
	layoutParams(bd.e.b, bd.params, bd.inits, seed)
	layoutBuffers(bd.e.b, bd.buffers, bd.bufFill)
}

func hostTensor(v []float64, shape ...int) *Tensor {
	t, err := FromSlice(f32s(v), shape...)
	if err != nil {
		panic(err)
	}
	return t
}

func TestConv2dLayerMatchesRef(t *testing.T) {
	r := NewRNG(11)
	cases := []struct {
		n, c, h, w, k, kernel, stride, pad int
		bias                               bool
		budget                             int // im2col budget (forces chunks)
	}{
		{2, 3, 9, 8, 5, 3, 1, 1, true, 0},
		{3, 4, 9, 9, 6, 3, 2, 1, false, 0},
		{3, 4, 9, 9, 6, 3, 2, 1, false, 300}, // one image per chunk
		{5, 4, 8, 7, 6, 3, 1, 1, true, 2000}, // several images per chunk, ragged tail
		{2, 3, 15, 15, 4, 7, 2, 3, false, 0}, // imagenet stem shape
		{2, 6, 16, 16, 5, 1, 1, 0, false, 0}, // direct 1x1 path
		{4, 6, 7, 5, 8, 1, 2, 0, false, 0},   // strided 1x1 (downsample)
		{2, 2, 3, 3, 3, 3, 1, 1, true, 0},
		// Dead taps (only padding under them) are left out of the product:
		{3, 5, 1, 1, 4, 3, 1, 1, false, 0},   // 1x1 plane: centre tap only
		{3, 5, 1, 1, 4, 3, 1, 1, true, 20},   // the same, one image per chunk
		{3, 4, 2, 2, 6, 3, 2, 1, false, 0},   // 2x2 -> 1x1, stride 2: 4 live taps
		{2, 3, 2, 3, 4, 7, 2, 3, false, 100}, // 7x7 over a tiny plane, chunks
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			bd := &builder{e: newEnv(NewCPUWith(CPUOptions{Threads: 3, ColBudget: tc.budget}))} // budget 0: the default
			l := bd.conv2d("conv", tc.c, tc.k, tc.kernel, tc.stride, tc.pad, tc.bias)
			bd.finish(int64(i))
			p, err := l.convParams([]int{tc.n, tc.c, tc.h, tc.w})
			if err != nil {
				t.Fatal(err)
			}
			x := randVec(r, tc.n*tc.c*tc.h*tc.w, 1)
			w := f64s(l.Weight.Value.Data)
			y, err := l.Forward(hostTensor(x, tc.n, tc.c, tc.h, tc.w))
			if err != nil {
				t.Fatal(err)
			}
			want := convRef(x, w, p)
			if tc.bias {
				addBiasRef(want, f64s(l.Bias.Value.Data), p.N, p.K, p.P()*p.Q())
			}
			expectClose(t, "y", y.Data, want, 2e-6)
			dy := randVec(r, len(want), 1)
			l.Weight.Grad.Data[0] = 0.5 // gradients accumulate
			dx, err := l.Backward(hostTensor(dy, y.Shape...), true)
			if err != nil {
				t.Fatal(err)
			}
			wdx, wdw := convBackRef(dy, x, w, p)
			wdw[0] += 0.5
			expectClose(t, "dx", dx.Data, wdx, 2e-6)
			expectClose(t, "dw", l.Weight.Grad.Data, wdw, 2e-6)
			if tc.bias {
				expectClose(t, "db", l.Bias.Grad.Data, biasBackRef(dy, p.N, p.K, p.P()*p.Q()), 2e-6)
			}
		})
	}
}

func TestBatchNormLayerMatchesRef(t *testing.T) {
	r := NewRNG(12)
	n, c, h, w := 3, 4, 5, 3
	hw := h * w
	bd := testBuilder(2)
	l := bd.batchNorm("bn", c)
	bd.finish(1)
	gamma, beta := randVec(r, c, 1), randVec(r, c, 1)
	copy(l.Weight.Value.Data, f32s(gamma))
	copy(l.Bias.Value.Data, f32s(beta))
	rm0, rv0 := f64s(l.RunningMean.Value.Data), f64s(l.RunningVar.Value.Data)

	x := randVec(r, n*c*hw, 3)
	for i := range x {
		x[i] += float64((i/hw)%c) - 1 // a per-channel offset
	}
	y, err := l.Forward(hostTensor(x, n, c, h, w))
	if err != nil {
		t.Fatal(err)
	}
	want, mean, invStd, vb := bnTrainRef(x, gamma, beta, n, c, hw, 1e-5)
	expectClose(t, "train y", y.Data, want, 5e-6)
	m := float64(n * hw)
	wrm, wrv := make([]float64, c), make([]float64, c)
	for k := 0; k < c; k++ {
		wrm[k] = 0.9*rm0[k] + 0.1*mean[k]
		wrv[k] = 0.9*rv0[k] + 0.1*vb[k]*m/(m-1)
	}
	expectClose(t, "running_mean", l.RunningMean.Value.Data, wrm, 1e-6)
	expectClose(t, "running_var", l.RunningVar.Value.Data, wrv, 1e-6)
	if *l.Tracked.Count != 1 {
		t.Errorf("num_batches_tracked %d", *l.Tracked.Count)
	}
	dy := randVec(r, len(x), 1)
	dx, err := l.Backward(hostTensor(dy, n, c, h, w), true)
	if err != nil {
		t.Fatal(err)
	}
	wdx, wdg, wdb := bnTrainBackRef(dy, x, gamma, mean, invStd, n, c, hw)
	expectClose(t, "train dx", dx.Data, wdx, 2e-5)
	expectClose(t, "dgamma", l.Weight.Grad.Data, wdg, 2e-6)
	expectClose(t, "dbeta", l.Bias.Grad.Data, wdb, 2e-6)

	// Evaluation: running statistics, dx = dy*gamma*invStd.
	l.Train = false
	rm, rv := f64s(l.RunningMean.Value.Data), f64s(l.RunningVar.Value.Data)
	y, err = l.Forward(hostTensor(x, n, c, h, w))
	if err != nil {
		t.Fatal(err)
	}
	expectClose(t, "eval y", y.Data, bnEvalRef(x, gamma, beta, rm, rv, c, hw, 1e-5), 5e-6)
	dx, err = l.Backward(hostTensor(dy, n, c, h, w), true)
	if err != nil {
		t.Fatal(err)
	}
	edx := make([]float64, len(x))
	for i := range edx {
		k := (i / hw) % c
		edx[i] = dy[i] * gamma[k] / math.Sqrt(rv[k]+1e-5)
	}
	expectClose(t, "eval dx", dx.Data, edx, 5e-6)
	if *l.Tracked.Count != 1 {
		t.Errorf("eval forward changed num_batches_tracked to %d", *l.Tracked.Count)
	}

	// One value per channel in training is an error, as in torch.
	l.Train = true
	if _, err := l.Forward(hostTensor(randVec(r, c, 1), 1, c, 1, 1)); !errors.Is(err, ErrBatchNorm) {
		t.Errorf("N=1, 1x1: got %v, want ErrBatchNorm", err)
	}
	if _, err := l.Forward(hostTensor(randVec(r, 2*(c+1)*4, 1), 2, c+1, 2, 2)); !errors.Is(err, ErrShape) {
		t.Errorf("wrong channels: got %v, want ErrShape", err)
	}
}

// memReducer all-reduces between a fixed number of goroutines in memory.
type memReducer struct {
	mu      sync.Mutex
	parties int
	round   []chan []float32
	arrived [][]float32
	calls   int
}

type memReducerPeer struct {
	r *memReducer
}

func newMemReducer(parties int) *memReducer { return &memReducer{parties: parties} }

// AllReduceSum implements ChannelReducer for one peer.
func (p memReducerPeer) AllReduceSum(v []float32) error {
	r := p.r
	r.mu.Lock()
	if len(r.arrived) == 0 {
		r.round = make([]chan []float32, 0, r.parties)
	}
	ch := make(chan []float32, 1)
	r.round = append(r.round, ch)
	r.arrived = append(r.arrived, v)
	if len(r.arrived) == r.parties {
		sum := make([]float32, len(v))
		for _, a := range r.arrived { // fixed order: arrival order is not fixed, so add in float64
			if len(a) != len(v) {
				r.mu.Unlock()
				return fmt.Errorf("peer vector length %d != %d", len(a), len(v))
			}
		}
		for i := range sum {
			var s float64
			for _, a := range r.arrived {
				s += float64(a[i])
			}
			sum[i] = float32(s)
		}
		for _, c := range r.round {
			c <- sum
		}
		r.arrived, r.round = nil, nil
		r.calls++
	}
	r.mu.Unlock()
	copy(v, <-ch)
	return nil
}

type failingReducer struct{}

var errPeerGone = errors.New("peer gone")

func (failingReducer) AllReduceSum([]float32) error { return errPeerGone }

func TestSyncBatchNormEqualsFullBatch(t *testing.T) {
	r := NewRNG(13)
	n, c, h, w := 4, 3, 3, 2
	hw := h * w
	x := randVec(r, n*c*hw, 2)
	dy := randVec(r, n*c*hw, 1)
	gamma, beta := randVec(r, c, 1), randVec(r, c, 1)
	want, mean, invStd, vb := bnTrainRef(x, gamma, beta, n, c, hw, 1e-5)
	wdx, wdg, wdb := bnTrainBackRef(dy, x, gamma, mean, invStd, n, c, hw)

	red := newMemReducer(2)
	half := n / 2 * c * hw
	type result struct {
		y, dx, dg, db, rm, rv []float32
		err                   error
	}
	res := make([]result, 2)
	var wg sync.WaitGroup
	for rank := 0; rank < 2; rank++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bd := testBuilder(1 + rank)
			l := bd.batchNorm("bn", c)
			bd.finish(1)
			copy(l.Weight.Value.Data, f32s(gamma))
			copy(l.Bias.Value.Data, f32s(beta))
			l.Reducer = memReducerPeer{red}
			y, err := l.Forward(hostTensor(x[rank*half:(rank+1)*half], n/2, c, h, w))
			if err != nil {
				res[rank].err = err
				return
			}
			dx, err := l.Backward(hostTensor(dy[rank*half:(rank+1)*half], n/2, c, h, w), true)
			if err != nil {
				res[rank].err = err
				return
			}
			res[rank] = result{y: y.Data, dx: dx.Data, dg: l.Weight.Grad.Data, db: l.Bias.Grad.Data,
				rm: l.RunningMean.Value.Data, rv: l.RunningVar.Value.Data}
		}()
	}
	wg.Wait()
	m := float64(n * hw)
	for rank, rr := range res {
		if rr.err != nil {
			t.Fatalf("rank %d: %v", rank, rr.err)
		}
		expectClose(t, "sync y", rr.y, want[rank*half:(rank+1)*half], 5e-6)
		expectClose(t, "sync dx", rr.dx, wdx[rank*half:(rank+1)*half], 2e-5)
		wrm, wrv := make([]float64, c), make([]float64, c)
		for k := 0; k < c; k++ {
			wrm[k] = 0.1 * mean[k]
			wrv[k] = 0.9 + 0.1*vb[k]*m/(m-1)
		}
		expectClose(t, "sync running_mean (global count)", rr.rm, wrm, 1e-6)
		expectClose(t, "sync running_var (global count)", rr.rv, wrv, 1e-6)
	}
	// Parameter gradients are local sums; the job's all-reduce adds them.
	dg, db := make([]float32, c), make([]float32, c)
	for k := 0; k < c; k++ {
		dg[k] = res[0].dg[k] + res[1].dg[k]
		db[k] = res[0].db[k] + res[1].db[k]
	}
	expectClose(t, "sync dgamma sum", dg, wdg, 2e-6)
	expectClose(t, "sync dbeta sum", db, wdb, 2e-6)
	if red.calls != 2 {
		t.Errorf("%d all-reduce rounds, want 2 (one forward, one backward)", red.calls)
	}

	bd := testBuilder(1)
	l := bd.batchNorm("bn", c)
	bd.finish(1)
	l.Reducer = failingReducer{}
	_, err := l.Forward(hostTensor(x, n, c, h, w))
	if !errors.Is(err, ErrReduce) || !errors.Is(err, errPeerGone) {
		t.Errorf("failing reducer: got %v", err)
	}
}

func TestSimpleLayersMatchRef(t *testing.T) {
	r := NewRNG(14)
	bd := testBuilder(3)
	e := bd.e
	t.Run("relu", func(t *testing.T) {
		for _, inPlace := range []bool{false, true} {
			l := &ReLU{InPlace: inPlace, e: e}
			x := randVec(r, 2*3*4*5, 1)
			xt := hostTensor(x, 2, 3, 4, 5)
			y, err := l.Forward(xt)
			if err != nil {
				t.Fatal(err)
			}
			if inPlace != sameStorage(y, xt) {
				t.Errorf("in place %v but output shares storage: %v", inPlace, sameStorage(y, xt))
			}
			expectClose(t, "relu y", y.Data, reluRef(x), 0)
			dy := randVec(r, len(x), 1)
			dx, err := l.Backward(hostTensor(dy, 2, 3, 4, 5), true)
			if err != nil {
				t.Fatal(err)
			}
			expectClose(t, "relu dx", dx.Data, reluBackRef(dy, reluRef(x)), 0)
		}
	})
	t.Run("maxpool", func(t *testing.T) {
		for _, p := range []PoolParams{
			{N: 2, C: 3, H: 9, W: 8, Kernel: 3, Stride: 2, Pad: 1},
			{N: 1, C: 2, H: 4, W: 4, Kernel: 3, Stride: 2, Pad: 1},
			{N: 1, C: 1, H: 1, W: 1, Kernel: 3, Stride: 2, Pad: 1},
		} {
			l := &MaxPool2d{Kernel: 3, Stride: 2, Pad: 1, e: e}
			x := randVec(r, p.N*p.C*p.H*p.W, 1)
			// Ties: the first maximum wins.
			if len(x) > 1 {
				x[0], x[1] = 5, 5
			}
			y, err := l.Forward(hostTensor(x, p.N, p.C, p.H, p.W))
			if err != nil {
				t.Fatal(err)
			}
			wy, arg := maxPoolRef(x, p)
			expectClose(t, "maxpool y", y.Data, wy, 0)
			for i, a := range l.argmax.view.Data {
				if int(a) != arg[i] {
					t.Fatalf("argmax[%d] = %v, want %d", i, a, arg[i])
				}
			}
			dy := randVec(r, len(wy), 1)
			dx, err := l.Backward(hostTensor(dy, y.Shape...), true)
			if err != nil {
				t.Fatal(err)
			}
			expectClose(t, "maxpool dx", dx.Data, maxPoolBackRef(dy, arg, p), 1e-7)
		}
	})
	t.Run("avgpool+flatten", func(t *testing.T) {
		l, fl := &GlobalAvgPool{e: e}, &Flatten{}
		x := randVec(r, 2*3*5*4, 1)
		y, err := l.Forward(hostTensor(x, 2, 3, 5, 4))
		if err != nil {
			t.Fatal(err)
		}
		if !SameShape(y.Shape, []int{2, 3, 1, 1}) {
			t.Fatalf("avgpool shape %v", y.Shape)
		}
		f, err := fl.Forward(y)
		if err != nil {
			t.Fatal(err)
		}
		if !SameShape(f.Shape, []int{2, 3}) {
			t.Fatalf("flatten shape %v", f.Shape)
		}
		expectClose(t, "avgpool y", f.Data, avgPoolRef(x, 6, 20), 1e-7)
		dy := randVec(r, 6, 1)
		g, err := fl.Backward(hostTensor(dy, 2, 3), true)
		if err != nil {
			t.Fatal(err)
		}
		dx, err := l.Backward(g, true)
		if err != nil {
			t.Fatal(err)
		}
		expectClose(t, "avgpool dx", dx.Data, avgPoolBackRef(dy, 20), 1e-7)
	})
	t.Run("linear", func(t *testing.T) {
		lb := testBuilder(2)
		n, in, out := 5, 7, 3
		l := lb.linear("fc", in, out)
		lb.finish(3)
		x := randVec(r, n*in, 1)
		w, b := f64s(l.Weight.Value.Data), f64s(l.Bias.Value.Data)
		y, err := l.Forward(hostTensor(x, n, in))
		if err != nil {
			t.Fatal(err)
		}
		expectClose(t, "linear y", y.Data, linearRef(x, w, b, n, in, out), 1e-6)
		dy := randVec(r, n*out, 1)
		dx, err := l.Backward(hostTensor(dy, n, out), true)
		if err != nil {
			t.Fatal(err)
		}
		wdx, wdw, wdb := linearBackRef(dy, x, w, n, in, out)
		expectClose(t, "linear dx", dx.Data, wdx, 1e-6)
		expectClose(t, "linear dw", l.Weight.Grad.Data, wdw, 1e-6)
		expectClose(t, "linear db", l.Bias.Grad.Data, wdb, 1e-6)
		if _, err := l.Forward(hostTensor(x[:n*(in-1)], n, in-1)); !errors.Is(err, ErrShape) {
			t.Errorf("wrong features: %v", err)
		}
	})
	t.Run("dropout", func(t *testing.T) {
		l := &Dropout{P: 0.25, Seed: 9, Step: 3, Train: true, e: e}
		n := 4000
		x := randVec(r, n, 1)
		y, err := l.Forward(hostTensor(x, 4, n/4))
		if err != nil {
			t.Fatal(err)
		}
		mask := append([]float32(nil), l.mask.view.Data...)
		zeros := 0
		for i, mv := range mask {
			switch mv {
			case 0:
				zeros++
			case float32(1) / float32(0.75):
			default:
				t.Fatalf("mask value %v", mv)
			}
			if y.Data[i] != float32(x[i])*mv {
				t.Fatalf("y[%d] = %v, want x*mask = %v", i, y.Data[i], float32(x[i])*mv)
			}
		}
		if frac := float64(zeros) / float64(n); math.Abs(frac-0.25) > 0.03 {
			t.Errorf("dropped fraction %.3f, want about 0.25", frac)
		}
		dy := randVec(r, n, 1)
		dx, err := l.Backward(hostTensor(dy, 4, n/4), true)
		if err != nil {
			t.Fatal(err)
		}
		for i := range dy {
			if dx.Data[i] != float32(dy[i])*mask[i] {
				t.Fatalf("dx[%d] = %v, want %v", i, dx.Data[i], float32(dy[i])*mask[i])
			}
		}
		// Same (seed, step): same mask; another step: another mask.
		if _, err := l.Forward(hostTensor(x, 4, n/4)); err != nil {
			t.Fatal(err)
		}
		same := 0
		for i, mv := range l.mask.view.Data {
			if mv == mask[i] {
				same++
			}
		}
		if same != n {
			t.Errorf("same step gave a different mask (%d of %d equal)", same, n)
		}
		l.Step = 4
		if _, err := l.Forward(hostTensor(x, 4, n/4)); err != nil {
			t.Fatal(err)
		}
		same = 0
		for i, mv := range l.mask.view.Data {
			if mv == mask[i] {
				same++
			}
		}
		if same == n {
			t.Error("another step gave the same mask")
		}
		// Evaluation: identity.
		l.Train = false
		xt := hostTensor(x, 4, n/4)
		y, err = l.Forward(xt)
		if err != nil || !sameStorage(y, xt) {
			t.Errorf("eval dropout is not the identity (err %v)", err)
		}
	})
}

func TestCrossEntropyMatchesRef(t *testing.T) {
	r := NewRNG(15)
	b := NewCPU(2)
	n, k := 6, 5
	logits := randVec(r, n*k, 3)
	labels := []int32{0, 4, 2, 2, 1, 3}
	for _, s := range []float32{0, 0.1, 0.5} {
		for _, scale := range []float32{0, 0.25} {
			ce := &CrossEntropy{Smoothing: s, GradScale: scale}
			loss, dl, err := ce.Compute(b, hostTensor(logits, n, k), labels)
			if err != nil {
				t.Fatal(err)
			}
			wl, wg := crossEntropyRef(logits, labels, n, k, float64(s))
			if math.Abs(float64(loss)-wl) > 1e-6*math.Max(1, wl) {
				t.Errorf("s=%v loss %v, want %v", s, loss, wl)
			}
			sc := float64(scale)
			if sc == 0 {
				sc = 1
			}
			for i := range wg {
				wg[i] *= sc
			}
			expectClose(t, "dlogits", dl.Data, wg, 1e-6)
		}
	}
	ce := &CrossEntropy{}
	if _, _, err := ce.Compute(b, hostTensor(logits, n, k), labels[:3]); !errors.Is(err, ErrLabel) {
		t.Errorf("short labels: %v", err)
	}
	if _, _, err := ce.Compute(b, hostTensor(logits, n, k), []int32{0, 1, 2, 3, 4, 5}); !errors.Is(err, ErrLabel) {
		t.Errorf("label 5 of 5 classes: %v", err)
	}
	if _, _, err := ce.Compute(b, hostTensor(logits, n*k), labels); !errors.Is(err, ErrShape) {
		t.Errorf("1-D logits: %v", err)
	}
	bad := append([]float64(nil), logits...)
	bad[3] = math.NaN()
	if _, _, err := ce.Compute(b, hostTensor(bad, n, k), labels); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN logit: %v", err)
	}
}

func TestTopKCorrect(t *testing.T) {
	b := NewCPU(1)
	logits := hostTensor([]float64{
		1, 5, 3, 0, // label 1: top-1
		4, 4, 1, 0, // label 1: tie with class 0 -> rank 1
		0, 1, 2, 3, // label 0: rank 3
		2, math.NaN(), 1, 0, // label 0: the NaN outranks it -> rank 1
	}, 4, 4)
	labels := []int32{1, 1, 0, 0}
	for k, want := range map[int]int{1: 1, 2: 3, 3: 3, 4: 4} {
		got, err := TopKCorrect(b, logits, labels, k)
		if err != nil || got != want {
			t.Errorf("top-%d: %d (%v), want %d", k, got, err, want)
		}
	}
	if got, err := Accuracy(b, logits, labels); err != nil || got != 1 {
		t.Errorf("Accuracy = %d (%v)", got, err)
	}
	if _, err := TopKCorrect(b, logits, []int32{1, 1, 0, 7}, 1); !errors.Is(err, ErrLabel) {
		t.Errorf("bad label: %v", err)
	}
}

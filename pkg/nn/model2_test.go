package nn

import (
	"errors"
	"math"
	"sync"
	"testing"
)

// trainSteps runs steps of forward, loss, backward and plain SGD
// (p -= lr*g over the flat tensors) and returns the host copies of every
// result that must not depend on the thread count.
func trainSteps(t *testing.T, b *CPU, cfg ResNetConfig, in []int, steps int) [][]float32 {
	t.Helper()
	m, err := NewResNet(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRNG(21)
	x, labels := testInput(r, in)
	xt := hostTensor(x, in...)
	ce := &CrossEntropy{Smoothing: 0.1}
	var out [][]float32
	for s := 0; s < steps; s++ {
		logits, err := m.Forward(xt)
		if err != nil {
			t.Fatal(err)
		}
		loss, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]float32(nil), logits.Data...), []float32{loss},
			append([]float32(nil), m.GradsFlat().Data...))
		b.Axpy(m.ParamsFlat(), -0.05, m.GradsFlat())
	}
	out = append(out, append([]float32(nil), m.ParamsFlat().Data...), append([]float32(nil), m.BuffersFlat().Data...))
	return out
}

func bitsEqual(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestThreadCountBitIdentical(t *testing.T) {
	cases := append(tinyConfigs[:len(tinyConfigs):len(tinyConfigs)], struct {
		name string
		cfg  ResNetConfig
		in   []int
	}{"resnet50-cifar-16x16-direct-1x1", ResNetConfig{Depth: 50, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 4}, []int{4, 3, 16, 16}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, budget := range []int{0, 3000} { // default chunks, then many small chunks
				one := trainSteps(t, NewCPUWith(CPUOptions{Threads: 1, ColBudget: budget}), tc.cfg, tc.in, 2)
				three := trainSteps(t, NewCPUWith(CPUOptions{Threads: 3, ColBudget: budget}), tc.cfg, tc.in, 2)
				for i := range one {
					if j := bitsEqual(one[i], three[i]); j >= 0 {
						t.Fatalf("budget %d: result %d differs between 1 and 3 threads at element %d", budget, i, j)
					}
				}
			}
		})
	}
}

func TestGradReadyHookOrderAndFreeze(t *testing.T) {
	b := NewCPU(2)
	cfg := ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 1}
	m, err := NewResNet(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRNG(3)
	x, labels := testInput(r, []int{2, 3, 8, 8})
	var got []int
	m.SetGradReadyHook(func(i int) { got = append(got, i) })
	run := func() []float32 {
		got = got[:0]
		logits, err := m.Forward(hostTensor(x, 2, 3, 8, 8))
		if err != nil {
			t.Fatal(err)
		}
		_, dl, err := (&CrossEntropy{}).Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		n := len(m.Params())
		if len(got) != n {
			t.Fatalf("hook called %d times for %d params", len(got), n)
		}
		for k, i := range got {
			if i != n-1-k {
				t.Fatalf("hook call %d announced param %d, want %d", k, i, n-1-k)
			}
		}
		return append([]float32(nil), m.GradsFlat().Data...)
	}
	m.SetTrain(false) // identical forwards
	full := run()
	m.FreezeBackbone()
	total, trainable := m.NumParams()
	ps := m.Params()
	fcN := ps[len(ps)-1].Value.Numel() + ps[len(ps)-2].Value.Numel()
	if trainable != fcN || total <= trainable {
		t.Fatalf("after FreezeBackbone: total %d trainable %d (fc has %d)", total, trainable, fcN)
	}
	frozen := run()
	off := total - fcN
	for i, v := range frozen {
		if i < off && v != 0 {
			t.Fatalf("frozen gradient element %d = %v", i, v)
		}
		if i >= off && v != full[i] {
			t.Fatalf("fc gradient element %d = %v, unfrozen model gave %v", i, v, full[i])
		}
	}
	if m.InputGrad() != nil {
		t.Error("InputGrad without SetInputGrad")
	}
	m.Unfreeze()
	if _, tr := m.NumParams(); tr != total {
		t.Errorf("Unfreeze: trainable %d of %d", tr, total)
	}
	if j := bitsEqual(run(), full); j >= 0 {
		t.Errorf("after Unfreeze gradients differ at %d", j)
	}
}

func TestReplaceHead(t *testing.T) {
	b := NewCPU(2)
	m, err := NewResNet(b, ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	before := map[string][]float32{}
	for _, p := range m.Params() {
		before[p.Name] = append([]float32(nil), p.Value.Data...)
	}
	feat := m.Params()[len(m.Params())-1].Value.Numel()
	feat = m.Params()[len(m.Params())-2].Value.Numel() / feat
	m.FreezeBackbone()
	if err := m.ReplaceHead(5, 99); err != nil {
		t.Fatal(err)
	}
	if err := m.ReplaceHead(0, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("0 classes: %v", err)
	}
	ps := m.Params()
	off := 0
	for _, p := range ps {
		if &m.ParamsFlat().Data[off] != &p.Value.Data[0] || &m.GradsFlat().Data[off] != &p.Grad.Data[0] {
			t.Fatalf("%s is not a view at offset %d of the flat tensors", p.Name, off)
		}
		off += p.Value.Numel()
		if p.Name == "fc.weight" || p.Name == "fc.bias" {
			if p.Frozen {
				t.Errorf("new %s is frozen", p.Name)
			}
			continue
		}
		if !p.Frozen {
			t.Errorf("%s lost its Frozen flag", p.Name)
		}
		if bitsEqual(p.Value.Data, before[p.Name]) >= 0 {
			t.Errorf("%s changed", p.Name)
		}
	}
	if off != m.ParamsFlat().Numel() {
		t.Fatalf("params cover %d of %d flat elements", off, m.ParamsFlat().Numel())
	}
	w := ps[len(ps)-2]
	if w.Name != "fc.weight" || !SameShape(w.Value.Shape, []int{5, feat}) {
		t.Fatalf("head %s %v", w.Name, w.Value.Shape)
	}
	bound := float32(1 / math.Sqrt(float64(feat)))
	for _, v := range w.Value.Data {
		if v < -bound || v > bound || v == 0 {
			t.Fatalf("fc.weight value %v outside U(-%v, %v)", v, bound, bound)
		}
	}
	x, _ := testInput(NewRNG(1), []int{2, 3, 8, 8})
	logits, err := m.Forward(hostTensor(x, 2, 3, 8, 8))
	if err != nil {
		t.Fatal(err)
	}
	if !SameShape(logits.Shape, []int{2, 5}) || m.Config().Classes != 5 {
		t.Fatalf("logits %v, config classes %d", logits.Shape, m.Config().Classes)
	}
	_, dl, err := (&CrossEntropy{}).Compute(b, logits, []int32{4, 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(dl); err != nil {
		t.Fatal(err)
	}
	if b.CountNonFinite(w.Grad) != 0 {
		t.Fatal("non-finite head gradient")
	}
}

func TestInitialisation(t *testing.T) {
	m, err := NewResNet(NewCPU(1), ResNetConfig{Depth: 34, Width: 0.5, Classes: 100, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := NewResNet(NewCPU(2), ResNetConfig{Depth: 34, Width: 0.5, Classes: 100, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if j := bitsEqual(m.ParamsFlat().Data, m2.ParamsFlat().Data); j >= 0 {
		t.Fatalf("same seed, different init at %d", j)
	}
	for _, p := range m.Params() {
		d := f64s(p.Value.Data)
		var mean, sq float64
		for _, v := range d {
			mean += v
			sq += v * v
		}
		mean /= float64(len(d))
		std := math.Sqrt(sq/float64(len(d)) - mean*mean)
		switch {
		case len(p.Value.Shape) == 4:
			want := math.Sqrt(2 / float64(p.Value.Shape[0]*p.Value.Shape[2]*p.Value.Shape[3]))
			if len(d) > 5000 && (math.Abs(std/want-1) > 0.05 || math.Abs(mean) > 0.05*want) {
				t.Errorf("%s: mean %.4g std %.4g, want N(0, %.4g)", p.Name, mean, std, want)
			}
		case p.Name == "fc.weight" || p.Name == "fc.bias":
			bound := 1 / math.Sqrt(256)
			want := bound / math.Sqrt(3)
			for _, v := range d {
				if math.Abs(v) > bound {
					t.Fatalf("%s value %v beyond %v", p.Name, v, bound)
				}
			}
			if len(d) > 5000 && math.Abs(std/want-1) > 0.05 {
				t.Errorf("%s: std %.4g, want %.4g", p.Name, std, want)
			}
		case len(p.Value.Shape) == 1 && p.Name[len(p.Name)-6:] == "weight":
			if mean != 1 || std != 0 {
				t.Errorf("%s: BN weight not all 1", p.Name)
			}
		default:
			if mean != 0 || std != 0 {
				t.Errorf("%s: BN bias not all 0", p.Name)
			}
		}
	}
	names := []string{m.Params()[0].Name, m.Params()[1].Name, m.Params()[3].Name, m.Params()[len(m.Params())-1].Name}
	want := []string{"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.bias"}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("param name %q, want %q", names[i], want[i])
		}
	}
	bufs := m.Buffers()
	if bufs[0].Name != "bn1.running_mean" || bufs[1].Name != "bn1.running_var" || bufs[2].Name != "bn1.num_batches_tracked" || bufs[2].Count == nil {
		t.Errorf("buffers start %s %s %s", bufs[0].Name, bufs[1].Name, bufs[2].Name)
	}
	for _, p := range m.Params() {
		if p.Name == "layer2.0.downsample.0.weight" && !SameShape(p.Value.Shape, []int{64, 32, 1, 1}) {
			t.Errorf("%s shape %v", p.Name, p.Value.Shape)
		}
	}
}

func TestBadInput(t *testing.T) {
	b := NewCPU(2)
	for _, cfg := range []ResNetConfig{
		{Depth: 20}, {Depth: 18, Stem: "tiny"}, {Depth: 18, Width: -1}, {Depth: 18, Width: math.NaN()},
		{Depth: 18, Classes: -3}, {Depth: 18, Dropout: 1}, {Depth: 18, Dropout: -0.1},
	} {
		if _, err := NewResNet(b, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: got %v, want ErrConfig", cfg, err)
		}
	}
	if d, err := ModelDepth("ResNet50"); err != nil || d != 50 {
		t.Errorf("ModelDepth(ResNet50) = %d, %v", d, err)
	}
	if _, err := ModelDepth("resnet19"); !errors.Is(err, ErrConfig) {
		t.Errorf("ModelDepth(resnet19): %v", err)
	}

	m, err := NewResNet(b, ResNetConfig{Depth: 18, Width: 1.0 / 16, Classes: 10, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(NewTensor(2, 10)); !errors.Is(err, ErrNoForward) {
		t.Errorf("backward first: %v", err)
	}
	r := NewRNG(4)
	for _, shape := range [][]int{{2, 1, 32, 32}, {3, 32, 32}, {0, 3, 32, 32}, {2, 3, 0, 4}} {
		if _, err := m.Forward(NewTensor(shape...)); !errors.Is(err, ErrShape) {
			t.Errorf("input %v: got %v, want ErrShape", shape, err)
		}
	}
	if _, err := m.Forward(nil); !errors.Is(err, ErrShape) {
		t.Errorf("nil input: %v", err)
	}
	// One sample reaches layer4 at 1x1: batch statistics are undefined.
	if _, err := m.Forward(hostTensor(randVec(r, 3*32*32, 1), 1, 3, 32, 32)); !errors.Is(err, ErrBatchNorm) {
		t.Errorf("N=1 training: got %v, want ErrBatchNorm", err)
	}
	x := randVec(r, 2*3*32*32, 1)
	x[100] = math.NaN()
	if _, err := m.Forward(hostTensor(x, 2, 3, 32, 32)); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN input: got %v, want ErrNonFinite", err)
	}
	x[100] = 0.5
	logits, err := m.Forward(hostTensor(x, 2, 3, 32, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(NewTensor(2, 9)); !errors.Is(err, ErrShape) {
		t.Errorf("dlogits (2,9): %v", err)
	}
	if err := m.Backward(NewTensor(logits.Shape...)); err != nil {
		t.Errorf("zero dlogits: %v", err)
	}
	// A non-finite weight is reported by name.
	w := m.Params()[len(m.Params())-2]
	w.Value.Data[3] = float32(math.Inf(1))
	_, err = m.Forward(hostTensor(x, 2, 3, 32, 32))
	if !errors.Is(err, ErrNonFinite) || err == nil || !containsStr(err.Error(), "fc.weight") {
		t.Errorf("Inf weight: got %v", err)
	}
	if err := m.CheckFinite(); !errors.Is(err, ErrNonFinite) {
		t.Errorf("CheckFinite: %v", err)
	}
	m.SetCheckFinite(false)
	if _, err := m.Forward(hostTensor(x, 2, 3, 32, 32)); err != nil {
		t.Errorf("checks off: %v", err)
	}
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestModelSyncBatchNorm(t *testing.T) {
	cfg := ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: 5}
	in := []int{4, 3, 8, 8}
	x, labels := testInput(NewRNG(8), in)
	// One worker, the whole batch.
	b := NewCPU(2)
	full, err := NewResNet(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := full.Forward(hostTensor(x, in...))
	if err != nil {
		t.Fatal(err)
	}
	_, dl, err := (&CrossEntropy{}).Compute(b, logits, labels)
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Backward(dl); err != nil {
		t.Fatal(err)
	}
	// Two workers, half each, SyncBN; gradients scaled so their sum is the mean.
	red := newMemReducer(2)
	half := numel(in) / 2
	logitsHalf := make([][]float32, 2)
	grads := make([][]float32, 2)
	bufs := make([][]float32, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for rank := 0; rank < 2; rank++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := NewCPU(1)
			m, err := NewResNet(b, cfg)
			if err != nil {
				errs[rank] = err
				return
			}
			m.SetChannelReducer(memReducerPeer{red})
			lg, err := m.Forward(hostTensor(x[rank*half:(rank+1)*half], 2, 3, 8, 8))
			if err != nil {
				errs[rank] = err
				return
			}
			_, dl, err := (&CrossEntropy{GradScale: 0.5}).Compute(b, lg, labels[rank*2:rank*2+2])
			if err != nil {
				errs[rank] = err
				return
			}
			if errs[rank] = m.Backward(dl); errs[rank] != nil {
				return
			}
			logitsHalf[rank] = lg.Data
			grads[rank] = m.GradsFlat().Data
			bufs[rank] = m.BuffersFlat().Data
		}()
	}
	wg.Wait()
	for rank := 0; rank < 2; rank++ {
		if errs[rank] != nil {
			t.Fatalf("rank %d: %v", rank, errs[rank])
		}
		expectClose(t, "sync logits", logitsHalf[rank], f64s(logits.Data[rank*20:(rank+1)*20]), 1e-4)
		expectClose(t, "sync running stats", bufs[rank], f64s(full.BuffersFlat().Data), 1e-5)
	}
	sum := make([]float32, len(grads[0]))
	for i := range sum {
		sum[i] = grads[0][i] + grads[1][i]
	}
	expectClose(t, "sync grads (sum over workers)", sum, f64s(full.GradsFlat().Data), 1e-3)
}

func TestTrainingReducesLoss(t *testing.T) {
	b := NewCPU(2)
	m, err := NewResNet(b, ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 8, Classes: 4, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRNG(9)
	in := []int{8, 3, 8, 8}
	x := hostTensor(randVec(r, numel(in), 1), in...)
	labels := []int32{0, 1, 2, 3, 0, 1, 2, 3}
	ce := &CrossEntropy{}
	var first, last float32
	for step := 0; step < 25; step++ {
		logits, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		loss, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = loss
		}
		last = loss
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		b.Axpy(m.ParamsFlat(), -0.1, m.GradsFlat())
	}
	if !(last < 0.3*first) {
		t.Errorf("loss %v -> %v after 25 SGD steps on one batch", first, last)
	}
	m.SetTrain(false)
	logits, err := m.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := Accuracy(b, logits, labels); c < 6 {
		t.Errorf("eval accuracy on the memorised batch: %d/8", c)
	}
}

package gpu

// shadow is the per-op diagnostic of the ResNet tests: an nn.Backend that
// runs every compute op on the GPU backend and, with the GPU's own inputs
// (copied to the host just before the op), on the CPU backend, and
// compares the outputs with the op's principled tolerance:
//
//   - sums of products (convolutions, linear layers) against the rounding
//     bound of a k-term sum (sumBound) in units of Σ|terms|, which the CPU
//     computes by running the same op on absolute values;
//   - everything else relative to |cpu| + 1e-3·max|cpu| with the op's
//     tolerance (exact, oneRounding).
//
// Because both sides start each op from identical inputs, the first op
// over its bound is where the GPU goes wrong, whatever happened upstream;
// in a whole network, upstream rounding differences are amplified and
// cannot point at anything. Ops are labelled with the layer whose
// gradient was announced last (backward order) or "forward".

import (
	"fmt"
	"math"
	"strings"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

type shadowResult struct {
	seq   int
	op    string
	label string
	shape []int
	ratio float64 // worst error / tolerance (> 1 fails)
	info  string
}

type shadow struct {
	*Backend
	cpu     nn.Backend
	label   string
	seq     int
	results []shadowResult
}

var _ nn.Backend = (*shadow)(nil)

func newShadow(g *Backend) *shadow {
	return &shadow{Backend: g, cpu: plainCPU(), label: "forward"}
}

// tolerance of one output.
type shadowTol struct {
	rel float64 // relative tolerance (with the 1e-3·max floor), when bound == 0
	k   int     // sum length for a rounding bound, when > 0
}

// run executes one op on both backends. args are every tensor the op
// reads or writes (nil allowed); outs index the outputs among them; gpu
// runs the GPU op; cpu runs the CPU op on the matching CPU tensors; abs,
// when not nil, runs the CPU op on absolute values into the given outputs
// (Σ|terms| for the bound).
func (s *shadow) run(name string, tol shadowTol, args []*nn.Tensor, outs []int, gpu func(), cpu func(c []*nn.Tensor), abs func(c []*nn.Tensor)) {
	if s.Backend.err != nil {
		gpu()
		return
	}
	pre := make([][]float32, len(args))
	for i, t := range args {
		if t != nil {
			pre[i] = make([]float32, t.Numel())
			s.Backend.ToHost(pre[i], t)
		}
	}
	gpu()
	mk := func(absolute bool) []*nn.Tensor {
		c := make([]*nn.Tensor, len(args))
		for i, t := range args {
			if t == nil {
				continue
			}
			for j := 0; j < i; j++ { // aliases stay aliases
				if args[j] != nil && args[j].Ptr == t.Ptr && args[j].Numel() == t.Numel() {
					c[i] = c[j]
				}
			}
			if c[i] == nil {
				v := append([]float32(nil), pre[i]...)
				if absolute {
					for k := range v {
						v[k] = float32(math.Abs(float64(v[k])))
					}
				}
				c[i] = s.cpu.New(t.Shape...)
				s.cpu.FromHost(c[i], v)
			}
		}
		return c
	}
	c := mk(false)
	cpu(c)
	var a []*nn.Tensor
	if abs != nil {
		a = mk(true)
		abs(a)
	}
	s.seq++
	for _, oi := range outs {
		g := make([]float32, args[oi].Numel())
		s.Backend.ToHost(g, args[oi])
		if s.Backend.Sync() != nil {
			return
		}
		h := make([]float32, len(g))
		s.cpu.ToHost(h, c[oi])
		var sc []float32
		if a != nil {
			sc = make([]float32, len(g))
			s.cpu.ToHost(sc, a[oi])
		}
		maxAbs := 0.0
		for _, v := range h {
			maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
		}
		worst, wi := 0.0, 0
		for i := range g {
			d := math.Abs(float64(g[i]) - float64(h[i]))
			if math.IsNaN(float64(g[i])) != math.IsNaN(float64(h[i])) {
				d = math.Inf(1)
			}
			if d == 0 || (math.IsNaN(float64(g[i])) && math.IsNaN(float64(h[i]))) {
				continue
			}
			var r float64
			if tol.k > 0 {
				r = d / (sumBound(tol.k, s.Backend.bf16) * float64(sc[i]))
			} else {
				r = d / (tol.rel * (math.Abs(float64(h[i])) + 1e-3*maxAbs))
			}
			if math.IsNaN(r) {
				r = math.Inf(1)
			}
			if r > worst {
				worst, wi = r, i
			}
		}
		res := shadowResult{seq: s.seq, op: name, label: s.label, shape: append([]int(nil), args[oi].Shape...), ratio: worst}
		if worst > 0 {
			res.info = fmt.Sprintf("at %d: gpu %v cpu %v", wi, g[wi], h[wi])
			if sc != nil {
				res.info += fmt.Sprintf(" Σ|terms| %v", sc[wi])
			}
		}
		s.results = append(s.results, res)
	}
}

// report returns the first op over its tolerance (or "") and a summary
// of the worst op of each kind.
func (s *shadow) report() (first string, summary string) {
	worst := map[string]shadowResult{}
	var order []string
	for _, r := range s.results {
		if r.ratio > 1 && first == "" {
			first = fmt.Sprintf("op #%d %s %v (%s): error %.3g x its tolerance, %s", r.seq, r.op, r.shape, r.label, r.ratio, r.info)
		}
		w, ok := worst[r.op]
		if !ok {
			order = append(order, r.op)
		}
		if !ok || r.ratio > w.ratio {
			worst[r.op] = r
		}
	}
	var b strings.Builder
	for _, op := range order {
		r := worst[op]
		fmt.Fprintf(&b, "\n  %-24s worst %.3g of its tolerance (op #%d %v, %s)", op, r.ratio, r.seq, r.shape, r.label)
	}
	return first, b.String()
}

func (s *shadow) Conv2d(y, x, w *nn.Tensor, p nn.ConvParams) {
	s.run("Conv2d", shadowTol{k: p.C * p.R * p.S}, []*nn.Tensor{y, x, w}, []int{0},
		func() { s.Backend.Conv2d(y, x, w, p) },
		func(c []*nn.Tensor) { s.cpu.Conv2d(c[0], c[1], c[2], p) },
		func(c []*nn.Tensor) { s.cpu.Conv2d(c[0], c[1], c[2], p) })
}

func (s *shadow) Conv2dBackwardData(dx, dy, w *nn.Tensor, p nn.ConvParams) {
	s.run("Conv2dBackwardData", shadowTol{k: p.K * p.R * p.S}, []*nn.Tensor{dx, dy, w}, []int{0},
		func() { s.Backend.Conv2dBackwardData(dx, dy, w, p) },
		func(c []*nn.Tensor) { s.cpu.Conv2dBackwardData(c[0], c[1], c[2], p) },
		func(c []*nn.Tensor) { s.cpu.Conv2dBackwardData(c[0], c[1], c[2], p) })
}

func (s *shadow) Conv2dBackwardFilter(dw, x, dy *nn.Tensor, p nn.ConvParams) {
	s.run("Conv2dBackwardFilter", shadowTol{k: p.N*p.P()*p.Q() + 1}, []*nn.Tensor{dw, x, dy}, []int{0},
		func() { s.Backend.Conv2dBackwardFilter(dw, x, dy, p) },
		func(c []*nn.Tensor) { s.cpu.Conv2dBackwardFilter(c[0], c[1], c[2], p) },
		func(c []*nn.Tensor) { s.cpu.Conv2dBackwardFilter(c[0], c[1], c[2], p) })
}

func (s *shadow) Linear(y, x, w, b *nn.Tensor) {
	s.run("Linear", shadowTol{k: x.Numel()/x.Shape[0] + 1}, []*nn.Tensor{y, x, w, b}, []int{0},
		func() { s.Backend.Linear(y, x, w, b) },
		func(c []*nn.Tensor) { s.cpu.Linear(c[0], c[1], c[2], c[3]) },
		func(c []*nn.Tensor) { s.cpu.Linear(c[0], c[1], c[2], c[3]) })
}

func (s *shadow) LinearBackward(dx, dw, db, dy, x, w *nn.Tensor) {
	n, o := dy.Shape[0], dy.Numel()/dy.Shape[0]
	// dx and dw have different sum lengths: one call each.
	if dx != nil {
		s.run("LinearBackward dx", shadowTol{k: o}, []*nn.Tensor{dx, dy, x, w}, []int{0},
			func() { s.Backend.LinearBackward(dx, nil, nil, dy, x, w) },
			func(c []*nn.Tensor) { s.cpu.LinearBackward(c[0], nil, nil, c[1], c[2], c[3]) },
			func(c []*nn.Tensor) { s.cpu.LinearBackward(c[0], nil, nil, c[1], c[2], c[3]) })
	}
	if dw != nil {
		s.run("LinearBackward dw", shadowTol{k: n + 1}, []*nn.Tensor{dw, dy, x, w}, []int{0},
			func() { s.Backend.LinearBackward(nil, dw, nil, dy, x, w) },
			func(c []*nn.Tensor) { s.cpu.LinearBackward(nil, c[0], nil, c[1], c[2], c[3]) },
			func(c []*nn.Tensor) { s.cpu.LinearBackward(nil, c[0], nil, c[1], c[2], c[3]) })
	}
	if db != nil {
		s.run("LinearBackward db", shadowTol{rel: 2 * oneRounding}, []*nn.Tensor{db, dy, x, w}, []int{0},
			func() { s.Backend.LinearBackward(nil, nil, db, dy, x, w) },
			func(c []*nn.Tensor) { s.cpu.LinearBackward(nil, nil, c[0], c[1], c[2], c[3]) }, nil)
	}
}

func (s *shadow) AddChannelBias(y, b *nn.Tensor) {
	s.run("AddChannelBias", shadowTol{rel: exact}, []*nn.Tensor{y, b}, []int{0},
		func() { s.Backend.AddChannelBias(y, b) }, func(c []*nn.Tensor) { s.cpu.AddChannelBias(c[0], c[1]) }, nil)
}

func (s *shadow) ChannelBiasBackward(db, dy *nn.Tensor) {
	s.run("ChannelBiasBackward", shadowTol{rel: 2 * oneRounding}, []*nn.Tensor{db, dy}, []int{0},
		func() { s.Backend.ChannelBiasBackward(db, dy) }, func(c []*nn.Tensor) { s.cpu.ChannelBiasBackward(c[0], c[1]) }, nil)
}

func (s *shadow) BatchNormStats(sum, sumSq, x *nn.Tensor) {
	s.run("BatchNormStats", shadowTol{rel: oneRounding}, []*nn.Tensor{sum, sumSq, x}, []int{0, 1},
		func() { s.Backend.BatchNormStats(sum, sumSq, x) }, func(c []*nn.Tensor) { s.cpu.BatchNormStats(c[0], c[1], c[2]) }, nil)
}

func (s *shadow) BatchNormForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	s.run("BatchNormForward", shadowTol{rel: exact}, []*nn.Tensor{y, x, mean, invStd, gamma, beta}, []int{0},
		func() { s.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta) },
		func(c []*nn.Tensor) { s.cpu.BatchNormForward(c[0], c[1], c[2], c[3], c[4], c[5]) }, nil)
}

func (s *shadow) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *nn.Tensor) {
	s.run("BatchNormBackwardStats", shadowTol{rel: oneRounding}, []*nn.Tensor{sumDy, sumDyXhat, dy, x, mean, invStd}, []int{0, 1},
		func() { s.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd) },
		func(c []*nn.Tensor) { s.cpu.BatchNormBackwardStats(c[0], c[1], c[2], c[3], c[4], c[5]) }, nil)
}

func (s *shadow) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *nn.Tensor, m int) {
	s.run("BatchNormBackward", shadowTol{rel: exact}, []*nn.Tensor{dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat}, []int{0},
		func() { s.Backend.BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, m) },
		func(c []*nn.Tensor) { s.cpu.BatchNormBackward(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], m) }, nil)
}

func (s *shadow) BatchNormStatsFinish(mean, invStd, runMean, runVar, sum, sumSq *nn.Tensor, m int, momentum, eps float32) {
	s.run("BatchNormStatsFinish", shadowTol{rel: oneRounding}, []*nn.Tensor{mean, invStd, runMean, runVar, sum, sumSq}, []int{0, 1},
		func() { s.Backend.BatchNormStatsFinish(mean, invStd, runMean, runVar, sum, sumSq, m, momentum, eps) },
		func(c []*nn.Tensor) { s.cpu.BatchNormStatsFinish(c[0], c[1], c[2], c[3], c[4], c[5], m, momentum, eps) }, nil)
}

func (s *shadow) ReLU(y, x *nn.Tensor) {
	s.run("ReLU", shadowTol{rel: exact}, []*nn.Tensor{y, x}, []int{0},
		func() { s.Backend.ReLU(y, x) }, func(c []*nn.Tensor) { s.cpu.ReLU(c[0], c[1]) }, nil)
}

func (s *shadow) ReLUBackward(dx, dy, y *nn.Tensor) {
	s.run("ReLUBackward", shadowTol{rel: exact}, []*nn.Tensor{dx, dy, y}, []int{0},
		func() { s.Backend.ReLUBackward(dx, dy, y) }, func(c []*nn.Tensor) { s.cpu.ReLUBackward(c[0], c[1], c[2]) }, nil)
}

func (s *shadow) Add(y, a, b *nn.Tensor) {
	s.run("Add", shadowTol{rel: exact}, []*nn.Tensor{y, a, b}, []int{0},
		func() { s.Backend.Add(y, a, b) }, func(c []*nn.Tensor) { s.cpu.Add(c[0], c[1], c[2]) }, nil)
}

func (s *shadow) Axpy(y *nn.Tensor, alpha float32, x *nn.Tensor) {
	s.run("Axpy", shadowTol{rel: exact}, []*nn.Tensor{y, x}, []int{0},
		func() { s.Backend.Axpy(y, alpha, x) }, func(c []*nn.Tensor) { s.cpu.Axpy(c[0], alpha, c[1]) }, nil)
}

func (s *shadow) MaxPool2d(y, argmax, x *nn.Tensor, p nn.PoolParams) {
	s.run("MaxPool2d", shadowTol{rel: exact}, []*nn.Tensor{y, argmax, x}, []int{0, 1},
		func() { s.Backend.MaxPool2d(y, argmax, x, p) }, func(c []*nn.Tensor) { s.cpu.MaxPool2d(c[0], c[1], c[2], p) }, nil)
}

func (s *shadow) MaxPool2dBackward(dx, dy, argmax *nn.Tensor, p nn.PoolParams) {
	s.run("MaxPool2dBackward", shadowTol{rel: exact}, []*nn.Tensor{dx, dy, argmax}, []int{0},
		func() { s.Backend.MaxPool2dBackward(dx, dy, argmax, p) },
		func(c []*nn.Tensor) { s.cpu.MaxPool2dBackward(c[0], c[1], c[2], p) }, nil)
}

func (s *shadow) GlobalAvgPool(y, x *nn.Tensor) {
	s.run("GlobalAvgPool", shadowTol{rel: oneRounding}, []*nn.Tensor{y, x}, []int{0},
		func() { s.Backend.GlobalAvgPool(y, x) }, func(c []*nn.Tensor) { s.cpu.GlobalAvgPool(c[0], c[1]) }, nil)
}

func (s *shadow) GlobalAvgPoolBackward(dx, dy *nn.Tensor) {
	s.run("GlobalAvgPoolBackward", shadowTol{rel: exact}, []*nn.Tensor{dx, dy}, []int{0},
		func() { s.Backend.GlobalAvgPoolBackward(dx, dy) }, func(c []*nn.Tensor) { s.cpu.GlobalAvgPoolBackward(c[0], c[1]) }, nil)
}

func (s *shadow) SoftmaxCrossEntropy(loss, dlogits, probs, logits *nn.Tensor, labels []int32, smoothing, gradScale float32) {
	outs := []int{0}
	if dlogits != nil {
		outs = append(outs, 1)
	}
	if probs != nil {
		outs = append(outs, 2)
	}
	s.run("SoftmaxCrossEntropy", shadowTol{rel: oneRounding}, []*nn.Tensor{loss, dlogits, probs, logits}, outs,
		func() { s.Backend.SoftmaxCrossEntropy(loss, dlogits, probs, logits, labels, smoothing, gradScale) },
		func(c []*nn.Tensor) { s.cpu.SoftmaxCrossEntropy(c[0], c[1], c[2], c[3], labels, smoothing, gradScale) }, nil)
}

func (s *shadow) SGDStep(p, g, buf *nn.Tensor, o nn.SGDParams, first bool) {
	s.run("SGDStep", shadowTol{rel: exact}, []*nn.Tensor{p, g, buf}, []int{0},
		func() { s.Backend.SGDStep(p, g, buf, o, first) }, func(c []*nn.Tensor) { s.cpu.SGDStep(c[0], c[1], c[2], o, first) }, nil)
}

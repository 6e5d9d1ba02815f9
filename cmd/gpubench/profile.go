package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// profiler is an nn.Backend that times the heavy ops of a backend by
// synchronising after each one (so the sum is slower than a free-running
// step: it is a breakdown, not a throughput). Rows are keyed by op and
// shape, which names the layer kind well enough for ResNet.
type profiler struct {
	nn.Backend
	on   bool
	rows map[string]*profRow
}

type profRow struct {
	calls int
	total time.Duration
}

func newProfiler(b nn.Backend) *profiler { return &profiler{Backend: b, rows: map[string]*profRow{}} }

func (p *profiler) time(key string, f func()) {
	if !p.on {
		f()
		return
	}
	_ = p.Backend.Sync()
	t0 := time.Now()
	f()
	_ = p.Backend.Sync()
	r := p.rows[key]
	if r == nil {
		r = &profRow{}
		p.rows[key] = r
	}
	r.calls++
	r.total += time.Since(t0)
}

func convKey(op string, q nn.ConvParams) string {
	return fmt.Sprintf("%s %dx%d/%d C%d->K%d %dx%d", op, q.R, q.S, q.StrideH, q.C, q.K, q.H, q.W)
}

func (p *profiler) Conv2d(y, x, w *nn.Tensor, q nn.ConvParams) {
	p.time(convKey("conv fwd", q), func() { p.Backend.Conv2d(y, x, w, q) })
}

func (p *profiler) Conv2dBackwardData(dx, dy, w *nn.Tensor, q nn.ConvParams) {
	p.time(convKey("conv bwd-data", q), func() { p.Backend.Conv2dBackwardData(dx, dy, w, q) })
}

func (p *profiler) Conv2dBackwardFilter(dw, x, dy *nn.Tensor, q nn.ConvParams) {
	p.time(convKey("conv bwd-filter", q), func() { p.Backend.Conv2dBackwardFilter(dw, x, dy, q) })
}

func (p *profiler) BatchNormStats(sum, sumSq, x *nn.Tensor) {
	p.time("bn stats", func() { p.Backend.BatchNormStats(sum, sumSq, x) })
}

func (p *profiler) BatchNormForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	p.time("bn forward", func() { p.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta) })
}

func (p *profiler) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *nn.Tensor) {
	p.time("bn backward stats", func() { p.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd) })
}

func (p *profiler) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *nn.Tensor, m int) {
	p.time("bn backward", func() { p.Backend.BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, m) })
}

func (p *profiler) ReLU(y, x *nn.Tensor) { p.time("relu", func() { p.Backend.ReLU(y, x) }) }

func (p *profiler) ReLUBackward(dx, dy, y *nn.Tensor) {
	p.time("relu backward", func() { p.Backend.ReLUBackward(dx, dy, y) })
}

func (p *profiler) Add(y, a, b *nn.Tensor) { p.time("add", func() { p.Backend.Add(y, a, b) }) }

func (p *profiler) SGDStep(w, g, buf *nn.Tensor, o nn.SGDParams, first bool) {
	p.time("sgd", func() { p.Backend.SGDStep(w, g, buf, o, first) })
}

// report prints the rows, most expensive first, with their share.
func (p *profiler) report(w io.Writer, steps int) {
	type kv struct {
		k string
		r *profRow
	}
	var all []kv
	var total time.Duration
	for k, r := range p.rows {
		all = append(all, kv{k, r})
		total += r.total
	}
	sort.Slice(all, func(i, j int) bool { return all[i].r.total > all[j].r.total })
	fmt.Fprintf(w, "# profile: per step, ops synchronised one by one (total %.2f ms/step)\n", ms(total)/float64(steps))
	for _, e := range all {
		fmt.Fprintf(w, "PROFILE %-44s %8.3f ms/step %5.1f%% %4d calls/step\n", e.k, ms(e.r.total)/float64(steps),
			100*float64(e.r.total)/float64(max(total, 1)), e.r.calls/steps)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// The profiler offers nn.FusedOps so the layers take the same fused path
// as on the bare backend; a backend without them gets the separate ops,
// which is what the layers would run.
var _ nn.FusedOps = (*profiler)(nil)

func (p *profiler) BatchNormReLUForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	p.time("bn+relu forward", func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.BatchNormReLUForward(y, x, mean, invStd, gamma, beta)
			return
		}
		p.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta)
		p.Backend.ReLU(y, y)
	})
}

func (p *profiler) AddReLU(y, a, b *nn.Tensor) {
	p.time("add+relu", func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.AddReLU(y, a, b)
			return
		}
		p.Backend.Add(y, a, b)
		p.Backend.ReLU(y, y)
	})
}

func (p *profiler) ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *nn.Tensor) {
	p.time("relu+bn backward stats", func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd)
			return
		}
		p.Backend.ReLUBackward(dy, dy, y)
		p.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd)
	})
}

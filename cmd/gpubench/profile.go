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
//
// The elementwise and BN passes are memory-bound, so their rows also give
// the bytes they move (activation tensors read and written, at act bytes
// an element: 2 for resident bf16 activations, else 4) as GB/s, beside a
// device-to-device copy's (the ceiling such a pass can reach) and the
// cost of an empty synchronised op (what every call's time includes).
type profiler struct {
	nn.Backend
	on   bool
	act  int
	rows map[string]*profRow
}

type profRow struct {
	calls int
	total time.Duration
	bytes int64 // activation bytes moved over all calls; 0 when not counted
}

func newProfiler(b nn.Backend, act int) *profiler {
	return &profiler{Backend: b, act: act, rows: map[string]*profRow{}}
}

func (p *profiler) time(key string, f func()) { p.timeBytes(key, 0, f) }

// timeBytes times f as one call of row key that moves the given bytes.
func (p *profiler) timeBytes(key string, moved int64, f func()) {
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
	r.bytes += moved
}

// pass times f as one call of row key that reads or writes passes
// activation tensors of x's size in all.
func (p *profiler) pass(key string, x *nn.Tensor, passes int, f func()) {
	p.timeBytes(key, int64(x.Numel())*int64(p.act*passes), f)
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
	p.pass("bn stats", x, 1, func() { p.Backend.BatchNormStats(sum, sumSq, x) })
}

func (p *profiler) BatchNormForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	p.pass("bn forward", x, 2, func() { p.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta) })
}

func (p *profiler) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *nn.Tensor) {
	p.pass("bn backward stats", x, 2, func() { p.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd) })
}

func (p *profiler) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *nn.Tensor, m int) {
	p.pass("bn backward", x, 3, func() { p.Backend.BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, m) })
}

func (p *profiler) ReLU(y, x *nn.Tensor) { p.pass("relu", x, 2, func() { p.Backend.ReLU(y, x) }) }

func (p *profiler) ReLUBackward(dx, dy, y *nn.Tensor) {
	p.pass("relu backward", y, 3, func() { p.Backend.ReLUBackward(dx, dy, y) })
}

func (p *profiler) Add(y, a, b *nn.Tensor) { p.pass("add", y, 3, func() { p.Backend.Add(y, a, b) }) }

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
		bw := ""
		if e.r.bytes > 0 {
			bw = fmt.Sprintf(" %7.0f GB/s", gbps(e.r.bytes, e.r.total))
		}
		fmt.Fprintf(w, "PROFILE %-44s %8.3f ms/step %5.1f%% %4d calls/step %7.1f us/call%s\n", e.k, ms(e.r.total)/float64(steps),
			100*float64(e.r.total)/float64(max(total, 1)), e.r.calls/steps, us(e.r.total)/float64(max(e.r.calls, 1)), bw)
	}
}

// reference prints what bounds the memory-bound rows: an empty
// synchronised call, and a device-to-device copy of elems float32
// elements (read and written once: 8 bytes an element).
func (p *profiler) reference(w io.Writer, elems int) {
	const reps = 20
	_ = p.Backend.Sync()
	t0 := time.Now()
	for range reps {
		_ = p.Backend.Sync()
	}
	empty := time.Since(t0) / reps
	src, dst := p.Backend.New(elems), p.Backend.New(elems)
	defer p.Backend.Free(src)
	defer p.Backend.Free(dst)
	p.Backend.Fill(src, 1)
	p.Backend.Copy(dst, src) // first touch
	_ = p.Backend.Sync()
	t0 = time.Now()
	for range reps {
		p.Backend.Copy(dst, src)
	}
	_ = p.Backend.Sync()
	cp := time.Since(t0) / reps
	fmt.Fprintf(w, "# profile reference: empty synchronised call %.1f us; copy of %.2f MiB %.1f us, %.0f GB/s (read + write)\n",
		us(empty), float64(elems*4)/(1<<20), us(cp), gbps(int64(elems)*8, cp))
}

func gbps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / max(d.Seconds(), 1e-12) / 1e9
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// The profiler offers nn.FusedOps so the layers take the same fused path
// as on the bare backend; a backend without them gets the separate ops,
// which is what the layers would run.
var _ nn.FusedOps = (*profiler)(nil)

func (p *profiler) BatchNormReLUForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	p.pass("bn+relu forward", x, 2, func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.BatchNormReLUForward(y, x, mean, invStd, gamma, beta)
			return
		}
		p.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta)
		p.Backend.ReLU(y, y)
	})
}

func (p *profiler) AddReLU(y, a, b *nn.Tensor) {
	p.pass("add+relu", y, 3, func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.AddReLU(y, a, b)
			return
		}
		p.Backend.Add(y, a, b)
		p.Backend.ReLU(y, y)
	})
}

func (p *profiler) ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *nn.Tensor) {
	p.pass("relu+bn backward stats", x, 4, func() {
		if f, ok := p.Backend.(nn.FusedOps); ok {
			f.ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd)
			return
		}
		p.Backend.ReLUBackward(dy, dy, y)
		p.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd)
	})
}

package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// opTimer is an nn.Backend (and nn.FusedOps) that forwards every call to
// the CPU backend and adds the wall time of the compute ops to a table by
// op name and shape (-ops). Comparing the table at -threads 1 and 2 shows
// which ops scale and which do not.
type opTimer struct {
	nn.Backend
	f  nn.FusedOps
	on bool // record (the timed steps only)
	t  map[string]*opStat
}

var (
	_ nn.Backend  = (*opTimer)(nil)
	_ nn.FusedOps = (*opTimer)(nil)
)

type opStat struct {
	calls int
	d     time.Duration
}

func newOpTimer(b *nn.CPU) *opTimer {
	return &opTimer{Backend: b, f: b, t: map[string]*opStat{}}
}

// since adds the time since t0 to the entry of op on shape s.
func (o *opTimer) since(t0 time.Time, op string, s []int, extra string) {
	if !o.on {
		return
	}
	k := fmt.Sprintf("%-28s %v%s", op, s, extra)
	e := o.t[k]
	if e == nil {
		e = &opStat{}
		o.t[k] = e
	}
	e.calls++
	e.d += time.Since(t0)
}

func convKey(p nn.ConvParams) string {
	return fmt.Sprintf(" k%dx%d/%d C%d K%d", p.R, p.S, p.StrideH, p.C, p.K)
}

// report writes the table, largest total first, as milliseconds per step.
func (o *opTimer) report(w io.Writer, steps int, step time.Duration) {
	keys := make([]string, 0, len(o.t))
	var sum time.Duration
	for k, e := range o.t {
		keys = append(keys, k)
		sum += e.d
	}
	sort.Slice(keys, func(i, j int) bool { return o.t[keys[i]].d > o.t[keys[j]].d })
	fmt.Fprintf(w, "ops: %.1f ms per step in the timed ops (step %.1f ms)\n",
		sum.Seconds()*1000/float64(steps), step.Seconds()*1000)
	for _, k := range keys {
		e := o.t[k]
		fmt.Fprintf(w, "%8.2f ms %3d calls  %s\n", e.d.Seconds()*1000/float64(steps), e.calls/steps, k)
	}
}

func (o *opTimer) Conv2d(y, x, w *nn.Tensor, p nn.ConvParams) {
	t0 := time.Now()
	o.Backend.Conv2d(y, x, w, p)
	o.since(t0, "Conv2d", x.Shape, convKey(p))
}

func (o *opTimer) Conv2dBackwardData(dx, dy, w *nn.Tensor, p nn.ConvParams) {
	t0 := time.Now()
	o.Backend.Conv2dBackwardData(dx, dy, w, p)
	o.since(t0, "Conv2dBackwardData", dx.Shape, convKey(p))
}

func (o *opTimer) Conv2dBackwardFilter(dw, x, dy *nn.Tensor, p nn.ConvParams) {
	t0 := time.Now()
	o.Backend.Conv2dBackwardFilter(dw, x, dy, p)
	o.since(t0, "Conv2dBackwardFilter", x.Shape, convKey(p))
}

func (o *opTimer) BatchNormStats(sum, sumSq, x *nn.Tensor) {
	t0 := time.Now()
	o.Backend.BatchNormStats(sum, sumSq, x)
	o.since(t0, "BatchNormStats", x.Shape, "")
}

func (o *opTimer) BatchNormForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	t0 := time.Now()
	o.Backend.BatchNormForward(y, x, mean, invStd, gamma, beta)
	o.since(t0, "BatchNormForward", x.Shape, "")
}

func (o *opTimer) BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd *nn.Tensor) {
	t0 := time.Now()
	o.Backend.BatchNormBackwardStats(sumDy, sumDyXhat, dy, x, mean, invStd)
	o.since(t0, "BatchNormBackwardStats", x.Shape, "")
}

func (o *opTimer) BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat *nn.Tensor, m int) {
	t0 := time.Now()
	o.Backend.BatchNormBackward(dx, dy, x, mean, invStd, gamma, sumDy, sumDyXhat, m)
	o.since(t0, "BatchNormBackward", x.Shape, "")
}

func (o *opTimer) ReLU(y, x *nn.Tensor) {
	t0 := time.Now()
	o.Backend.ReLU(y, x)
	o.since(t0, "ReLU", x.Shape, "")
}

func (o *opTimer) ReLUBackward(dx, dy, y *nn.Tensor) {
	t0 := time.Now()
	o.Backend.ReLUBackward(dx, dy, y)
	o.since(t0, "ReLUBackward", y.Shape, "")
}

func (o *opTimer) Add(y, a, b *nn.Tensor) {
	t0 := time.Now()
	o.Backend.Add(y, a, b)
	o.since(t0, "Add", y.Shape, "")
}

func (o *opTimer) Fill(t *nn.Tensor, v float32) {
	t0 := time.Now()
	o.Backend.Fill(t, v)
	o.since(t0, "Fill", t.Shape, "")
}

func (o *opTimer) Copy(dst, src *nn.Tensor) {
	t0 := time.Now()
	o.Backend.Copy(dst, src)
	o.since(t0, "Copy", dst.Shape, "")
}

func (o *opTimer) MaxPool2d(y, argmax, x *nn.Tensor, p nn.PoolParams) {
	t0 := time.Now()
	o.Backend.MaxPool2d(y, argmax, x, p)
	o.since(t0, "MaxPool2d", x.Shape, "")
}

func (o *opTimer) MaxPool2dBackward(dx, dy, argmax *nn.Tensor, p nn.PoolParams) {
	t0 := time.Now()
	o.Backend.MaxPool2dBackward(dx, dy, argmax, p)
	o.since(t0, "MaxPool2dBackward", dx.Shape, "")
}

func (o *opTimer) GlobalAvgPool(y, x *nn.Tensor) {
	t0 := time.Now()
	o.Backend.GlobalAvgPool(y, x)
	o.since(t0, "GlobalAvgPool", x.Shape, "")
}

func (o *opTimer) GlobalAvgPoolBackward(dx, dy *nn.Tensor) {
	t0 := time.Now()
	o.Backend.GlobalAvgPoolBackward(dx, dy)
	o.since(t0, "GlobalAvgPoolBackward", dx.Shape, "")
}

func (o *opTimer) Linear(y, x, w, b *nn.Tensor) {
	t0 := time.Now()
	o.Backend.Linear(y, x, w, b)
	o.since(t0, "Linear", x.Shape, "")
}

func (o *opTimer) LinearBackward(dx, dw, db, dy, x, w *nn.Tensor) {
	t0 := time.Now()
	o.Backend.LinearBackward(dx, dw, db, dy, x, w)
	o.since(t0, "LinearBackward", x.Shape, "")
}

func (o *opTimer) SoftmaxCrossEntropy(loss, dlogits, probs, logits *nn.Tensor, labels []int32, smoothing, gradScale float32) {
	t0 := time.Now()
	o.Backend.SoftmaxCrossEntropy(loss, dlogits, probs, logits, labels, smoothing, gradScale)
	o.since(t0, "SoftmaxCrossEntropy", logits.Shape, "")
}

// SGDStep is recorded as one entry for all parameters.
func (o *opTimer) SGDStep(p, g, buf *nn.Tensor, s nn.SGDParams, first bool) {
	t0 := time.Now()
	o.Backend.SGDStep(p, g, buf, s, first)
	o.since(t0, "SGDStep", nil, "")
}

func (o *opTimer) BatchNormReLUForward(y, x, mean, invStd, gamma, beta *nn.Tensor) {
	t0 := time.Now()
	o.f.BatchNormReLUForward(y, x, mean, invStd, gamma, beta)
	o.since(t0, "BatchNormReLUForward", x.Shape, "")
}

func (o *opTimer) AddReLU(y, a, b *nn.Tensor) {
	t0 := time.Now()
	o.f.AddReLU(y, a, b)
	o.since(t0, "AddReLU", y.Shape, "")
}

func (o *opTimer) ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd *nn.Tensor) {
	t0 := time.Now()
	o.f.ReLUBatchNormBackwardStats(sumDy, sumDyXhat, dy, y, x, mean, invStd)
	o.since(t0, "ReLUBatchNormBackwardStats", x.Shape, "")
}

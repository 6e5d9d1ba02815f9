package worker

import (
	"fmt"
	"math"
	"sync"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// The device step (a backend implementing nn.DeviceCounter and
// nn.AsyncCopier, with the model's gradients on the device): the loss,
// the correct count and the NaN/Inf checks of a step are computed into
// a few device words (devAcc) and read back in one small copy, once per
// step, after the optimizer update is queued; nothing else in the step
// waits for the device (with one worker). See Trainer.TrainStep for what
// this promises about non-finite values.

// Slots of the device step's counts.
const (
	accLoss      = iota // the local batch's mean loss (float32)
	accCorrect          // correct top-1 predictions (uint32 bits)
	accBadInput         // NaN/Inf values in the input (uint32 bits)
	accBadLogits        // NaN/Inf values in the logits and the loss
	accBadGrads         // NaN/Inf values in the gradients (after the all-reduce when there is one)
	accSlots
)

// devStep is the device step's state.
type devStep struct {
	dc      nn.DeviceCounter
	ac      nn.AsyncCopier
	acc     *nn.Tensor // accSlots device words, zeroed at each step's start
	accHost []float32  // page-locked mirror of acc
	y       *nn.Tensor // device labels (max local batch, int32 bits)
	yCap    int
	classes int
}

// newDevStep returns the device step's state for b, or nil when b keeps
// no counts on the device (then every check is the host's, as on the CPU).
func newDevStep(b nn.Backend, classes int) *devStep {
	dc, ok := b.(nn.DeviceCounter)
	ac, ok2 := b.(nn.AsyncCopier)
	if !ok || !ok2 {
		return nil
	}
	h, err := ac.PinnedHost(accSlots)
	if err != nil {
		h = make([]float32, accSlots)
	}
	return &devStep{dc: dc, ac: ac, acc: b.New(accSlots), accHost: h, classes: classes}
}

func (d *devStep) free(b nn.Backend) {
	b.Free(d.acc)
	if d.y != nil {
		b.Free(d.y)
	}
}

// labels checks the batch's labels on the host and uploads them.
func (d *devStep) labels(b nn.Backend, bt *data.Batch) (*nn.Tensor, error) {
	if err := nn.CheckLabels(bt.Labels[:bt.N], bt.N, d.classes); err != nil {
		return nil, err
	}
	y := d.labelBuf(b, bt.N)
	d.dc.UploadLabels(y, bt.Labels[:bt.N])
	return y, nil
}

// labelBuf returns the device labels buffer viewed as n labels, growing
// it when needed.
func (d *devStep) labelBuf(b nn.Backend, n int) *nn.Tensor {
	if d.y == nil || d.yCap < n {
		if d.y != nil {
			b.Free(d.y)
		}
		d.y, d.yCap = b.New(n), n
	}
	return d.y.View(0, n)
}

// read copies the counts to the host (waiting for the work issued so far)
// and reports the backend's sticky error.
func (d *devStep) read() error {
	return d.ac.WaitCopy(d.ac.ToHostAsync(d.accHost, d.acc))
}

func count(v float32) uint32 { return math.Float32bits(v) }

// check turns the counts read back into an error wrapping ErrNonFinite
// naming where the first non-finite values of step were, or nil.
func (d *devStep) check(step int64) error {
	h := d.accHost
	switch {
	case count(h[accBadInput]) > 0:
		return fmt.Errorf("worker: step %d: %w: input has %d NaN/Inf values", step, nn.ErrNonFinite, count(h[accBadInput]))
	case count(h[accBadLogits]) > 0:
		// Not m.CheckFinite: the step's update is already applied, so it
		// would blame the parameters the NaN reached through it.
		return fmt.Errorf("worker: step %d: %w: logits or loss have %d NaN/Inf values (activations overflowed or a parameter was non-finite)",
			step, nn.ErrNonFinite, count(h[accBadLogits]))
	case count(h[accBadGrads]) > 0:
		return fmt.Errorf("worker: step %d: %w: gradients have %d NaN/Inf values", step, nn.ErrNonFinite, count(h[accBadGrads]))
	}
	return nil
}

// forwardBackward issues the device step's compute for x and labels y:
// zero the gradients and counts, forward, loss, counts, backward. Nothing
// in it waits for the device, so it can be captured in a graph.
func (t *Trainer) forwardBackward(x, y *nn.Tensor, n, global int) error {
	d, m := t.dev, t.Model
	m.ZeroGrad()
	t.B.Fill(d.acc, 0)
	logits, err := m.Forward(x)
	if err != nil {
		return fmt.Errorf("worker: step %d forward: %w", t.Step, err)
	}
	d.dc.CountNonFiniteAdd(d.acc, accBadInput, x)
	t.CE.GradScale = float32(n) / float32(global)
	loss, dl, err := t.CE.ComputeLabels(t.B, logits, y)
	if err != nil {
		return fmt.Errorf("worker: step %d loss: %w", t.Step, err)
	}
	t.B.Copy(d.acc.View(accLoss, 1), loss)
	d.dc.Top1Add(d.acc, accCorrect, logits, y)
	d.dc.CountNonFiniteAdd(d.acc, accBadLogits, logits)
	d.dc.CountNonFiniteAdd(d.acc, accBadLogits, loss)
	if err := m.Backward(dl); err != nil {
		return fmt.Errorf("worker: step %d backward: %w", t.Step, err)
	}
	return nil
}

// evaluateDevice is Evaluate's loop on a device backend: each batch's
// mean loss goes into its own device word and the correct and non-finite
// counts accumulate on the device; everything is read back once at the
// end. It returns the sums over this rank's shard.
func (t *Trainer) evaluateDevice(next func() (*data.Batch, error), batches int) (lossSum float64, correct, n int, err error) {
	d, b := t.dev, t.B
	acc := b.New(batches + 2) // [correct, non-finite, loss of batch 0, 1, ...]
	defer b.Free(acc)
	var sizes []int
	ce := nn.CrossEntropy{}
	defer ce.Release()
	for {
		bt, err := next()
		if err != nil {
			return 0, 0, 0, err
		}
		if bt == nil {
			break
		}
		if bt.N == 0 {
			continue
		}
		if len(sizes) == batches {
			return 0, 0, 0, fmt.Errorf("worker: evaluation has more than the %d batches planned", batches)
		}
		x := t.input(bt)
		y, err := d.labels(b, bt)
		if err != nil {
			return 0, 0, 0, err
		}
		logits, err := t.Model.Forward(x)
		if err != nil {
			return 0, 0, 0, err
		}
		loss, _, err := ce.ComputeLabels(b, logits, y)
		if err != nil {
			return 0, 0, 0, err
		}
		b.Copy(acc.View(2+len(sizes), 1), loss)
		d.dc.Top1Add(acc, 0, logits, y)
		d.dc.CountNonFiniteAdd(acc, 1, x)
		d.dc.CountNonFiniteAdd(acc, 1, logits)
		sizes = append(sizes, bt.N)
	}
	h := make([]float32, batches+2)
	b.ToHost(h, acc)
	if err := b.Sync(); err != nil {
		return 0, 0, 0, err
	}
	if c := count(h[1]); c > 0 {
		return 0, 0, 0, fmt.Errorf("worker: evaluation: %w: %d NaN/Inf values in the inputs or logits", nn.ErrNonFinite, c)
	}
	for j, sz := range sizes {
		lossSum += float64(h[2+j]) * float64(sz)
		n += sz
	}
	return lossSum, int(count(h[0])), n, nil
}

// pinnedPool recycles the page-locked image buffers of the training
// loaders (data.LoaderConfig.Alloc/Release): the device step uploads a
// batch from them with one asynchronous copy (nn.PinnedUploader) instead
// of a staging copy. A buffer is reused only after its loader is closed;
// the device reads it before the step that uploaded it returns (the
// step's read-back waits for all its work), so no copy is pending then.
// Buffers are never freed before the backend (PinnedHost's rule).
type pinnedPool struct {
	b    nn.Backend
	ac   nn.AsyncCopier
	mu   sync.Mutex          // guards free and owns
	free map[int][][]float32 // by length: buffers of closed loaders
	owns map[*float32]bool   // the first element of every buffer handed out
}

func newPinnedPool(b nn.Backend) *pinnedPool {
	ac, ok := b.(nn.AsyncCopier)
	if _, up := b.(nn.PinnedUploader); !ok || !up {
		return nil
	}
	return &pinnedPool{b: b, ac: ac, free: map[int][][]float32{}, owns: map[*float32]bool{}}
}

// alloc returns n page-locked float32s, or nil (the loader then uses
// ordinary memory). It calls the backend: only from the trainer's
// goroutine (NewLoader calls it there).
func (p *pinnedPool) alloc(n int) []float32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.free[n]; len(l) > 0 {
		buf := l[len(l)-1]
		p.free[n] = l[:len(l)-1]
		return buf
	}
	buf, err := p.ac.PinnedHost(n)
	if err != nil || len(buf) < n {
		return nil
	}
	p.owns[&buf[0]] = true
	return buf
}

// release takes a buffer back (any goroutine).
func (p *pinnedPool) release(buf []float32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(buf) > 0 && p.owns[&buf[0]] {
		p.free[len(buf)] = append(p.free[len(buf)], buf)
	}
}

// pinned reports whether x starts a buffer of the pool.
func (p *pinnedPool) pinned(x []float32) bool {
	if p == nil || len(x) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owns[&x[0]]
}

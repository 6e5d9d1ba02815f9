package worker

import (
	"context"
	"errors"
	"time"
	"unsafe"

	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Prefetch (Trainer.Prefetch): on a device backend with a copy stream
// (nn.CopyStream), the input of step s+1 is uploaded while step s
// computes. TrainStep of batch s, once s's compute is queued, takes batch
// s+1 from the Feed (the loader has it ready in page-locked memory),
// checks its labels and queues its images and labels on the copy stream
// into the other of two device input slots; the next TrainStep makes the
// compute stream wait for those copies (a fence, no host wait) and reads
// the slot. So the step keeps its one wait (the counts, after the update
// is queued), and the device never idles for an upload.
//
// Ordering, per slot: the copy stream waits for the fence recorded on the
// compute stream after the last step that read the slot (and after the
// slot's buffers were allocated) before it overwrites them; the compute
// stream waits for the fence recorded after the slot's copies before it
// reads them. The host writes a slot's page-locked labels only when the
// step that read it was waited for (else it waits for the slot's copies
// first), and the loader recycles a batch's page-locked images only two
// batches later (data.LoaderConfig.Hold), after the step that used them
// was waited for.
//
// With graphs the slot is copied on the device into the captured input
// and label buffers (two device copies, a few microseconds) so that the
// graph's addresses stay fixed.
//
// A prefetched batch belongs to its Feed: closing the Feed (a failed
// step, a new plan, the end) waits for its copies and drops it; a restore
// (rollback) drops it too. It is never counted, trained, or reused: the
// next feed starts from the trainer's committed position.

// inSlot is one of the two device input slots.
type inSlot struct {
	x, y   *nn.Tensor // images (xLen values) and labels (int32 bits)
	xLen   int
	yLen   int
	ready  nn.Fence    // copy stream: the slot's copies have landed
	free   nn.Fence    // compute stream: the steps that read the slot are done
	b      *data.Batch // the batch uploaded into the slot, not yet trained
	bad    error       // b's labels failed their check (returned by its step)
	inUse  bool        // a step read it and was not waited for yet
	copied bool        // copies were queued since the slot's last host wait
}

// prefetch is the trainer's double-buffered input.
type prefetch struct {
	cs    nn.CopyStream
	slots [2]inSlot
	next  int       // the slot the next upload goes to
	yHost []float32 // page-locked label bits, the sources of the slots' label copies (one half each)
	feed  *Feed     // the feed whose next batch is taken during a step
	stats PrefetchStats
}

// PrefetchStats counts the prefetch's work (tests, logs).
type PrefetchStats struct {
	Uploads  int // batches uploaded on the copy stream
	Ahead    int // of them, uploaded during the step before theirs
	Dropped  int // uploaded batches never trained (a closed feed, a restore)
	HostWait int // host waits for a slot's copies (a dropped batch, a slot reused before its step was waited for)
}

// PrefetchStats reports the prefetch's counters (zero when it is off).
func (t *Trainer) PrefetchStats() PrefetchStats {
	if t.pre == nil {
		return PrefetchStats{}
	}
	return t.pre.stats
}

// prefetching returns the prefetch state, creating it on first use, or
// nil when Prefetch is off or the backend cannot (no device step, no
// page-locked loader buffers, no copy stream).
func (t *Trainer) prefetching() *prefetch {
	if !t.Prefetch || t.dev == nil || t.pins == nil {
		return nil
	}
	if t.pre != nil {
		return t.pre
	}
	cs, ok := t.B.(nn.CopyStream)
	if !ok {
		return nil
	}
	p := &prefetch{cs: cs}
	for k := range p.slots {
		var err1, err2 error
		p.slots[k].ready, err1 = cs.NewFence()
		p.slots[k].free, err2 = cs.NewFence()
		if err := errors.Join(err1, err2); err != nil {
			// Fences made before the failure go back (nothing recorded
			// them: they are done).
			for j := 0; j <= k; j++ {
				if j < k || err1 == nil {
					cs.ReleaseFence(p.slots[j].ready)
				}
				if j < k || err2 == nil {
					cs.ReleaseFence(p.slots[j].free)
				}
			}
			// No copy stream: each step uploads its own input.
			t.Prefetch = false
			if t.Logf != nil {
				t.Logf("worker: input prefetch off, each step uploads its own input: %v", err)
			}
			return nil
		}
	}
	t.pre = p
	if t.Logf != nil {
		t.Logf("worker: each step's input uploads on a copy stream while the step before computes (--gpu-prefetch)")
	}
	return p
}

// load uploads batch b on the copy stream into the next slot and returns
// the slot, or -1 when b cannot go that way (empty, not page-locked).
func (t *Trainer) load(b *data.Batch) int {
	p := t.pre
	if b.N == 0 || !t.pins.pinned(b.X) {
		return -1
	}
	if len(p.yHost)/2 < b.N {
		h, err := t.dev.ac.PinnedHost(2 * max(b.N, t.Spec.GlobalBatch))
		if err != nil {
			return -1 // not page-locked: the compute stream uploads it
		}
		p.yHost = h
	}
	k := p.next
	p.next = 1 - k
	s := &p.slots[k]
	if s.b != nil {
		p.stats.Dropped++ // uploaded, never trained
		s.b = nil
	}
	if s.inUse || s.copied {
		// Its last copies are not known to have landed: they read the
		// page-locked labels written below.
		p.stats.HostWait++
		_ = p.cs.SyncFence(s.ready) // an error is sticky: the step reports it
		s.inUse, s.copied = false, false
	}
	n, sz := b.N, b.Shape.Len()
	grown := false
	if s.xLen < n*sz {
		if s.x != nil {
			p.cs.ComputeAfter(s.ready) // later users of the block come after the copies
			t.B.Free(s.x)
		}
		s.x, s.xLen, grown = t.B.New(n*sz), n*sz, true
	}
	if s.yLen < n {
		if s.y != nil {
			p.cs.ComputeAfter(s.ready)
			t.B.Free(s.y)
		}
		s.y, s.yLen, grown = t.B.New(n), n, true
	}
	if grown {
		// New zeroes the blocks on the compute stream, which may also
		// still use them for what they held before.
		p.cs.RecordCompute(s.free)
	}
	s.b = b
	if s.bad = nn.CheckLabels(b.Labels[:n], n, t.dev.classes); s.bad != nil {
		return k // its step returns the error; nothing to upload
	}
	yHost := p.yHost[k*len(p.yHost)/2:][:n]
	copy(unsafe.Slice((*int32)(unsafe.Pointer(&yHost[0])), n), b.Labels[:n])
	p.cs.CopyAfter(s.free)
	p.cs.CopyPinned(s.x.View(0, n*sz), b.X[:n*sz])
	p.cs.CopyPinned(s.y.View(0, n), yHost)
	p.cs.RecordCopies(s.ready)
	s.copied = true
	p.stats.Uploads++
	return k
}

// stepInput returns the device images and labels of batch b (non-empty)
// for the device step: from the prefetch slot holding b (uploading it
// now when it is not there yet), else uploaded on the compute stream.
// slot is the prefetch slot read (-1: none).
func (t *Trainer) stepInput(b *data.Batch, graphs bool) (x, y *nn.Tensor, slot int, err error) {
	p := t.pre
	slot = -1
	if p != nil {
		for k := range p.slots {
			if p.slots[k].b == b {
				slot = k
			}
		}
		if slot < 0 {
			slot = t.load(b)
		}
	}
	if slot < 0 {
		x = t.input(b)
		y, err = t.dev.labels(t.B, b)
		return x, y, -1, err
	}
	s := &p.slots[slot]
	s.b = nil
	if s.bad != nil {
		return nil, nil, slot, s.bad
	}
	p.cs.ComputeAfter(s.ready)
	s.inUse = true
	sh := b.Shape
	x = s.x.View(0, b.N, sh.C, sh.H, sh.W)
	y = s.y.View(0, b.N)
	if graphs {
		// A captured step reads fixed addresses.
		gx, gy := t.inputBuf(b), t.dev.labelBuf(t.B, b.N)
		t.B.Copy(gx, x)
		t.B.Copy(gy, y)
		x, y = gx, gy
	}
	return x, y, slot, nil
}

// afterCompute records that the step's compute, the last reader of slot,
// is queued; then, with a feed, it takes the next batch and uploads it.
func (t *Trainer) afterCompute(ctx context.Context, b *data.Batch, slot int) {
	p := t.pre
	if p == nil {
		return
	}
	if slot >= 0 {
		p.cs.RecordCompute(p.slots[slot].free)
	}
	f := p.feed
	if f == nil || f.last != b || f.taken {
		return
	}
	at := time.Now()
	nb, err := f.ld.Next(ctx)
	f.ahead, f.aheadErr, f.taken, f.aheadWait = nb, err, true, time.Since(at)
	if err == nil && t.load(nb) >= 0 {
		p.stats.Ahead++
	}
}

// stepWaited records that the step's work, and so the copies of the slots
// it read, are done (its read-back returned).
func (p *prefetch) stepWaited() {
	if p == nil {
		return
	}
	for k := range p.slots {
		if s := &p.slots[k]; s.inUse {
			s.inUse, s.copied = false, false
		}
	}
}

// drop forgets the uploaded batches that were not trained, after their
// copies landed (their page-locked images go back to the loader next).
func (p *prefetch) drop() error {
	if p == nil {
		return nil
	}
	var first error
	for k := range p.slots {
		s := &p.slots[k]
		if s.b != nil {
			p.stats.Dropped++
			s.b = nil
		}
		if s.copied || s.inUse {
			p.stats.HostWait++
			if err := p.cs.SyncFence(s.ready); err != nil && first == nil {
				first = err
			}
			s.copied, s.inUse = false, false
		}
	}
	return first
}

// free releases the slots' device buffers (Trainer.Close).
func (p *prefetch) free(b nn.Backend) {
	if p == nil {
		return
	}
	_ = p.drop()
	if f := p.feed; f != nil { // its Close only closes the loader now
		f.stale, p.feed = true, nil
	}
	for k := range p.slots {
		s := &p.slots[k]
		p.cs.ComputeAfter(s.ready) // later users of the blocks come after the copies
		if s.x != nil {
			b.Free(s.x)
		}
		if s.y != nil {
			b.Free(s.y)
		}
		s.x, s.y, s.xLen, s.yLen = nil, nil, 0, 0
		// The fences go back for the next trainer on this backend, once
		// done (the step that read the slot, its copies).
		_ = p.cs.SyncFence(s.free)
		_ = p.cs.SyncFence(s.ready)
		p.cs.ReleaseFence(s.ready)
		p.cs.ReleaseFence(s.free)
		s.ready, s.free = -1, -1 // released once, even if free runs again
	}
}

// restored drops the prefetched batch and retires the open feed, whose
// loader stands where the state left behind stood: its Next fails from
// now on (the caller opens a feed at the restored position).
func (t *Trainer) restored() { t.retireFeed() }

// retireFeed drops the prefetched batch and makes the open feed's Next
// fail.
func (t *Trainer) retireFeed() {
	p := t.pre
	if p == nil {
		return
	}
	_ = p.drop() // an error is sticky: the next step reports it
	if f := p.feed; f != nil {
		f.ahead, f.aheadErr, f.taken, f.last = nil, nil, false, nil
		f.stale = true
		p.feed = nil
	}
}

// ErrStaleFeed: the trainer was restored, or fed by a newer feed, while
// the feed was open.
var ErrStaleFeed = errors.New("worker: the feed was retired by a restore or a newer feed (open a new feed)")

// Feed hands a training loop this rank's batches (Trainer.Feed): the
// loader's batches, in its order. With the trainer prefetching, TrainStep
// of the batch Next returned last takes the next one from the loader and
// uploads it while the step computes; Next then returns that one (and any
// error taking it gave). Not safe for concurrent use; Close it before the
// trainer is restored or fed again.
type Feed struct {
	t         *Trainer
	ld        *data.Loader
	last      *data.Batch   // returned by the last Next
	ahead     *data.Batch   // taken by TrainStep, not yet returned
	aheadErr  error         // what taking it returned
	taken     bool          // ahead and aheadErr are set
	aheadWait time.Duration // how long taking it waited for the loader
	wait      time.Duration // the same for the batch Next returned last
	stale     bool          // retired by a restore or a newer feed (Next fails)
}

// Feed returns a feed of this rank's batches from the committed position.
// With Prefetch on (and a backend that can), the loader keeps the two
// latest batches valid, and TrainStep prefetches as described above;
// otherwise the feed is the loader.
func (t *Trainer) Feed(ctx context.Context, rank, world int) (*Feed, error) {
	p := t.prefetching()
	hold := 1
	if p != nil {
		t.retireFeed() // one feed prefetches at a time
		hold = 2
	}
	ld, err := t.loader(ctx, rank, world, hold)
	if err != nil {
		return nil, err
	}
	f := &Feed{t: t, ld: ld}
	if p != nil {
		p.feed = f
	}
	return f, nil
}

// Next returns the next batch, as data.Loader.Next does.
func (f *Feed) Next(ctx context.Context) (*data.Batch, error) {
	if f.stale {
		return nil, ErrStaleFeed
	}
	f.wait = 0
	if f.taken {
		b, err := f.ahead, f.aheadErr
		f.ahead, f.aheadErr, f.taken = nil, nil, false
		f.wait = f.aheadWait
		if err == nil {
			f.last = b
		}
		return b, err
	}
	b, err := f.ld.Next(ctx)
	if err == nil {
		f.last = b
	}
	return b, err
}

// Waited is how long the batch Next returned last waited for the loader
// while the step before it computed (0 when it was not prefetched).
func (f *Feed) Waited() time.Duration { return f.wait }

// Ready returns how many batches are prepared ahead of Next (a prefetched
// one included).
func (f *Feed) Ready() int {
	n := f.ld.Ready()
	if f.taken && f.aheadErr == nil {
		n++
	}
	return n
}

// Close drops a prefetched batch (after its copies landed) and closes the
// loader; it is safe to call more than once.
func (f *Feed) Close() error {
	t := f.t
	var err error
	if p := t.pre; p != nil && p.feed == f {
		err = p.drop()
		p.feed = nil
	}
	f.ahead, f.aheadErr, f.taken, f.last = nil, nil, false, nil
	return firstError(err, f.ld.Close())
}

func firstError(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

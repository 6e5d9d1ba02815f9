package allreduce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The device ring: same-host workers whose vectors live in GPU memory
// reduce them device to device. Every rank exports the device buffers it
// reduces in (DeviceRegion) to its right neighbour as memory handles
// (CUDA IPC), over the ring's own link; then each round of a collective
// is a kernel on the receiving rank that reads the left neighbour's
// memory directly and adds (or copies) it into its own, in exactly the
// host ring's partition and order, so both give the same bits. Where the
// receiving device cannot read the neighbour's memory with its kernels
// (two GPUs without peer access), it copies each segment into a local
// staging area first (RingPull: a copy through the device) and runs the
// same kernel on the copy: the same float operations, the same bits. The
// link carries only a 4-byte signal per round ("my round R is done"),
// sent after the sender's device work, copies included, is complete (a
// stream sync): no vector byte goes through the ring's host path.

// Device is the GPU memory a device ring reduces in: pkg/gpu's Backend, or
// MemDevice (host memory, for tests). Addresses are device pointers.
// The Ring* methods queue work in stream order and keep the first error,
// which RingSync returns after waiting for the queued work. A Device is
// used by one goroutine at a time: while a device collective runs, the
// ring's goroutine uses it and the caller must not.
type Device interface {
	// IPCKind names the kind of handles the device exchanges ("" if it
	// cannot); ranks pair only when their kinds are equal.
	IPCKind() string
	// IPCIdentity names the device (e.g. its UUID): in logs, and to the
	// neighbour that opens its handles (IPCOpen's owner).
	IPCIdentity() string
	// IPCExport returns a handle another process of this host can open to
	// reach the allocation holding ptr, and ptr's offset in it.
	IPCExport(ptr uint64) (handle []byte, offset uint64, err error)
	// IPCOpen maps a peer's handle, exported by the device whose
	// IPCIdentity is owner, and returns the allocation's base here.
	// copyOnly says that this device's kernels cannot read the memory
	// (another GPU without peer access: the handle is opened in that
	// GPU's context); only RingPull may then read it, and the Ring*
	// kernels must never be given its addresses.
	IPCOpen(handle []byte, owner string) (base uint64, copyOnly bool, err error)
	// IPCClose unmaps what IPCOpen mapped.
	IPCClose(base uint64) error
	// AllocShared returns bytes of zeroed, exportable device memory.
	AllocShared(bytes int) (uint64, error)
	// FreeShared releases memory of AllocShared.
	FreeShared(ptr uint64) error
	// RingAdd queues dst[i] = dst[i] + src[i] (float32) for i < n, then
	// dst[i] = dst[i] / div when div != 0.
	RingAdd(dst, src uint64, n int, div float32)
	// RingCopy queues dst[i] = src[i] for i < n.
	RingCopy(dst, src uint64, n int)
	// RingPull queues dst[i] = src[i] for i < n, where src is memory that
	// IPCOpen mapped (copy-only or not) and dst this device's own: a copy
	// through the device (cuMemcpyPeerAsync), in stream order with the
	// kernels.
	RingPull(dst, src uint64, n int)
	// RingDiv queues dst[i] = src[i] / div for i < n.
	RingDiv(dst, src uint64, n int, div float32)
	// RingSum64 queues dst[i] = float32(sum_{k<w} float64(all[k*l+i]),
	// divided by w when mean), summed in k order.
	RingSum64(dst, all uint64, l, w int, mean bool)
	// RingSync waits for the queued work and returns the first error.
	RingSync() error
}

// DeviceRegion is a device buffer of Len float32 elements that device
// collectives run in. Every rank attaches the same regions (same count,
// same lengths, same order); a collective names one region and an
// element range in it, the same on every rank.
type DeviceRegion struct {
	Ptr uint64
	Len int
}

// DeviceLink says how an attached rank reaches its left neighbour's
// device memory (AttachDevice); each rank has its own, so one ring may
// mix the two ways.
type DeviceLink struct {
	Kind string // the handles' kind (IPCKind), e.g. "cuda-ipc"
	Here string // this device's IPCIdentity
	Left string // the left neighbour's IPCIdentity
	// CopyOnly: this device's kernels cannot read the left neighbour's
	// memory (no peer access), so every segment is first copied into a
	// local staging area (RingPull).
	CopyOnly bool
}

// String describes the link for logs: "cuda-ipc, peer access; this
// device A, left neighbour's B" ("peer access (same device A)" when both
// are one device), or "cuda-ipc, copies through the device: no peer
// access between A and B" (A this device, B the left neighbour's).
func (l DeviceLink) String() string {
	switch {
	case l.CopyOnly:
		return fmt.Sprintf("%s, copies through the device: no peer access between %s and %s", l.Kind, l.Here, l.Left)
	case l.Here == l.Left:
		return fmt.Sprintf("%s, peer access (same device %s)", l.Kind, l.Here)
	}
	return fmt.Sprintf("%s, peer access; this device %s, left neighbour's %s", l.Kind, l.Here, l.Left)
}

// ErrNoDeviceRing: the device ring could not be set up on every rank (a
// rank that refused, a device without IPC, peers of different kinds, a
// handle that does not open, compression, a link between hosts). Every rank gets it from the
// same AttachDevice; the ring stays usable for host collectives, so the
// caller goes on with the host path.
var ErrNoDeviceRing = errors.New("allreduce: no device-to-device ring")

// deviceRing is the attached state (set by the runner, read under Ring.mu
// by StartDevice; used by the runner only otherwise).
type deviceRing struct {
	dev      Device
	regions  []DeviceRegion // this rank's, the last being scratch
	peer     []uint64       // the left neighbour's, mapped here (same indices)
	copyOnly []bool         // peer[i] is reached by RingPull only (same indices)
	opened   []uint64       // bases to IPCClose
	scratch  uint64         // small-path all-gather area (World * smallElems)
	smallCap int            // elements of the largest small-path vector
	stage    uint64         // copy-only links: the staging area of reduce-scatter adds
	stageLen int            // its elements
}

// Special buckets of the device ring's own collectives.
const (
	bucketDeviceHello  uint32 = math.MaxUint32 - 2
	bucketDeviceCensus uint32 = math.MaxUint32 - 3
)

// deviceHelloVersion is the layout version of the hello payload.
const deviceHelloVersion = 1

// devOp is a queued device collective or attach (Op.dev).
type devOp struct {
	attach *attachReq
	region int
	off, n int
	link   DeviceLink // after attach: how this rank reaches its left neighbour
}

type attachReq struct {
	dev     Device // nil with refusal
	regions []DeviceRegion
	refusal string // non-empty: this rank takes part only to refuse
}

// AttachDevice sets up the device ring: every rank must call it at the
// same place in its sequence of collectives (it is one), with regions of
// the same count and lengths. It exports the regions (and a small-path
// scratch area it allocates) to the right neighbour, opens the left
// neighbour's, and all ranks agree: nil on every rank, or an error
// wrapping ErrNoDeviceRing on every rank (the ring stays usable, the
// caller keeps the host path). A link failure breaks the ring as any
// collective's does. It returns how this rank reaches its left
// neighbour's memory (peer access, or copies through the device). A
// nil device or an invalid region is this rank's refusal (the collective
// still runs, so the other ranks do not wait for it in vain).
func (r *Ring) AttachDevice(ctx context.Context, dev Device, regions []DeviceRegion) (DeviceLink, error) {
	why := ""
	if dev == nil {
		why = "no device"
	}
	for i, g := range regions {
		if g.Ptr == 0 || g.Len <= 0 {
			why = fmt.Sprintf("invalid device region %d (%#x, %d elements)", i, g.Ptr, g.Len)
		}
	}
	return r.attachCollective(ctx, dev, regions, why)
}

// RefuseDevice takes part in the collective of AttachDevice without a
// device, for a rank that cannot or will not use the device ring (a CPU
// backend, the device ring switched off): every rank then gets
// ErrNoDeviceRing, this one with why. Every rank of a ring must call one
// of the two at the same place, so that none waits for the others.
func (r *Ring) RefuseDevice(ctx context.Context, why string) error {
	if why == "" {
		why = "refused"
	}
	_, err := r.attachCollective(ctx, nil, nil, why)
	return err
}

func (r *Ring) attachCollective(ctx context.Context, dev Device, regions []DeviceRegion, why string) (DeviceLink, error) {
	d := &devOp{attach: &attachReq{dev: dev, regions: append([]DeviceRegion(nil), regions...), refusal: why}}
	if why != "" {
		d.attach.dev, d.attach.regions = nil, nil
	}
	op := r.startOp(ctx, Tag{Bucket: bucketDeviceHello}, nil, Sum, d)
	if err := op.Wait(); err != nil {
		return DeviceLink{}, err
	}
	return d.link, nil
}

// DeviceAttached reports whether device collectives run device to device
// (AttachDevice succeeded).
func (r *Ring) DeviceAttached() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dev != nil
}

// StartDevice queues an all-reduce, in place, of elements [off, off+n) of
// the attached region; every rank must name the same region and range.
// The result has the same bits as Start on the same values. The device
// work queued before the call is part of the input (the ring waits for
// it). The Device must not be used until the Op is done.
func (r *Ring) StartDevice(ctx context.Context, tag Tag, region, off, n int, red Reduction) *Op {
	r.mu.Lock()
	dr := r.dev
	r.mu.Unlock()
	if dr == nil || region < 0 || region >= len(dr.regions)-1 || off < 0 || n < 0 || off+n > dr.regions[region].Len {
		op := &Op{tag: tag, done: make(chan struct{})}
		if dr == nil {
			op.finish(fmt.Errorf("%w: no device attached to the ring", ErrConfig))
		} else {
			op.finish(fmt.Errorf("%w: device range region %d [%d, +%d)", ErrConfig, region, off, n))
		}
		return op
	}
	return r.startOp(ctx, tag, nil, red, &devOp{region: region, off: off, n: n})
}

// AllReduceDevice is StartDevice and Wait.
func (r *Ring) AllReduceDevice(ctx context.Context, tag Tag, region, off, n int, red Reduction) error {
	return r.StartDevice(ctx, tag, region, off, n, red).Wait()
}

// detachDevice releases the device ring's mappings and scratch (after the
// runner has stopped).
func (r *Ring) detachDevice() error {
	r.mu.Lock()
	dr := r.dev
	r.dev = nil
	r.mu.Unlock()
	if dr == nil {
		return nil
	}
	return dr.release()
}

func (dr *deviceRing) release() error {
	var errs []error
	for _, b := range dr.opened {
		errs = append(errs, dr.dev.IPCClose(b))
	}
	if dr.scratch != 0 {
		errs = append(errs, dr.dev.FreeShared(dr.scratch))
	}
	if dr.stage != 0 {
		errs = append(errs, dr.dev.FreeShared(dr.stage))
	}
	dr.opened, dr.scratch, dr.stage = nil, 0, 0
	return errors.Join(errs...)
}

// sameHost reports whether the ring's links stay on this host: a link
// that can tell (GRPCTransport's) must go through shared memory both
// ways; others (InmemTransport) are in-process.
func (r *Ring) sameHost() bool {
	if l, ok := r.link.(sharedMemoryLink); ok {
		return l.SharedMemory() && l.SharedMemoryIn()
	}
	return true
}

// executeDevice runs a device op on the runner goroutine.
func (r *Ring) executeDevice(ctx context.Context, op *Op) error {
	if op.dev.attach != nil {
		return r.attach(ctx, op)
	}
	if r.cfg.World == 1 || op.dev.n == 0 {
		return nil
	}
	r.mu.Lock()
	dr := r.dev
	r.mu.Unlock()
	if 4*op.dev.n <= min(r.cfg.SmallBytes, r.cfg.ChunkBytes) {
		return r.exec(ctx, op, r.deviceSmallPath(op, dr))
	}
	return r.exec(ctx, op, r.deviceRingPath(op, dr))
}

// hello is what a rank tells its right neighbour in AttachDevice.
type hello struct {
	refusal  string // non-empty: this rank cannot take part, and why
	kind     string
	identity string
	regions  []helloRegion
}

type helloRegion struct {
	elems  uint64
	offset uint64
	handle []byte
}

func (h *hello) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, deviceHelloVersion)
	str := func(s string) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	str(h.refusal)
	str(h.kind)
	str(h.identity)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.regions)))
	for _, g := range h.regions {
		b = binary.LittleEndian.AppendUint64(b, g.elems)
		b = binary.LittleEndian.AppendUint64(b, g.offset)
		str(string(g.handle))
	}
	return b
}

var errHello = fmt.Errorf("%w: device hello", ErrMalformed)

func decodeHello(p []byte) (*hello, error) {
	u32 := func() (uint32, error) {
		if len(p) < 4 {
			return 0, errHello
		}
		v := binary.LittleEndian.Uint32(p)
		p = p[4:]
		return v, nil
	}
	u64 := func() (uint64, error) {
		if len(p) < 8 {
			return 0, errHello
		}
		v := binary.LittleEndian.Uint64(p)
		p = p[8:]
		return v, nil
	}
	str := func() (string, error) {
		n, err := u32()
		if err != nil || uint64(n) > uint64(len(p)) {
			return "", errHello
		}
		s := string(p[:n])
		p = p[n:]
		return s, nil
	}
	v, err := u32()
	if err != nil {
		return nil, err
	}
	if v != deviceHelloVersion {
		return nil, fmt.Errorf("%w: version %d, here %d", errHello, v, deviceHelloVersion)
	}
	h := &hello{}
	for _, s := range []*string{&h.refusal, &h.kind, &h.identity} {
		if *s, err = str(); err != nil {
			return nil, err
		}
	}
	n, err := u32()
	if err != nil || n > 1<<16 {
		return nil, errHello
	}
	for i := 0; i < int(n); i++ {
		var g helloRegion
		if g.elems, err = u64(); err != nil {
			return nil, err
		}
		if g.offset, err = u64(); err != nil {
			return nil, err
		}
		s, err := str()
		if err != nil {
			return nil, err
		}
		g.handle = []byte(s)
		h.regions = append(h.regions, g)
	}
	if len(p) != 0 {
		return nil, errHello
	}
	return h, nil
}

// attach runs AttachDevice's exchange: hello to the right, hello from the
// left, then a census (a host small-path sum of one flag per rank) so
// that every rank takes the same decision.
func (r *Ring) attach(ctx context.Context, op *Op) error {
	req := op.dev.attach
	dev := req.dev
	if r.cfg.World == 1 {
		return fmt.Errorf("%w: one worker, nothing to reduce", ErrNoDeviceRing)
	}
	smallCap := 0
	if s := min(r.cfg.SmallBytes, r.cfg.ChunkBytes); s > 0 {
		smallCap = s / 4
	}
	dr := &deviceRing{dev: dev, smallCap: smallCap}
	mine := &hello{refusal: req.refusal}
	if dev != nil {
		mine.kind, mine.identity = dev.IPCKind(), dev.IPCIdentity()
	}
	switch {
	case mine.refusal != "":
	case mine.kind == "":
		mine.refusal = "the device cannot share memory (no IPC)"
	case r.cfg.Compression != CompressNone:
		mine.refusal = "compression " + r.cfg.Compression.String() + " is a host-path feature"
	case !r.sameHost():
		mine.refusal = "a neighbour is on another host (no shared-memory link)"
	}
	if mine.refusal == "" && smallCap > 0 {
		p, err := dev.AllocShared(4 * r.cfg.World * smallCap)
		if err != nil {
			mine.refusal = fmt.Sprintf("allocating the small-path area: %v", err)
		} else {
			dr.scratch = p
		}
	}
	regions := req.regions
	if dr.scratch != 0 {
		regions = append(regions, DeviceRegion{Ptr: dr.scratch, Len: r.cfg.World * smallCap})
	} else {
		regions = append(regions, DeviceRegion{}) // keeps the indices; never used
	}
	dr.regions = regions
	if mine.refusal == "" {
		for i, g := range regions {
			hr := helloRegion{elems: uint64(g.Len)}
			if g.Ptr != 0 {
				h, off, err := dev.IPCExport(g.Ptr)
				if err != nil {
					mine.refusal = fmt.Sprintf("exporting region %d: %v", i, err)
					break
				}
				hr.offset, hr.handle = off, h
			}
			mine.regions = append(mine.regions, hr)
		}
	}
	if mine.refusal != "" {
		mine.regions = nil
	}
	payload := mine.encode()
	if len(payload) > r.cfg.ChunkBytes {
		return fmt.Errorf("%w: device hello of %d bytes over the chunk size", ErrConfig, len(payload))
	}
	base := Header{Job: r.cfg.Job, Generation: r.cfg.Generation, Step: op.tag.Step, Bucket: bucketDeviceHello,
		Seq: op.seq, DType: DTypeF32} // the regions are the payload's (a refusal has none)
	var local string // why this rank cannot use its left neighbour's memory
	var left *hello
	s := schedule{
		send: func(<-chan struct{}) error {
			h := base
			return r.link.Send(&h, len(payload), func(dst []byte) { copy(dst, payload) })
		},
		recv: func(<-chan struct{}) error {
			want := base
			return r.link.Recv(func(h *Header, p [][]byte) error {
				if err := check(h, &want); err != nil {
					return err
				}
				var buf []byte
				for _, q := range p {
					buf = append(buf, q...)
				}
				var err error
				left, err = decodeHello(buf)
				return err
			})
		},
	}
	if err := r.exec(ctx, op, s); err != nil {
		_ = dr.release()
		return err
	}
	switch {
	case mine.refusal != "":
		local = mine.refusal
	case left.refusal != "":
		local = "left neighbour: " + left.refusal
	case left.kind != mine.kind:
		local = fmt.Sprintf("left neighbour's memory is %q, here %q", left.kind, mine.kind)
	case len(left.regions) != len(regions):
		local = fmt.Sprintf("left neighbour has %d device regions, here %d", len(left.regions), len(regions))
	}
	if local == "" {
		for i, g := range left.regions {
			if g.elems != uint64(regions[i].Len) {
				local = fmt.Sprintf("left neighbour's region %d has %d elements, here %d", i, g.elems, regions[i].Len)
				break
			}
		}
	}
	if local == "" {
		dr.peer, dr.copyOnly = make([]uint64, len(regions)), make([]bool, len(regions))
		for i, g := range left.regions {
			if len(g.handle) == 0 {
				continue
			}
			b, copyOnly, err := dev.IPCOpen(g.handle, left.identity)
			if err != nil {
				local = fmt.Sprintf("opening the left neighbour's region %d: %v", i, err)
				break
			}
			dr.opened = append(dr.opened, b)
			dr.peer[i], dr.copyOnly[i] = b+g.offset, copyOnly
		}
	}
	if local == "" {
		if err := dr.allocStage(r.cfg); err != nil {
			local = fmt.Sprintf("allocating the staging area of copies through the device: %v", err)
		}
	}
	flag := []float32{0}
	if local == "" {
		flag[0] = 1
	}
	c := &Op{tag: Tag{Step: op.tag.Step, Bucket: bucketDeviceCensus}, seq: op.seq, data: flag, red: Sum, ctx: op.ctx, start: op.start}
	if err := r.exec(ctx, c, r.smallPath(c)); err != nil {
		_ = dr.release()
		return err
	}
	if flag[0] != float32(r.cfg.World) {
		_ = dr.release()
		if local == "" {
			local = fmt.Sprintf("%d of %d ranks could not use their neighbour's memory", r.cfg.World-int(flag[0]), r.cfg.World)
		}
		return fmt.Errorf("%w: %s", ErrNoDeviceRing, local)
	}
	op.dev.link = DeviceLink{Kind: mine.kind, Here: mine.identity, Left: left.identity}
	for _, c := range dr.copyOnly {
		op.dev.link.CopyOnly = op.dev.link.CopyOnly || c
	}
	r.mu.Lock()
	old := r.dev
	r.dev = dr
	r.mu.Unlock()
	if old != nil {
		_ = old.release()
	}
	return nil
}

// devSignals is the send half of a device collective: it sends frames
// 0..T-1 (a 4-byte round number each) as the receive half releases them
// on next, and returns when all are sent.
func (r *Ring) devSignals(base Header, T int, next <-chan int) func(abort <-chan struct{}) error {
	return func(abort <-chan struct{}) error {
		for i := 0; i < T; i++ {
			var R int
			select {
			case R = <-next:
			case <-abort:
				return errAborted
			}
			h := base
			h.Round = uint32(R)
			if err := r.link.Send(&h, 4, func(dst []byte) { binary.LittleEndian.PutUint32(dst, uint32(R)) }); err != nil {
				return err
			}
		}
		return nil
	}
}

// devWait receives signal frame R from the left neighbour.
func (r *Ring) devWait(base Header, R int) error {
	want := base
	want.Round = uint32(R)
	return r.link.Recv(func(h *Header, p [][]byte) error {
		if err := check(h, &want); err != nil {
			return err
		}
		if piecesLen(p) != 4 {
			return fmt.Errorf("%w: device signal of %d bytes", ErrMalformed, piecesLen(p))
		}
		return nil
	})
}

// devHeader is the tag of a device collective's signal frames.
func (r *Ring) devHeader(op *Op) Header {
	return Header{Job: r.cfg.Job, Generation: r.cfg.Generation, Step: op.tag.Step, Bucket: op.tag.Bucket,
		Seq: op.seq, Segment: uint32(op.dev.region), Offset: uint64(op.dev.off), Total: uint64(op.dev.n), DType: DTypeF32}
}

// deviceRingPath is ringPath on the device. Rank k in round R pulls
// segment k-R-1 from its left neighbour's memory: rounds 0..N-2 add it to
// its own partial sum (the owner, in round N-2, divides for Mean), rounds
// N-1..2N-3 copy the final values. A round starts when the left
// neighbour's signal R arrives (its round R-1 is done on its device) and
// ends with a stream sync and signal R+1 to the right. N-1 more signals
// close the collective: when rank k receives signal 3N-4, its right
// neighbour has finished reading k's memory, so k may change it. The sum
// order per element is the host ring's: ((x_s + x_{s+1}) + ...) from rank s.
func (r *Ring) deviceRingPath(op *Op, dr *deviceRing) schedule {
	n, rank := r.cfg.World, r.cfg.Rank
	l, off := op.dev.n, op.dev.off
	mine, peer := dr.regions[op.dev.region].Ptr+4*uint64(off), dr.peer[op.dev.region]+4*uint64(off)
	pull := dr.copyOnly[op.dev.region]
	work := 2 * (n - 1)
	T := work + n - 1
	base := r.devHeader(op)
	next := make(chan int, T)
	div := float32(0)
	if op.red == Mean {
		div = float32(n)
	}
	recv := func(abort <-chan struct{}) error {
		if err := dr.dev.RingSync(); err != nil { // the input is on the device
			return err
		}
		next <- 0
		for R := 0; R < T; R++ {
			if err := r.devWait(base, R); err != nil {
				return err
			}
			if R < work {
				lo, hi := segBounds(l, n, mod(rank-R-1, n))
				at := 4 * uint64(lo)
				switch {
				case R < n-2:
					dr.add(mine+at, peer+at, hi-lo, 0, pull)
				case R == n-2: // this rank owns the full sum
					dr.add(mine+at, peer+at, hi-lo, div, pull)
				default:
					dr.copy(mine+at, peer+at, hi-lo, pull)
				}
				if err := dr.dev.RingSync(); err != nil {
					return err
				}
			}
			if R+1 < T {
				next <- R + 1
			}
		}
		return nil
	}
	return schedule{send: r.devSignals(base, T, next), recv: recv}
}

// deviceSmallPath is smallPath on the device: each rank puts its vector
// in slot rank of its scratch area; in round R (0..N-2) rank k copies slot
// k-R-1 from its left neighbour's scratch; then every rank sums the N
// slots in rank order in float64 (RingSum64). N-1 closing signals, as in
// deviceRingPath, keep the scratch of a rank unchanged until its right
// neighbour has read it.
func (r *Ring) deviceSmallPath(op *Op, dr *deviceRing) schedule {
	n, rank := r.cfg.World, r.cfg.Rank
	l := op.dev.n
	data := dr.regions[op.dev.region].Ptr + 4*uint64(op.dev.off)
	last := len(dr.regions) - 1
	mine, peer, pull := dr.regions[last].Ptr, dr.peer[last], dr.copyOnly[last]
	slot := func(k int) uint64 { return 4 * uint64(k) * uint64(l) }
	work := n - 1
	T := work + n - 1
	base := r.devHeader(op)
	next := make(chan int, T)
	recv := func(abort <-chan struct{}) error {
		dr.dev.RingCopy(mine+slot(rank), data, l)
		if err := dr.dev.RingSync(); err != nil {
			return err
		}
		next <- 0
		for R := 0; R < T; R++ {
			if err := r.devWait(base, R); err != nil {
				return err
			}
			if R < work {
				o := mod(rank-R-1, n)
				dr.copy(mine+slot(o), peer+slot(o), l, pull)
				if err := dr.dev.RingSync(); err != nil {
					return err
				}
			}
			if R+1 < T {
				next <- R + 1
			}
		}
		dr.dev.RingSum64(data, mine, l, n, op.red == Mean)
		return dr.dev.RingSync()
	}
	return schedule{send: r.devSignals(base, T, next), recv: recv}
}

// allocStage allocates the staging area when some region of the left
// neighbour is copy-only: reduce-scatter rounds pull a segment into it,
// at most a chunk (Config.ChunkBytes) at a time, and add it from there.
// All-gather rounds and the small path pull straight into their
// destination and need none.
func (dr *deviceRing) allocStage(cfg Config) error {
	seg := 0
	for i, c := range dr.copyOnly {
		if c {
			seg = max(seg, (dr.regions[i].Len+cfg.World-1)/cfg.World)
		}
	}
	if seg == 0 {
		return nil
	}
	n := min(seg, max(cfg.ChunkBytes/4, 1))
	p, err := dr.dev.AllocShared(4 * n)
	if err != nil {
		return err
	}
	dr.stage, dr.stageLen = p, n
	return nil
}

// add queues dst += src (then / div when div != 0) for n elements, src
// in the left neighbour's memory: one kernel reading it in place, or,
// when it is copy-only, per piece of the staging area a pull into the
// staging area and the same kernel reading that. The kernel computes
// each element alone, so the pieces give the same bits.
func (dr *deviceRing) add(dst, src uint64, n int, div float32, pull bool) {
	if !pull {
		dr.dev.RingAdd(dst, src, n, div)
		return
	}
	for o := 0; o < n; o += dr.stageLen {
		c := min(dr.stageLen, n-o)
		dr.dev.RingPull(dr.stage, src+4*uint64(o), c)
		dr.dev.RingAdd(dst+4*uint64(o), dr.stage, c, div)
	}
}

// copy queues dst = src for n elements, src in the left neighbour's
// memory (a pull when it is copy-only).
func (dr *deviceRing) copy(dst, src uint64, n int, pull bool) {
	if pull {
		dr.dev.RingPull(dst, src, n)
		return
	}
	dr.dev.RingCopy(dst, src, n)
}

package allreduce

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DeviceSpan is a vector of Len float32s in device memory.
type DeviceSpan struct {
	Ptr uint64
	Len int
}

// DeviceReducerConfig configures a DeviceReducer; the fields mean what
// ReducerConfig's do, and the same values give the same buckets.
type DeviceReducerConfig struct {
	BucketBytes      int
	FirstBucketBytes int
	Reduction        Reduction
	// Extra device vectors are averaged over the workers with the last
	// bucket, whatever Reduction is (as ReducerConfig.Extra).
	Extra []DeviceSpan
}

// DeviceReducer is Reducer for a gradient in device memory on a device
// ring: the same buckets, the same collectives on the same elements, so
// the same bits, with every byte moving device to device. It reduces
// after backward (Reduce), not during it. Gather buckets (the last one,
// which carries Extra, or non-contiguous ones) are copied through device
// staging buffers that it allocates and shares with the neighbours.
type DeviceReducer struct {
	ring    *Ring
	dev     Device
	grad    DeviceSpan
	params  []Span
	cfg     DeviceReducerConfig
	buckets []*bucket
	staging []uint64 // by bucket: its staging buffer (gather buckets), else 0
	region  []int    // by bucket: the ring region it reduces in
}

// NewDeviceReducer plans the buckets of grad (parameters params, in
// forward order, as the model lists them) and attaches the device ring
// (Ring.AttachDevice, a collective: every rank calls it at the same
// place). An error wrapping ErrNoDeviceRing, the same on every rank,
// means the device ring is off and the caller keeps the host path; the
// ring stays usable. It returns how this rank reaches its left
// neighbour's memory (Ring.AttachDevice). Bad
// arguments are refused in the collective (Ring.RefuseDevice), so that the
// other ranks do not wait for this one, and returned wrapped in the error.
func NewDeviceReducer(ctx context.Context, ring *Ring, dev Device, grad DeviceSpan, params []Span, cfg DeviceReducerConfig) (*DeviceReducer, DeviceLink, error) {
	if ring == nil {
		return nil, DeviceLink{}, fmt.Errorf("%w: nil ring", ErrConfig)
	}
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = DefaultBucketBytes
	}
	if cfg.FirstBucketBytes == 0 {
		cfg.FirstBucketBytes = DefaultFirstBucketBytes
	}
	refuse := func(bad error) (*DeviceReducer, DeviceLink, error) {
		return nil, DeviceLink{}, errors.Join(bad, ring.RefuseDevice(ctx, bad.Error()))
	}
	switch {
	case cfg.BucketBytes < 4 || cfg.FirstBucketBytes < 4:
		return refuse(fmt.Errorf("%w: bucket bytes %d, first bucket bytes %d", ErrConfig, cfg.BucketBytes, cfg.FirstBucketBytes))
	case dev == nil:
		return refuse(fmt.Errorf("%w: nil device", ErrConfig))
	case grad.Ptr == 0 || grad.Len <= 0:
		return refuse(fmt.Errorf("%w: device gradient (%#x, %d elements)", ErrConfig, grad.Ptr, grad.Len))
	}
	for i, s := range params {
		if s.Offset < 0 || s.Len < 0 || s.Offset+s.Len > grad.Len {
			return refuse(fmt.Errorf("%w: param %d span [%d, +%d) outside gradient of %d", ErrLength, i, s.Offset, s.Len, grad.Len))
		}
	}
	extras := 0
	for _, e := range cfg.Extra {
		extras += e.Len
	}
	buckets, _, err := planBuckets(params, grad.Len, cfg.BucketBytes, cfg.FirstBucketBytes, extras)
	if err != nil {
		return refuse(err)
	}
	d := &DeviceReducer{ring: ring, dev: dev, grad: grad, params: params, cfg: cfg, buckets: buckets,
		staging: make([]uint64, len(buckets)), region: make([]int, len(buckets))}
	regions := []DeviceRegion{{Ptr: grad.Ptr, Len: grad.Len}}
	for bi, b := range buckets {
		if !b.gather || b.size == 0 {
			continue
		}
		p, err := dev.AllocShared(4 * b.size)
		if err != nil {
			d.free()
			return nil, DeviceLink{}, ring.RefuseDevice(ctx, fmt.Sprintf("staging of bucket %d: %v", bi, err))
		}
		d.staging[bi], d.region[bi] = p, len(regions)
		regions = append(regions, DeviceRegion{Ptr: p, Len: b.size})
	}
	link, err := ring.AttachDevice(ctx, dev, regions)
	if err != nil {
		d.free()
		return nil, DeviceLink{}, err
	}
	return d, link, nil
}

func (d *DeviceReducer) free() {
	for i, p := range d.staging {
		if p != 0 {
			_ = d.dev.FreeShared(p)
			d.staging[i] = 0
		}
	}
}

// Close frees the staging buffers. The ring must be closed or idle.
func (d *DeviceReducer) Close() { d.free() }

// Buckets describes the planned buckets, in launch order (as Reducer's).
func (d *DeviceReducer) Buckets() []BucketInfo {
	out := make([]BucketInfo, len(d.buckets))
	for i, b := range d.buckets {
		n := b.hi - b.lo
		if b.gather {
			n = b.size
		}
		out[i] = BucketInfo{Params: append([]int(nil), b.params...), Elements: n, InPlace: !b.gather}
	}
	return out
}

// Reduce all-reduces every bucket of step: call it after backward, once
// every gradient and Extra vector is final or queued on the device (the
// ring waits for the queued work). It returns when the gradients and the
// averaged Extra vectors are in place (queued on the device). The Device
// is used by the ring meanwhile; the caller must not use it until Reduce
// returns. On error the ring is broken (see Ring).
func (d *DeviceReducer) Reduce(ctx context.Context, step uint64) (StepStats, error) {
	called := time.Now()
	var st StepStats
	// Every gather first: once the first collective runs, the ring's
	// goroutine uses the Device, and this one must not.
	for bi, b := range d.buckets {
		if b.gather {
			at := d.staging[bi]
			for _, p := range b.params {
				s := d.params[p]
				d.dev.RingCopy(at, d.grad.Ptr+4*uint64(s.Offset), s.Len)
				at += 4 * uint64(s.Len)
			}
			if bi == len(d.buckets)-1 {
				for _, e := range d.cfg.Extra {
					d.dev.RingCopy(at, e.Ptr, e.Len)
					at += 4 * uint64(e.Len)
				}
			}
		}
	}
	ops := make([]*Op, len(d.buckets))
	for bi, b := range d.buckets {
		region, off, n := 0, b.lo, b.hi-b.lo
		if b.gather {
			region, off, n = d.region[bi], 0, b.size
		}
		if n == 0 {
			continue
		}
		ops[bi] = d.ring.StartDevice(ctx, Tag{Step: step, Bucket: uint32(bi)}, region, off, n, d.cfg.Reduction)
	}
	var errs []error
	for bi, op := range ops {
		if op == nil {
			continue
		}
		if err := op.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("bucket %d of step %d: %w", bi, step, err))
			continue
		}
		start, end := op.Times()
		st.Buckets++
		st.Comm += end.Sub(start)
	}
	if len(errs) > 0 {
		return st, errors.Join(errs...)
	}
	world := float32(d.ring.cfg.World)
	for bi, b := range d.buckets {
		if !b.gather {
			st.Bytes += int64(4 * (b.hi - b.lo))
			continue
		}
		st.Bytes += int64(4 * b.size)
		at := d.staging[bi]
		for _, p := range b.params {
			s := d.params[p]
			d.dev.RingCopy(d.grad.Ptr+4*uint64(s.Offset), at, s.Len)
			at += 4 * uint64(s.Len)
		}
		if bi == len(d.buckets)-1 {
			for _, e := range d.cfg.Extra {
				if d.cfg.Reduction == Sum {
					d.dev.RingDiv(e.Ptr, at, e.Len, world)
				} else {
					d.dev.RingCopy(e.Ptr, at, e.Len)
				}
				at += 4 * uint64(e.Len)
			}
		}
	}
	st.Exposed = time.Since(called)
	return st, nil
}

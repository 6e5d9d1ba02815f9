package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// emuPlace puts an emulated backend on emulated GPU gpu, without peer
// access to the GPUs noPeer.
func emuPlace(b *Backend, gpu int, noPeer ...int) *emuDevice {
	d := b.dev.(*emuDevice)
	d.ipc.gpu, d.ipc.noPeer = gpu, map[int]bool{}
	for _, g := range noPeer {
		d.ipc.noPeer[g] = true
	}
	return d
}

// TestIPCOpenWithoutPeerAccess: a handle of another emulated GPU opens
// directly when the two are peers; without peer access (or when the lazy
// open fails for want of it) it opens in the owner's context, copy-only:
// a kernel given its address fails as on a GPU (an illegal address),
// RingPull copies it into local memory where the same kernel works. A
// GPU this process cannot see, or an owner that is not the handle's
// device, makes the open fail; an owner without a name is tried directly.
func TestIPCOpenWithoutPeerAccess(t *testing.T) {
	a := emuOrSkip(t)
	emuPlace(a, 0)
	vals := []float32{1.5, -2, 3.25, 1e-30, 7, 8, 9, 10}
	x := a.New(len(vals))
	a.FromHost(x, vals)
	h, off, err := a.IPCExport(ptr(x.View(2, 4)))
	if err != nil {
		t.Fatal(err)
	}
	owner := a.IPCIdentity()
	if owner != "EMU-GPU-0" {
		t.Fatalf("identity %q", owner)
	}
	open := func(setup func(d *emuDevice)) (*Backend, uint64, bool, error) {
		b := emuOrSkip(t)
		setup(emuPlace(b, 1))
		base, copyOnly, err := b.IPCOpen(h, owner)
		return b, base, copyOnly, err
	}
	for _, tc := range []struct {
		name     string
		setup    func(d *emuDevice)
		copyOnly bool
	}{
		{"peer", func(*emuDevice) {}, false},
		{"no peer access", func(d *emuDevice) { d.ipc.noPeer[0] = true }, true},
		{"lazy open fails", func(d *emuDevice) { d.ipc.lazyFails = map[int]bool{0: true} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, base, copyOnly, err := open(tc.setup)
			if err != nil || copyOnly != tc.copyOnly {
				t.Fatalf("open: copy-only %v (want %v), %v", copyOnly, tc.copyOnly, err)
			}
			dst, stage := b.New(4), b.New(4)
			b.Fill(dst, 1)
			b.RingPull(ptr(stage), base+off, 4)
			b.RingAdd(ptr(dst), ptr(stage), 4, 0)
			got := make([]float32, 4)
			b.ToHost(got, dst)
			if err := b.RingSync(); err != nil {
				t.Fatal(err)
			}
			for i, g := range got {
				if w := vals[2+i] + 1; g != w {
					t.Fatalf("pulled and added: element %d = %v, want %v", i, g, w)
				}
			}
			if b.dev.(*emuDevice).ipc.pulls == 0 == copyOnly {
				t.Fatalf("copy-only %v, but %d pulls of copy-only memory", copyOnly, b.dev.(*emuDevice).ipc.pulls)
			}
			// The kernel reading the neighbour's memory itself: fine with
			// peer access, an illegal address without.
			b.RingAdd(ptr(dst), base+off, 4, 0)
			if err := b.RingSync(); (err != nil) != copyOnly || (err != nil && Code(err) != 700) {
				t.Fatalf("kernel on the mapping: %v (copy-only %v)", err, copyOnly)
			}
			if !copyOnly {
				if err := b.IPCClose(base); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	t.Run("copy-only close", func(t *testing.T) {
		b, base, _, err := open(func(d *emuDevice) { d.ipc.noPeer[0] = true })
		if err != nil {
			t.Fatal(err)
		}
		if err := b.IPCClose(base); err != nil || len(b.dev.(*emuDevice).ipc.opened) != 0 {
			t.Fatalf("close: %v, %d left open", err, len(b.dev.(*emuDevice).ipc.opened))
		}
	})
	t.Run("owner not visible", func(t *testing.T) {
		_, _, _, err := open(func(d *emuDevice) { d.ipc.noPeer[0], d.ipc.hidden = true, map[int]bool{0: true} })
		if err == nil || !strings.Contains(err.Error(), "not visible") {
			t.Fatalf("open of a hidden GPU's handle: %v", err)
		}
	})
	t.Run("unnamed owner on the same GPU", func(t *testing.T) {
		b := emuOrSkip(t)
		emuPlace(b, 0)
		if _, copyOnly, err := b.IPCOpen(h, ""); err != nil || copyOnly {
			t.Fatalf("open with no owner name: copy-only %v, %v (want a direct open, as before owners were named)", copyOnly, err)
		}
	})
	t.Run("owner is not the handle's device", func(t *testing.T) {
		b := emuOrSkip(t)
		emuPlace(b, 1, 0, 2)
		if _, _, err := b.IPCOpen(h, "EMU-GPU-2"); err == nil {
			t.Fatal("a handle of EMU-GPU-0 opened in EMU-GPU-2's context")
		}
	})
}

// TestDeviceRingCopiesThroughDevice runs pkg/allreduce's device ring over
// emulated GPUs (one Backend per rank) in several peer topologies: every
// rank without peer access to its left neighbour's GPU, one such pair in
// a ring of peers, a lazy open that fails although the GPUs report peer
// access, and one GPU for all. Each rank's link must say how it reaches
// its neighbour; every all-reduce (small and bandwidth paths, Sum and
// Mean, on a range inside the region) must give the host ring's bits on
// every rank; the copy-only ranks must really have pulled, the others not.
func TestDeviceRingCopiesThroughDevice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int
		place    func(r int, b *Backend)
		copyOnly []bool
	}{
		{"n=2/no peer", 2, func(r int, b *Backend) { emuPlace(b, r, 1-r) }, []bool{true, true}},
		{"n=3/no peer", 3, func(r int, b *Backend) { emuPlace(b, r, (r+1)%3, (r+2)%3) }, []bool{true, true, true}},
		{"n=3/mixed", 3, func(r int, b *Backend) {
			if r == 1 {
				emuPlace(b, r, 0)
			} else {
				emuPlace(b, r)
			}
		}, []bool{false, true, false}},
		{"n=3/lazy open fails", 3, func(r int, b *Backend) {
			d := emuPlace(b, r)
			if r == 2 {
				d.ipc.lazyFails = map[int]bool{1: true}
			}
		}, []bool{false, false, true}},
		{"n=2/one GPU", 2, func(r int, b *Backend) { emuPlace(b, 0) }, []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			cfg := allreduce.DefaultConfig("job", 1, 0, n)
			cfg.ChunkBytes = 4 << 10 // several staging pieces per segment; small path up to 1024 elements
			host, rings := openEmuRings(t, n, cfg), openEmuRings(t, n, cfg)
			backends := make([]*Backend, n)
			for r := range backends {
				backends[r] = emuOrSkip(t)
				tc.place(r, backends[r])
			}
			const pad, maxL = 5, 30011
			bufs := make([]regionBuf, n)
			for r, b := range backends {
				bufs[r] = regionBuf{b: b, t: b.New(maxL + 2*pad)}
				b.Fill(bufs[r].t, 0)
			}
			links := make([]allreduce.DeviceLink, n)
			errs := eachRankErr(n, func(r int) (err error) {
				links[r], err = rings[r].AttachDevice(context.Background(), backends[r],
					[]allreduce.DeviceRegion{{Ptr: ptr(bufs[r].t), Len: maxL + 2*pad}})
				return err
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("attach rank %d: %v", r, err)
				}
				left := emuGPUName(backends[(r+n-1)%n].dev.(*emuDevice).ipc.gpu)
				here := backends[r].IPCIdentity()
				want := "emu-ipc, peer access"
				if tc.copyOnly[r] {
					want = fmt.Sprintf("emu-ipc, copies through the device: no peer access between %s and %s", here, left)
				}
				if links[r].CopyOnly != tc.copyOnly[r] || !strings.HasPrefix(links[r].String(), want) {
					t.Fatalf("rank %d: link %q, want copy-only %v (%q)", r, links[r], tc.copyOnly[r], want)
				}
			}
			rng := rand.New(rand.NewPCG(3, uint64(n)))
			step := uint64(0)
			for _, l := range []int{1, 5, 1000, 2049, maxL} {
				for _, red := range []allreduce.Reduction{allreduce.Sum, allreduce.Mean} {
					step++
					in := make([][]float32, n)
					want := make([][]float32, n)
					for r := range in {
						in[r] = ringValues(rng, l)
						want[r] = append([]float32(nil), in[r]...)
					}
					for r, err := range eachRankErr(n, func(r int) error {
						return host[r].AllReduce(context.Background(), allreduce.Tag{Step: step}, want[r], red)
					}) {
						if err != nil {
							t.Fatalf("host rank %d: %v", r, err)
						}
					}
					for r, b := range backends {
						b.FromHost(bufs[r].t.View(pad, l), in[r])
					}
					for r, err := range eachRankErr(n, func(r int) error {
						return rings[r].AllReduceDevice(context.Background(), allreduce.Tag{Step: step}, 0, pad, l, red)
					}) {
						if err != nil {
							t.Fatalf("l=%d red=%d rank %d: %v", l, red, r, err)
						}
					}
					for r, b := range backends {
						got := make([]float32, l+2*pad)
						b.ToHost(got, bufs[r].t.View(0, l+2*pad))
						if err := b.Err(); err != nil {
							t.Fatal(err)
						}
						for e := 0; e < l; e++ {
							if math.Float32bits(got[pad+e]) != math.Float32bits(want[r][e]) {
								t.Fatalf("l=%d red=%d rank %d element %d: device %v, host %v", l, red, r, e, got[pad+e], want[r][e])
							}
						}
						if got[pad-1] != 0 || got[pad+l] != 0 {
							t.Fatalf("l=%d rank %d: wrote outside the range", l, r)
						}
					}
				}
			}
			for r, b := range backends {
				if p := b.dev.(*emuDevice).ipc.pulls; (p > 0) != tc.copyOnly[r] {
					t.Fatalf("rank %d: %d pulls of copy-only memory (copy-only %v)", r, p, tc.copyOnly[r])
				}
				if err := rings[r].Close(); err != nil {
					t.Fatalf("close rank %d: %v", r, err)
				}
				if o := b.dev.(*emuDevice).ipc.opened; len(o) != 0 {
					t.Fatalf("rank %d: %d mappings still open after Close", r, len(o))
				}
			}
		})
	}
}

// TestDeviceRingCopyOnlyOpenFails: when a rank can reach its neighbour's
// GPU neither as a peer nor through that GPU's context (not visible in
// its process), every rank agrees on the host path at once, the reason
// in the rank's error; nothing stays open and the ring still works.
func TestDeviceRingCopyOnlyOpenFails(t *testing.T) {
	const n = 3
	cfg := allreduce.DefaultConfig("job", 1, 0, n)
	rings := openEmuRings(t, n, cfg)
	backends := make([]*Backend, n)
	for r := range backends {
		backends[r] = emuOrSkip(t)
		d := emuPlace(backends[r], r)
		if r == 1 {
			d.ipc.noPeer[0], d.ipc.hidden = true, map[int]bool{0: true}
		}
	}
	errs := eachRankErr(n, func(r int) error {
		x := backends[r].New(5000)
		_, err := rings[r].AttachDevice(context.Background(), backends[r], []allreduce.DeviceRegion{{Ptr: ptr(x), Len: 5000}})
		return err
	})
	for r, err := range errs {
		if !errors.Is(err, allreduce.ErrNoDeviceRing) {
			t.Fatalf("rank %d: %v, want ErrNoDeviceRing", r, err)
		}
	}
	if !strings.Contains(errs[1].Error(), "not visible") {
		t.Fatalf("rank 1's reason: %v", errs[1])
	}
	for r, b := range backends {
		if o := b.dev.(*emuDevice).ipc.opened; len(o) != 0 {
			t.Fatalf("rank %d keeps %d mappings open", r, len(o))
		}
	}
	v := [][]float32{{1}, {2}, {3}}
	for r, err := range eachRankErr(n, func(r int) error {
		return rings[r].AllReduce(context.Background(), allreduce.Tag{Step: 1}, v[r], allreduce.Sum)
	}) {
		if err != nil || v[r][0] != 6 {
			t.Fatalf("host collective after the refusal, rank %d: %v %v", r, v[r], err)
		}
	}
}

// regionBuf is a rank's device region.
type regionBuf struct {
	b *Backend
	t *nn.Tensor
}

// openEmuRings opens n rings over an in-memory network.
func openEmuRings(t *testing.T, n int, cfg allreduce.Config) []*allreduce.Ring {
	t.Helper()
	net := allreduce.NewInmemNetwork()
	peers := make([]string, n)
	for r := range peers {
		peers[r] = fmt.Sprintf("r%d", r)
	}
	rings := make([]*allreduce.Ring, n)
	for r, err := range eachRankErr(n, func(r int) (err error) {
		c := cfg
		c.Rank = r
		rings[r], err = allreduce.Open(context.Background(), net.Transport(peers[r]), c, peers)
		return err
	}) {
		if err != nil {
			t.Fatalf("open rank %d: %v", r, err)
		}
	}
	t.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
	})
	return rings
}

// eachRankErr runs fn(rank) on every rank concurrently.
func eachRankErr(n int, fn func(r int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			errs[r] = fn(r)
		}(r)
	}
	wg.Wait()
	return errs
}

package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// eachRank runs fn(rank) on every rank concurrently and returns the errors.
func eachRank(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = fn(i)
		}(i)
	}
	wg.Wait()
	return errs
}

// devRank is one rank's device memory in a device-ring test: a region of
// pad + l + pad elements (the collective runs on the middle l).
type devRank struct {
	dev *MemDevice
	mem []float32
	ptr uint64
}

func attachAll(t *testing.T, rings []*Ring, devs []*MemDevice, lens []int) ([]devRank, []DeviceLink, []error) {
	t.Helper()
	ranks := make([]devRank, len(rings))
	for i := range rings {
		mem, p := devs[i].Alloc(lens[i])
		ranks[i] = devRank{dev: devs[i], mem: mem, ptr: p}
	}
	ctx := context.Background()
	links := make([]DeviceLink, len(rings))
	errs := eachRank(len(rings), func(i int) error {
		var err error
		links[i], err = rings[i].AttachDevice(ctx, devs[i], []DeviceRegion{{Ptr: ranks[i].ptr, Len: lens[i]}})
		return err
	})
	return ranks, links, errs
}

func memDevs(n int) []*MemDevice {
	d := make([]*MemDevice, n)
	for i := range d {
		d[i] = &MemDevice{}
	}
	return d
}

// Peer topologies of a device-ring test: which ranks reach their left
// neighbour's memory by copies only (as GPUs without peer access).
var topologies = []struct {
	name     string
	copyOnly func(rank int) bool
}{
	{"peer", func(int) bool { return false }},
	{"no peer", func(int) bool { return true }},
	{"mixed", func(r int) bool { return r == 1 }}, // one pair without peer access
}

// topoDevs returns n MemDevices, each its own device ("dev-i"), rank i
// without peer access to its left neighbour's device when copyOnly(i).
func topoDevs(n int, copyOnly func(rank int) bool) []*MemDevice {
	d := make([]*MemDevice, n)
	for i := range d {
		left, no := fmt.Sprintf("dev-%d", (i+n-1)%n), copyOnly(i)
		d[i] = &MemDevice{Identity: fmt.Sprintf("dev-%d", i), CanAccess: func(owner string) bool { return !no || owner != left }}
	}
	return d
}

func sameLens(n, l int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = l
	}
	return s
}

// TestDeviceRingBitIdentical: the device ring's all-reduce gives exactly
// the host ring's bits, for 2, 3 and 4 ranks, sizes on the small path and
// on the bandwidth path (uneven segments, fewer elements than ranks), Sum
// and Mean, on a range that starts inside the region; and the device
// ring's mappings are released when the ring closes.
//
// Each runs with every rank reaching its left neighbour's memory directly
// (peer access), with every rank reaching it by copies only (GPUs without
// peer access: segments pulled through a staging area of one chunk,
// several per segment here), and with one such pair in the ring; each
// rank's DeviceLink must say which.
func TestDeviceRingBitIdentical(t *testing.T) {
	for _, f := range []fabric{inmemFabric, grpcFabric(true, false)} {
		for _, n := range []int{2, 3, 4} {
			for _, topo := range topologies {
				t.Run(fmt.Sprintf("%s/n=%d/%s", f.name, n, topo.name), func(t *testing.T) {
					cfg := DefaultConfig("job", 1, 0, n)
					cfg.ChunkBytes = 4 << 10 // several chunks per host segment
					host := openRings(t, inmemFabric, n, cfg)
					rings := openRings(t, f, n, cfg)
					devs := topoDevs(n, topo.copyOnly)
					const pad = 13
					sizes := []int{1, 3, 5, 1000, 2048, 2049, 3*4096 + 7, 100003}
					total := 0
					for _, l := range sizes {
						total = max(total, l)
					}
					ranks, links, errs := attachAll(t, rings, devs, sameLens(n, total+2*pad))
					for i, err := range errs {
						if err != nil {
							t.Fatalf("attach rank %d: %v", i, err)
						}
						want := fmt.Sprintf("mem, peer access; this device dev-%d, left neighbour's dev-%d", i, (i+n-1)%n)
						if topo.copyOnly(i) {
							want = fmt.Sprintf("mem, copies through the device: no peer access between dev-%d and dev-%d", i, (i+n-1)%n)
						}
						if links[i].CopyOnly != topo.copyOnly(i) || links[i].String() != want {
							t.Fatalf("rank %d: link %+v (%q), want %q", i, links[i], links[i], want)
						}
					}
					for i := range rings {
						if !rings[i].DeviceAttached() {
							t.Fatalf("rank %d: not attached", i)
						}
					}
					step := uint64(0)
					for _, l := range sizes {
						for _, red := range []Reduction{Sum, Mean} {
							step++
							in := inputs(int64(l)*7+int64(red), n, l)
							want := clone(in)
							for i, err := range allReduceAll(host, Tag{Step: step}, want, red) {
								if err != nil {
									t.Fatalf("host rank %d: %v", i, err)
								}
							}
							for i := range ranks {
								copy(ranks[i].mem[pad:], in[i])
							}
							errs := eachRank(n, func(i int) error {
								return rings[i].AllReduceDevice(context.Background(), Tag{Step: step}, 0, pad, l, red)
							})
							for i, err := range errs {
								if err != nil {
									t.Fatalf("l=%d red=%d rank %d: %v", l, red, i, err)
								}
							}
							for i := range ranks {
								got := ranks[i].mem[pad : pad+l]
								for e := range got {
									if math.Float32bits(got[e]) != math.Float32bits(want[i][e]) {
										t.Fatalf("l=%d red=%d rank %d element %d: device %v, host %v", l, red, i, e, got[e], want[i][e])
									}
								}
								if ranks[i].mem[pad-1] != 0 || ranks[i].mem[pad+l] != 0 {
									t.Fatalf("l=%d rank %d: wrote outside the range", l, i)
								}
							}
						}
					}
					if n > 2 { // the sum order is the documented one, not just the host's
						l := 100003
						in := inputs(99, n, l)
						for i := range ranks {
							copy(ranks[i].mem[pad:], in[i])
						}
						eachRank(n, func(i int) error {
							return rings[i].AllReduceDevice(context.Background(), Tag{Step: 1000}, 0, pad, l, Sum)
						})
						for _, e := range []int{0, l / 3, l/2 + 1, l - 1} {
							if w := ringOrderSum(in, e); ranks[1].mem[pad+e] != w {
								t.Fatalf("element %d = %v, want the ring-order sum %v", e, ranks[1].mem[pad+e], w)
							}
						}
					}
					for i := range rings {
						if err := rings[i].Close(); err != nil {
							t.Fatalf("close rank %d: %v", i, err)
						}
						if o := devs[i].Opened(); o != 0 {
							t.Fatalf("rank %d: %d handles still open after Close", i, o)
						}
					}
				})
			}
		}
	}
}

// TestDeviceRingRefusals: every rank gets ErrNoDeviceRing when one rank
// cannot take part (a device without IPC, another kind of memory, other
// region lengths, compression, a link that is not same-host shared memory), StartDevice then fails without breaking
// the ring, and the host path still works on the same ring; with devices
// that reach each other by peer access and with devices that would copy
// through the device alike.
func TestDeviceRingRefusals(t *testing.T) {
	cases := []struct {
		name  string
		n     int
		setup func(devs []*MemDevice, lens []int, cfg *Config)
		why   string
		f     fabric
	}{
		{"no IPC", 3, func(d []*MemDevice, _ []int, _ *Config) { d[1].NoIPC = true }, "cannot share memory", inmemFabric},
		{"other kind", 2, func(d []*MemDevice, _ []int, _ *Config) { d[0].Kind = "other" }, "memory is", inmemFabric},
		{"other lengths", 4, func(_ []*MemDevice, l []int, _ *Config) { l[2]++ }, "elements", inmemFabric},
		{"compression", 2, func(_ []*MemDevice, _ []int, c *Config) { c.Compression = CompressBF16 }, "compression", inmemFabric},
		// gRPC without shared memory: as neighbours on two hosts.
		{"no shared-memory link", 2, func([]*MemDevice, []int, *Config) {}, "another host", grpcFabric(false, false)},
	}
	for _, tc := range cases {
		for _, topo := range topologies[:2] {
			t.Run(tc.name+"/"+topo.name, func(t *testing.T) {
				cfg := DefaultConfig("job", 1, 0, tc.n)
				devs, lens := topoDevs(tc.n, topo.copyOnly), sameLens(tc.n, 5000)
				tc.setup(devs, lens, &cfg)
				rings := openRings(t, tc.f, tc.n, cfg)
				ranks, _, errs := attachAll(t, rings, devs, lens)
				for i, err := range errs {
					if !errors.Is(err, ErrNoDeviceRing) {
						t.Fatalf("rank %d: %v, want ErrNoDeviceRing", i, err)
					}
					if rings[i].DeviceAttached() {
						t.Fatalf("rank %d attached", i)
					}
				}
				found := false
				for _, err := range errs {
					found = found || containsStr(err.Error(), tc.why)
				}
				if !found {
					t.Fatalf("no rank says %q: %v", tc.why, errs)
				}
				if err := rings[0].AllReduceDevice(context.Background(), Tag{}, 0, 0, 10, Sum); !errors.Is(err, ErrConfig) {
					t.Fatalf("device collective without a device ring: %v", err)
				}
				vecs := inputs(5, tc.n, 300)
				for i, err := range allReduceAll(rings, Tag{Step: 1}, vecs, Sum) {
					if err != nil {
						t.Fatalf("host collective after the refusal, rank %d: %v", i, err)
					}
				}
				for i := range ranks {
					if o := devs[i].Opened(); o != 0 {
						t.Fatalf("rank %d keeps %d handles open", i, o)
					}
				}
			})
		}
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

// TestDeviceReducerMatchesReducer: DeviceReducer on the device ring leaves
// the same bits in the gradient and the Extra vectors as Reducer on the
// host ring, with several buckets (a small first one on the small path,
// a frozen parameter, a gather bucket carrying two Extra vectors), for
// 2, 3 and 4 ranks and both reductions, with peer access and with copies
// through the device (no peer access anywhere, and one such pair); it
// plans the same buckets.
func TestDeviceReducerMatchesReducer(t *testing.T) {
	spans, total := contiguousSpans(700, 30000, 0, 9000, 20, 5000, 1200)
	for _, n := range []int{2, 3, 4} {
		for _, red := range []Reduction{Sum, Mean} {
			for _, topo := range topologies {
				t.Run(fmt.Sprintf("n=%d/red=%d/%s", n, red, topo.name), func(t *testing.T) {
					cfg := DefaultConfig("job", 1, 0, n)
					cfg.ChunkBytes = 16 << 10
					host := openRings(t, inmemFabric, n, cfg)
					rings := openRings(t, inmemFabric, n, cfg)
					bb, fb := 4*12000, 4*6000
					grads := inputs(int64(n*10+int(red)), n, total)
					extraA, extraB := inputs(77, n, 3), inputs(78, n, 50)
					// Host: Reducer.
					hostGrads, hostA, hostB := clone(grads), clone(extraA), clone(extraB)
					errs := eachRank(n, func(i int) error {
						r, err := NewReducer(host[i], hostGrads[i], spans, ReducerConfig{BucketBytes: bb, FirstBucketBytes: fb,
							Reduction: red, Extra: [][]float32{hostA[i], hostB[i]}})
						if err != nil {
							return err
						}
						if err := r.Begin(context.Background(), 3); err != nil {
							return err
						}
						for p := len(spans) - 1; p >= 0; p-- {
							if err := r.MarkReady(p); err != nil {
								return err
							}
						}
						_, err = r.Wait(context.Background())
						return err
					})
					for i, err := range errs {
						if err != nil {
							t.Fatalf("host rank %d: %v", i, err)
						}
					}
					// Device: DeviceReducer on MemDevices.
					devs := topoDevs(n, topo.copyOnly)
					g, a, b := make([][]float32, n), make([][]float32, n), make([][]float32, n)
					reds := make([]*DeviceReducer, n)
					errs = eachRank(n, func(i int) error {
						var gp, ap, bp uint64
						g[i], gp = devs[i].Alloc(total)
						a[i], ap = devs[i].Alloc(3)
						b[i], bp = devs[i].Alloc(50)
						copy(g[i], grads[i])
						copy(a[i], extraA[i])
						copy(b[i], extraB[i])
						var err error
						var link DeviceLink
						reds[i], link, err = NewDeviceReducer(context.Background(), rings[i], devs[i], DeviceSpan{gp, total}, spans,
							DeviceReducerConfig{BucketBytes: bb, FirstBucketBytes: fb, Reduction: red,
								Extra: []DeviceSpan{{ap, 3}, {bp, 50}}})
						if err != nil {
							return err
						}
						if link.CopyOnly != topo.copyOnly(i) {
							return fmt.Errorf("link %v, want copy-only %v", link, topo.copyOnly(i))
						}
						_, err = reds[i].Reduce(context.Background(), 3)
						return err
					})
					for i, err := range errs {
						if err != nil {
							t.Fatalf("device rank %d: %v", i, err)
						}
					}
					hb, db := fmt.Sprint(must(NewReducer(host[0], hostGrads[0], spans, ReducerConfig{BucketBytes: bb, FirstBucketBytes: fb,
						Extra: [][]float32{hostA[0], hostB[0]}})).Buckets()), fmt.Sprint(reds[0].Buckets())
					if hb != db || len(reds[0].Buckets()) < 3 {
						t.Fatalf("buckets: host %s, device %s (want the same, at least 3)", hb, db)
					}
					for i := 0; i < n; i++ {
						for _, c := range []struct {
							what      string
							got, want []float32
						}{{"gradient", g[i], hostGrads[i]}, {"extra A", a[i], hostA[i]}, {"extra B", b[i], hostB[i]}} {
							for e := range c.want {
								if math.Float32bits(c.got[e]) != math.Float32bits(c.want[e]) {
									t.Fatalf("rank %d %s[%d]: device %v, host %v", i, c.what, e, c.got[e], c.want[e])
								}
							}
						}
					}
					for i := range reds {
						if devs[i].Overlapped() {
							t.Fatalf("rank %d: the device was used from two goroutines at once", i)
						}
						reds[i].Close()
					}
				})
			}
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestDeviceRingOneRankRefuses: a rank that will not use the device ring
// (RefuseDevice: a CPU worker, the switch off) or passes a bad region
// takes part in the collective, so every rank agrees on ErrNoDeviceRing at
// once instead of waiting for its hello until the timeout; the ring works.
func TestDeviceRingOneRankRefuses(t *testing.T) {
	for _, how := range []string{"refuse", "bad region"} {
		t.Run(how, func(t *testing.T) {
			const n = 3
			cfg := DefaultConfig("job", 1, 0, n)
			cfg.Timeout = time.Minute
			rings := openRings(t, inmemFabric, n, cfg)
			devs := memDevs(n)
			start := time.Now()
			errs := eachRank(n, func(i int) error {
				_, p := devs[i].Alloc(100)
				switch {
				case i == 1 && how == "refuse":
					return rings[i].RefuseDevice(context.Background(), "switched off here")
				case i == 1:
					p = 0
				}
				_, err := rings[i].AttachDevice(context.Background(), devs[i], []DeviceRegion{{Ptr: p, Len: 100}})
				return err
			})
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the refusal took %v", d)
			}
			for i, err := range errs {
				if !errors.Is(err, ErrNoDeviceRing) {
					t.Fatalf("rank %d: %v, want ErrNoDeviceRing", i, err)
				}
			}
			if want := map[string]string{"refuse": "switched off here", "bad region": "invalid device region"}[how]; !containsStr(errs[1].Error(), want) || !containsStr(errs[2].Error(), "left neighbour: "+want) {
				t.Fatalf("reasons: %v", errs)
			}
			for i, err := range allReduceAll(rings, Tag{Step: 1}, inputs(3, n, 50), Sum) {
				if err != nil {
					t.Fatalf("host collective after the refusal, rank %d: %v", i, err)
				}
			}
		})
	}
}

// TestMemDeviceCopyOnly: the twin fails as a GPU without peer access
// does: its kernels refuse memory opened copy-only (RingSync returns the
// error, the operation leaves the memory as it was), RingPull reads it,
// and the mapping closes.
func TestMemDeviceCopyOnly(t *testing.T) {
	owner := &MemDevice{Identity: "dev-0"}
	src, p := owner.Alloc(4)
	copy(src, []float32{1, 2, 3, 4})
	h, off, err := owner.IPCExport(p + 4)
	if err != nil || off != 4 {
		t.Fatalf("export: offset %d, %v", off, err)
	}
	for _, kernel := range []string{"add", "copy", "div", "sum64"} {
		d := &MemDevice{Identity: "dev-1", CanAccess: func(o string) bool { return o != "dev-0" }}
		base, copyOnly, err := d.IPCOpen(h, "dev-0")
		if err != nil || !copyOnly {
			t.Fatalf("open: copy-only %v, %v", copyOnly, err)
		}
		dst, q := d.Alloc(3)
		switch kernel {
		case "add":
			d.RingAdd(q, base+off, 3, 0)
		case "copy":
			d.RingCopy(q, base+off, 3)
		case "div":
			d.RingDiv(q, base+off, 3, 2)
		case "sum64":
			d.RingSum64(q, base+off, 1, 3, false)
		}
		if err := d.RingSync(); !errors.Is(err, errMemNoPeer) || dst[0] != 0 {
			t.Fatalf("%s on copy-only memory: %v, dst %v", kernel, err, dst)
		}
		d2 := &MemDevice{Identity: "dev-1", CanAccess: d.CanAccess}
		base, _, _ = d2.IPCOpen(h, "dev-0")
		dst, q = d2.Alloc(3)
		d2.RingPull(q, base+off, 3)
		if err := d2.RingSync(); err != nil || dst[0] != 2 || dst[2] != 4 {
			t.Fatalf("pull: %v, dst %v", err, dst)
		}
		if err := d2.IPCClose(base); err != nil || d2.Opened() != 0 {
			t.Fatalf("close: %v, %d open", err, d2.Opened())
		}
	}
}

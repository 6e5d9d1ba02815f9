package gpu

import (
	"errors"
	"testing"
)

// fakeAlloc hands out increasing addresses and can run out of memory.
type fakeAlloc struct {
	next, limit, used uint64
	sizes             map[uint64]uint64
	allocs, frees     int
}

var errFakeOOM = errors.New("fake: out of memory")

func newFakeAlloc(limit uint64) *fakeAlloc {
	return &fakeAlloc{next: 1 << 20, limit: limit, sizes: map[uint64]uint64{}}
}

func (f *fakeAlloc) alloc(n uint64) (uint64, error) {
	if f.used+n > f.limit {
		return 0, errFakeOOM
	}
	p := f.next
	f.next += (n + 255) / 256 * 256
	f.sizes[p] = n
	f.used += n
	f.allocs++
	return p, nil
}

func (f *fakeAlloc) free(p uint64) error {
	n, ok := f.sizes[p]
	if !ok {
		return errors.New("fake: bad free")
	}
	delete(f.sizes, p)
	f.used -= n
	f.frees++
	return nil
}

func TestSizeClass(t *testing.T) {
	prev := uint64(0)
	for n := uint64(1); n < 1<<24; n = n*3/2 + 1 {
		c := sizeClass(n)
		waste := n / 4
		if n <= 4096 {
			waste = n
		}
		if c < n || c > n+waste+minBlock || c%minBlock != 0 {
			t.Fatalf("sizeClass(%d) = %d", n, c)
		}
		if c < prev {
			t.Fatalf("sizeClass not monotonic at %d", n)
		}
		prev = c
		if sizeClass(c) != c {
			t.Fatalf("sizeClass(%d) = %d is not a fixed point", c, sizeClass(c))
		}
	}
}

func TestPoolReuseAndRelease(t *testing.T) {
	f := newFakeAlloc(1 << 30)
	p := newPool(f)
	a1, _ := p.get(1000)
	a2, _ := p.get(5000)
	if err := p.put(a1); err != nil {
		t.Fatal(err)
	}
	b1, _ := p.get(900) // same class as 1000 (1024)
	if b1 != a1 || f.allocs != 2 || p.stats.Hits != 1 {
		t.Fatalf("no reuse: b1=%#x a1=%#x allocs=%d hits=%d", b1, a1, f.allocs, p.stats.Hits)
	}
	if err := p.put(b1); err != nil {
		t.Fatal(err)
	}
	if err := p.put(b1); !errors.Is(err, ErrBadInput) {
		t.Fatalf("double free: err = %v", err)
	}
	if err := p.put(a2 + 256); !errors.Is(err, ErrBadInput) {
		t.Fatalf("free of a view: err = %v", err)
	}
	if p.stats.CachedBytes != 1024 || p.stats.LiveBytes != sizeClass(5000) {
		t.Fatalf("stats %+v", p.stats)
	}
	if err := p.releaseAll(); err != nil {
		t.Fatal(err)
	}
	if len(f.sizes) != 0 {
		t.Fatalf("%d blocks leaked", len(f.sizes))
	}
}

func TestPoolOOMReleasesCacheAndRetries(t *testing.T) {
	f := newFakeAlloc(10 << 20)
	p := newPool(f)
	x, err := p.get(6 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.put(x); err != nil { // cached, still held from the driver
		t.Fatal(err)
	}
	if _, err := p.get(7 << 20); err != nil { // needs the cached block released
		t.Fatalf("retry after release failed: %v", err)
	}
	if f.frees != 1 {
		t.Fatalf("frees = %d, want 1", f.frees)
	}
	if _, err := p.get(8 << 20); !errors.Is(err, errFakeOOM) {
		t.Fatalf("real OOM: err = %v", err)
	}
}

// DeviceMemory follows the pool: a new tensor is live, a freed one cached
// for reuse, the peak covers both, and a GPU knows its total.
func TestDeviceMemory(t *testing.T) {
	b := freshDevice(t, PrecisionFP32)
	if b.DeviceName() == "" {
		t.Error("no device name")
	}
	m0 := b.DeviceMemory()
	x := b.New(1 << 20)
	m1 := b.DeviceMemory()
	if m1.Live < m0.Live+4<<20 {
		t.Errorf("live %d after a 4 MiB tensor, %d before", m1.Live, m0.Live)
	}
	b.Free(x)
	m2 := b.DeviceMemory()
	if m2.Live >= m1.Live || m2.Cached < m1.Cached+4<<20 {
		t.Errorf("after the free: live %d cached %d, before it live %d cached %d", m2.Live, m2.Cached, m1.Live, m1.Cached)
	}
	if m2.Peak < m1.Live+m1.Cached {
		t.Errorf("peak %d below live+cached %d", m2.Peak, m1.Live+m1.Cached)
	}
	if b.info.Arch != "host" && m2.Total == 0 {
		t.Error("a GPU without its total memory")
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}

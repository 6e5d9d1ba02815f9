package allreduce

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// grpcFabric starts n GRPCTransports on loopback; shm selects the
// same-host shared-memory path (all ranks then share a host id), otherwise
// frames take the TCP frame connections (tcpFrames) or the gRPC stream.
func grpcFabric(shm, tcpFrames bool) fabric {
	name := "grpc-stream"
	if shm {
		name = "grpc-shm"
	} else if tcpFrames {
		name = "grpc-tcp"
	}
	return fabric{name, func(t *testing.T, n int) ([]Transport, []string) {
		ts := make([]Transport, n)
		peers := make([]string, n)
		shmDir := t.TempDir()
		for i := range ts {
			cfg := GRPCConfig{HandshakeTimeout: 5 * time.Second, MaxChunkBytes: 1 << 20, Window: 1 << 20, ShmSlots: orderBlock + 1,
				DisableTCPFrames: !tcpFrames}
			if shm {
				cfg.HostID = "test-host"
				cfg.ShmDir = shmDir
			} else {
				cfg.HostID = fmt.Sprintf("host-%d", i) // different hosts: no shared memory
			}
			g, err := NewGRPCTransport(cfg)
			if err != nil {
				t.Fatal(err)
			}
			addr, err := g.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = g.Close() })
			ts[i], peers[i] = g, addr.String()
		}
		return ts, peers
	}}
}

func TestGRPCStream(t *testing.T) { runSuite(t, grpcFabric(false, false)) }
func TestGRPCTCP(t *testing.T)    { runSuite(t, grpcFabric(false, true)) }
func TestGRPCShm(t *testing.T)    { runSuite(t, grpcFabric(true, false)) }

// TestSharedMemoryChosen: same host id => the links use shared memory and
// the segment files are already unlinked; different ids or the switch off
// => plain gRPC.
func TestSharedMemoryChosen(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	for _, c := range []struct {
		name    string
		hosts   [2]string
		disable bool
		want    bool
	}{
		{"same-host", [2]string{"h", "h"}, false, true},
		{"other-host", [2]string{"h", "g"}, false, false},
		{"switched-off", [2]string{"h", "h"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			links := openLinkPair(t, func(i int) GRPCConfig {
				return GRPCConfig{HostID: c.hosts[i], ShmDir: dir, DisableSharedMemory: c.disable}
			})
			for i, l := range links {
				if got := l.SharedMemory(); got != c.want {
					t.Fatalf("rank %d: shared memory %v, want %v", i, got, c.want)
				}
				// Shared memory both ways: the ring takes the one-pass path.
				if got := l.ForwardInRecv(); got != c.want {
					t.Fatalf("rank %d: forward in recv %v, want %v", i, got, c.want)
				}
			}
			left, _ := filepath.Glob(filepath.Join(dir, "*"))
			for _, f := range left {
				if strings.HasPrefix(filepath.Base(f), shmPrefix) {
					t.Fatalf("segment file %s left behind after the handshake", f)
				}
			}
			// And a real collective over them.
			rings := make([]*Ring, 2)
			for i := range rings {
				var err error
				if rings[i], err = NewRing(links[i], DefaultConfig("j", 1, i, 2)); err != nil {
					t.Fatal(err)
				}
				// The ring reports the kind of each of its links.
				want := LinkStream
				if c.want {
					want = LinkSharedMemory
				}
				if right, left := rings[i].Links(); right != want || left != want {
					t.Fatalf("rank %d: links right %q left %q, want %q both", i, right, left, want)
				}
			}
			in := inputs(3, 2, 300_000)
			out := clone(in)
			for i, err := range allReduceAll(rings, Tag{}, out, Sum) {
				if err != nil {
					t.Fatalf("rank %d: %v", i, err)
				}
			}
			for e := range out[0] {
				if want := ringOrderSum(in, e); out[0][e] != want || out[1][e] != want {
					t.Fatalf("elem %d: %v %v, want %v", e, out[0][e], out[1][e], want)
				}
			}
			for i, r := range rings { // two ranks: no census, each knows both links
				if got := r.order == orderLockstep; got != c.want {
					t.Fatalf("rank %d: lockstep order %v, want %v", i, got, c.want)
				}
			}
			for _, r := range rings {
				_ = r.Close()
			}
		})
	}
	_ = os.Getpid
}

// TestMixedRings: every rank of a ring must agree on the frame order.
// Hosts a,a,a,b: rank 1 has shared memory both ways, but the ring has TCP
// links, so the census picks round-major for every rank. All on one host,
// with rank 2 given too few slots to forward inside Recv: lockstep order,
// ranks 0, 1 and 3 on fusedPath and rank 2 on ringPath, seeing the same
// frames. Sums are the exact ring-order sums on every rank, also when
// segments have different chunk counts.
func TestMixedRings(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	const n = 4
	for _, c := range []struct {
		name     string
		hosts    []string
		slots    []int
		forward  []bool
		lockstep bool
	}{
		{"hosts-aaab", []string{"a", "a", "a", "b"}, []int{8, 8, 8, 8}, []bool{false, true, false, false}, false},
		{"one-host-few-slots", []string{"a", "a", "a", "a"}, []int{8, 8, 2, 8}, []bool{true, true, false, true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fabric{c.name, func(t *testing.T, n int) ([]Transport, []string) {
				ts := make([]Transport, n)
				peers := make([]string, n)
				dir := t.TempDir()
				for i := range ts {
					g, err := NewGRPCTransport(GRPCConfig{HandshakeTimeout: 5 * time.Second, MaxChunkBytes: 1 << 16,
						ShmSlots: c.slots[i], HostID: c.hosts[i], ShmDir: dir})
					if err != nil {
						t.Fatal(err)
					}
					addr, err := g.Listen("127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = g.Close() })
					ts[i], peers[i] = g, addr.String()
				}
				return ts, peers
			}}
			cfg := DefaultConfig("job", 1, 0, n)
			cfg.ChunkBytes = 64
			cfg.SmallBytes = -1
			rings := openRings(t, f, n, cfg)
			for i, r := range rings {
				if got := r.link.(*grpcLink).ForwardInRecv(); got != c.forward[i] {
					t.Fatalf("rank %d: forward in recv %v, want %v", i, got, c.forward[i])
				}
			}
			for li, l := range []int{16*n + n/2, 1000, 4099} {
				in := inputs(int64(li), n, l)
				out := clone(in)
				for i, err := range allReduceAll(rings, Tag{Step: uint64(li + 1)}, out, Sum) {
					if err != nil {
						t.Fatalf("l=%d rank %d: %v", l, i, err)
					}
				}
				for e := 0; e < l; e++ {
					want := ringOrderSum(in, e)
					for i := range out {
						if math.Float32bits(out[i][e]) != math.Float32bits(want) {
							t.Fatalf("l=%d rank %d elem %d: got %v, ring-order sum %v", l, i, e, out[i][e], want)
						}
					}
				}
			}
			want := orderRoundMajor
			if c.lockstep {
				want = orderLockstep
			}
			for i, r := range rings {
				if r.order != want {
					t.Fatalf("rank %d: frame order %d, want %d", i, r.order, want)
				}
			}
		})
	}
}

// TestSharedMemoryLargeVector: a vector of at least streamStoreBytes takes
// the one-pass path with non-temporal all-gather stores; every rank still
// gets exactly the ring-order sums (3 ranks, a length that leaves the
// segments and chunks unaligned to 16 bytes), and Mean divides once.
func TestSharedMemoryLargeVector(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	const n = 3
	l := streamStoreBytes/4 + 1001
	rings := openRings(t, grpcFabric(true, false), n, DefaultConfig("job", 1, 0, n))
	in := inputs(11, n, l)
	for _, red := range []Reduction{Sum, Mean} {
		out := clone(in)
		for i, err := range allReduceAll(rings, Tag{Step: uint64(red) + 1}, out, red) {
			if err != nil {
				t.Fatalf("%v rank %d: %v", red, i, err)
			}
		}
		for e := 0; e < l; e++ {
			want := ringOrderSum(in, e)
			if red == Mean {
				want /= n
			}
			for i := range out {
				if math.Float32bits(out[i][e]) != math.Float32bits(want) {
					t.Fatalf("%v rank %d elem %d: got %v, want %v", red, i, e, out[i][e], want)
				}
			}
		}
	}
	for i, r := range rings {
		if r.order != orderLockstep {
			t.Fatalf("rank %d: not on the lockstep (one-pass) order", i)
		}
	}
}

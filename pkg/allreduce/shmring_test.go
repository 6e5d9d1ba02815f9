package allreduce

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// openLinkPair starts two GRPCTransports on loopback, rank i configured
// by cfg(i), and opens the two ranks' links of a 2-rank ring
// concurrently; transports and links are closed when the test ends.
func openLinkPair(t *testing.T, cfg func(rank int) GRPCConfig) [2]*grpcLink {
	t.Helper()
	var ts [2]*GRPCTransport
	var peers []string
	for i := range ts {
		g, err := NewGRPCTransport(cfg(i))
		if err != nil {
			t.Fatal(err)
		}
		addr, err := g.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Close() })
		ts[i] = g
		peers = append(peers, addr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var links [2]*grpcLink
	errs := make(chan error, 2)
	for i := range ts {
		go func(i int) {
			l, err := ts[i].Open(ctx, Plan{Job: "j", Generation: 1, Rank: i, Peers: peers})
			if err == nil {
				links[i] = l.(*grpcLink)
			}
			errs <- err
		}(i)
	}
	for range ts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range links {
		t.Cleanup(func() { _ = l.Close() })
	}
	return links
}

// shmPair opens a 2-rank ring of same-host GRPCTransports and returns the
// links (rank 0 sends to rank 1 and back) over shared memory.
func shmPair(t *testing.T) [2]*grpcLink {
	t.Helper()
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	dir := t.TempDir()
	links := openLinkPair(t, func(int) GRPCConfig {
		return GRPCConfig{HostID: "h", ShmDir: dir, ShmSlots: 2, MaxChunkBytes: 1 << 16}
	})
	for i, l := range links {
		if !l.SharedMemory() {
			t.Fatalf("rank %d: no shared memory", i)
		}
	}
	return links
}

// TestShmRingOrderAndWindow: frames arrive in order with their headers and
// payloads; a sender with every slot taken blocks until the receiver
// consumes one; frames sent before the sender closed stay readable.
func TestShmRingOrderAndWindow(t *testing.T) {
	l := shmPair(t)
	send := func(i int) error {
		h := Header{Job: "j", Generation: 1, Seq: uint64(i), Count: 4}
		return l[0].Send(&h, 16, func(dst []byte) {
			for k := range dst {
				dst[k] = byte(i + k)
			}
		})
	}
	for i := 0; i < 2; i++ { // fills both slots
		if err := send(i); err != nil {
			t.Fatal(err)
		}
	}
	third := make(chan error, 1)
	go func() { third <- send(2) }()
	// The sender announces in the segment that it sleeps for a free slot
	// (it does so only after seeing none): from then on the third frame
	// must still be waiting.
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case err := <-third:
			t.Fatalf("third frame sent with both slots full (err %v)", err)
		default:
		}
		if w, _ := l[0].shm.load32(shmOffTailWait); w == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender of the third frame never waited for a free slot")
		}
		runtime.Gosched()
	}
	select {
	case err := <-third:
		t.Fatalf("third frame sent with both slots full (err %v)", err)
	default:
	}
	recv := func(i int) {
		t.Helper()
		err := l[1].Recv(func(h *Header, p [][]byte) error {
			if h.Seq != uint64(i) || h.Job != "j" || len(p) != 1 || len(p[0]) != 16 || p[0][3] != byte(i+3) {
				t.Fatalf("frame %d: header %+v, payload %v", i, *h, p)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	recv(0)
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	l[0].Drain(50 * time.Millisecond) // the receiver is not reading: bounded
	_ = l[0].Close()
	recv(1)
	recv(2)
	if err := l[1].Recv(func(*Header, [][]byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("after the sender closed: %v, want ErrClosed", err)
	}
}

// TestShmRingRefusesBadCounters: a head beyond the slots the receiver has
// is refused as malformed.
func TestShmRingRefusesBadCounters(t *testing.T) {
	l := shmPair(t)
	seg := l[0].shm
	seg.publish(shmOffHead, uint64(seg.slots)+5, shmOffHeadSeq, shmOffHeadWait)
	err := l[1].Recv(func(*Header, [][]byte) error { return nil })
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
}

// TestShmRingCloseWakesWaiter: a Recv waiting on an idle link returns
// promptly when the link closes.
func TestShmRingCloseWakesWaiter(t *testing.T) {
	l := shmPair(t)
	done := make(chan error, 1)
	go func() { done <- l[1].Recv(func(*Header, [][]byte) error { return nil }) }()
	// Close once the receiver sleeps on the idle link (it says so in the
	// segment), the case the wake-up must reach.
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		if w, _ := l[1].in.shm.load32(shmOffHeadWait); w == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver never slept on the idle link")
		}
	}
	t0 := time.Now()
	_ = l[1].Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("Recv returned %v after Close", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked after Close")
	}
}

package allreduce

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// TestFrameReaderStream: a streamed frame is read in pieces straight into
// the caller's memory; what the callback leaves unread is skipped, so the
// next frame is intact; a read past the frame's end is refused.
func TestFrameReaderStream(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := &frameWriter{c: a}
	payload := func(n int, seed byte) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = seed + byte(i)
		}
		return p
	}
	p1, p2, p3 := payload(100_000, 1), payload(300, 7), payload(8, 9)
	go func() {
		for i, p := range [][]byte{p1, p2, p3} {
			h := Header{Job: "j", Generation: 1, Seq: uint64(i + 1), Count: uint32(len(p) / 4)}
			if err := w.sendBytes(&h, p); err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
	}()
	fr := newFrameReader(b, 1<<20)
	// Frame 1 in two pieces.
	got := make([]byte, len(p1))
	err := fr.recvStream(func(h *Header, size int, read func([]byte) error) error {
		if h.Seq != 1 || size != len(p1) {
			t.Fatalf("frame 1: seq %d size %d", h.Seq, size)
		}
		if err := read(got[:70_000]); err != nil {
			return err
		}
		return read(got[70_000:])
	})
	if err != nil || !bytes.Equal(got, p1) {
		t.Fatalf("frame 1: err %v, payload equal %v", err, bytes.Equal(got, p1))
	}
	// Frame 2: read only a part; the rest is skipped.
	if err := fr.recvStream(func(h *Header, size int, read func([]byte) error) error {
		return read(make([]byte, 10))
	}); err != nil {
		t.Fatal(err)
	}
	// Frame 3 is intact; reading past its end is refused.
	err = fr.recvStream(func(h *Header, size int, read func([]byte) error) error {
		if h.Seq != 3 || size != len(p3) {
			t.Fatalf("frame 3: seq %d size %d", h.Seq, size)
		}
		got := make([]byte, size)
		if err := read(got); err != nil || !bytes.Equal(got, p3) {
			t.Fatalf("frame 3: err %v, payload %v", err, got)
		}
		return read(make([]byte, 1))
	})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("read past the frame: got %v, want ErrMalformed", err)
	}
}

// TestTCPSendBufferLimit: a frame-connection send buffer over 1 GiB is
// refused (the read-back of the option is in tcpdata_linux_test.go).
func TestTCPSendBufferLimit(t *testing.T) {
	if _, err := NewGRPCTransport(GRPCConfig{TCPSendBuffer: 2 << 30}); !errors.Is(err, ErrConfig) {
		t.Fatalf("2 GiB send buffer: got %v, want ErrConfig", err)
	}
}

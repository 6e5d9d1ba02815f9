package allreduce

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/proto/ringpb"
)

// The TCP frame path of GRPCTransport: after the gRPC handshake, frames go
// over a plain TCP connection (secured with the transport's credentials
// when it has any), written with one writev per frame and read into one
// reusable buffer. gRPC's HTTP/2 framing (16 KiB frames, window updates,
// buffer copies) costs too much at tens of MB per step.

const tokenBytes = 32

// dataListener accepts frame connections and matches them by token to the
// handshakes that announced them.
type dataListener struct {
	lis     net.Listener
	t       *GRPCTransport
	mu      sync.Mutex // guards pending
	pending map[string]chan net.Conn
	done    chan struct{}
}

func newDataListener(t *GRPCTransport, host string) (*dataListener, error) {
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("allreduce: data listener: %w", err)
	}
	d := &dataListener{lis: lis, t: t, pending: make(map[string]chan net.Conn), done: make(chan struct{})}
	go d.accept()
	return d, nil
}

func (d *dataListener) close() {
	_ = d.lis.Close()
	<-d.done
}

func (d *dataListener) accept() {
	defer close(d.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := d.lis.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.admit(c)
		}()
	}
}

// admit authenticates one connection and hands it to its handshake.
func (d *dataListener) admit(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(d.t.cfg.HandshakeTimeout))
	if creds := d.t.cfg.ServerCreds; creds != nil {
		sc, _, err := creds.ServerHandshake(c)
		if err != nil {
			_ = c.Close()
			return
		}
		c = sc
	}
	var tok [tokenBytes]byte
	if _, err := io.ReadFull(c, tok[:]); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	d.mu.Lock()
	ch := d.pending[string(tok[:])]
	delete(d.pending, string(tok[:]))
	d.mu.Unlock()
	if ch == nil {
		_ = c.Close() // unknown token: refused
		return
	}
	ch <- c
}

// expect registers a fresh token and returns it with the channel its
// connection will arrive on.
func (d *dataListener) expect() ([]byte, chan net.Conn, error) {
	tok := make([]byte, tokenBytes)
	if _, err := rand.Read(tok); err != nil {
		return nil, nil, fmt.Errorf("allreduce: token: %w", err)
	}
	ch := make(chan net.Conn, 1)
	d.mu.Lock()
	d.pending[string(tok)] = ch
	d.mu.Unlock()
	return tok, ch, nil
}

func (d *dataListener) forget(tok []byte) {
	d.mu.Lock()
	delete(d.pending, string(tok))
	d.mu.Unlock()
}

// dialData opens the frame connection announced by a HELLO answer.
func (t *GRPCTransport) dialData(ctx context.Context, authority string, ack *ringpb.Ack) (net.Conn, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", ack.GetDataAddr())
	if err != nil {
		return nil, fmt.Errorf("%w: frame connection to %s: %w", ErrClosed, ack.GetDataAddr(), err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		if b := t.cfg.TCPSendBuffer; b > 0 {
			if err := tc.SetWriteBuffer(b); err != nil {
				_ = c.Close()
				return nil, fmt.Errorf("%w: frame connection send buffer: %w", ErrClosed, err)
			}
		}
	}
	if creds := t.cfg.ClientCreds; creds != nil {
		sc, _, err := creds.ClientHandshake(ctx, authority, c)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("%w: frame connection handshake: %w", ErrClosed, err)
		}
		c = sc
	}
	if _, err := c.Write(ack.GetDataToken()); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
	}
	return c, nil
}

// frameWriter writes frames to a frame connection (one goroutine).
type frameWriter struct {
	c   net.Conn
	hdr ringpb.ChunkHeader
	buf []byte // payload scratch
	hb  []byte // header scratch
}

func (w *frameWriter) send(h *Header, size int, fill func(dst []byte)) error {
	if err := w.header(h, size); err != nil {
		return err
	}
	if cap(w.buf) < size {
		w.buf = make([]byte, size)
	}
	fill(w.buf[:size])
	return w.write(w.buf[:size])
}

// sendBytes writes a frame whose payload is p, straight from p (one writev,
// no staging copy); p is not touched after it returns.
func (w *frameWriter) sendBytes(h *Header, p []byte) error {
	if err := w.header(h, len(p)); err != nil {
		return err
	}
	return w.write(p)
}

// header encodes h with a payload of size bytes into w.hb.
func (w *frameWriter) header(h *Header, size int) error {
	toWire(h, &w.hdr)
	w.hdr.PayloadBytes = uint32(size)
	var err error
	w.hb, err = proto.MarshalOptions{}.MarshalAppend(append(w.hb[:0], 0, 0, 0, 0), &w.hdr)
	if err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	binary.LittleEndian.PutUint32(w.hb, uint32(len(w.hb)-4))
	return nil
}

// write sends w.hb and payload with one writev.
func (w *frameWriter) write(payload []byte) error {
	bufs := net.Buffers{w.hb, payload}
	if _, err := bufs.WriteTo(w.c); err != nil {
		return fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
	}
	return nil
}

// frameReader reads frames from a frame connection (one goroutine).
type frameReader struct {
	r          *bufio.Reader
	hdr        ringpb.ChunkHeader
	h          Header
	hb, buf    []byte
	maxPayload int
}

func newFrameReader(c net.Conn, maxPayload int) *frameReader {
	// The buffer only serves headers: payload reads of at least its size
	// go straight from the socket into the ring's memory.
	return &frameReader{r: bufio.NewReaderSize(c, 64<<10), maxPayload: maxPayload}
}

func (fr *frameReader) recv(fn func(h *Header, payload [][]byte) error) error {
	size, err := fr.readHeader()
	if err != nil {
		return err
	}
	if cap(fr.buf) < size {
		fr.buf = make([]byte, size)
	}
	p := fr.buf[:size]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		return fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
	}
	return fn(&fr.h, [][]byte{p})
}

// recvStream reads the next frame's header and calls fn with it, the
// payload size and read, which fills p with the next len(p) payload bytes
// straight from the connection (through the small read buffer only for
// bytes that are already in it). Bytes fn leaves unread are discarded, so
// the next frame starts where it should.
func (fr *frameReader) recvStream(fn func(h *Header, size int, read func(p []byte) error) error) error {
	size, err := fr.readHeader()
	if err != nil {
		return err
	}
	left := size
	read := func(p []byte) error {
		if len(p) > left {
			return fmt.Errorf("%w: read of %d bytes with %d left in the frame", ErrMalformed, len(p), left)
		}
		if _, err := io.ReadFull(fr.r, p); err != nil {
			return fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
		}
		left -= len(p)
		return nil
	}
	if err := fn(&fr.h, size, read); err != nil {
		return err
	}
	if left > 0 {
		if _, err := fr.r.Discard(left); err != nil {
			return fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
		}
	}
	return nil
}

// readHeader reads and decodes the next frame header into fr.h and returns
// the payload size.
func (fr *frameReader) readHeader() (int, error) {
	var lb [4]byte
	if _, err := io.ReadFull(fr.r, lb[:]); err != nil {
		return 0, fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
	}
	n := binary.LittleEndian.Uint32(lb[:])
	if n > maxHeaderBytes {
		return 0, fmt.Errorf("%w: frame header of %d bytes", ErrMalformed, n)
	}
	if cap(fr.hb) < int(n) {
		fr.hb = make([]byte, n)
	}
	hb := fr.hb[:n]
	if _, err := io.ReadFull(fr.r, hb); err != nil {
		return 0, fmt.Errorf("%w: frame connection: %w", ErrClosed, err)
	}
	fr.hdr.Reset()
	if err := proto.Unmarshal(hb, &fr.hdr); err != nil {
		return 0, fmt.Errorf("%w: frame header: %w", ErrMalformed, err)
	}
	if err := fromWire(&fr.hdr, &fr.h); err != nil {
		return 0, err
	}
	size := int(fr.hdr.PayloadBytes)
	if size > fr.maxPayload {
		return 0, fmt.Errorf("%w: frame payload of %d bytes (limit %d)", ErrMalformed, size, fr.maxPayload)
	}
	return size, nil
}

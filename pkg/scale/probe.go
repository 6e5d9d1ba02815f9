package scale

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"time"
)

// Link is a measured link between two emulated hosts.
type Link struct {
	// Goodput is TCP payload bytes/s of one bulk stream.
	Goodput float64
	// Latency is half the median round trip of a 1-byte message over TCP
	// (the alpha of the model, without the ring's own per-step costs).
	Latency time.Duration
}

// MeasureLink measures the link from host a to host b: a bulk TCP
// transfer of about d and 200 small round trips.
func (h *Hosts) MeasureLink(ctx context.Context, a, b int, d time.Duration) (Link, error) {
	var ln net.Listener
	if err := h.In(b, func() (err error) {
		ln, err = net.Listen("tcp", h.IPs[b]+":0")
		return err
	}); err != nil {
		return Link{}, err
	}
	defer ln.Close()
	var conn net.Conn
	if err := h.In(a, func() (err error) {
		var dl net.Dialer
		conn, err = dl.DialContext(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		return Link{}, err
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		return Link{}, err
	}
	defer srv.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close(); srv.Close() })
	defer stop()

	// Round trips first (an idle link).
	one := []byte{1}
	go func() { _, _ = io.Copy(srv, srv) }() // echo
	rtts := make([]time.Duration, 0, 200)
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		if _, err := conn.Write(one); err != nil {
			return Link{}, err
		}
		if _, err := io.ReadFull(conn, one); err != nil {
			return Link{}, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	lat := rtts[len(rtts)/2] / 2
	conn.Close()
	srv.Close()

	// Bulk: a fresh connection, the receiver times from its first byte.
	var c2 net.Conn
	if err := h.In(a, func() (err error) {
		var dl net.Dialer
		c2, err = dl.DialContext(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		return Link{}, err
	}
	defer c2.Close()
	s2, err := ln.Accept()
	if err != nil {
		return Link{}, err
	}
	defer s2.Close()
	stop2 := context.AfterFunc(ctx, func() { c2.Close(); s2.Close() })
	defer stop2()
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := c2.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 1<<20)
	// Skip the first 10% (slow start, tbf's initial burst).
	warm := time.Now().Add(d / 10)
	var n int64
	var t0 time.Time
	for {
		k, err := s2.Read(buf)
		if err != nil {
			return Link{}, fmt.Errorf("scale: link probe: %w", err)
		}
		now := time.Now()
		if now.Before(warm) {
			continue
		}
		if t0.IsZero() {
			t0 = now
			continue
		}
		n += int64(k)
		if now.Sub(t0) >= d {
			return Link{Goodput: float64(n) / now.Sub(t0).Seconds(), Latency: lat}, nil
		}
	}
}

package allreduce

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestTCPSendBuffer: the frame connection gets GRPCConfig.TCPSendBuffer as
// its SO_SNDBUF (Linux reports twice the request), the default when it is
// zero.
func TestTCPSendBuffer(t *testing.T) {
	for _, c := range []struct {
		name string
		set  int
		want int
	}{
		{"set", 96 << 10, 2 * 96 << 10},
		{"default", 0, 2 * defaultTCPSendBuffer},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := make([]*GRPCTransport, 2)
			var peers []string
			for i := range ts {
				g, err := NewGRPCTransport(GRPCConfig{HostID: fmt.Sprintf("host-%d", i), TCPSendBuffer: c.set})
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				addr, err := g.Listen("127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ts[i], peers = g, append(peers, addr.String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			links := make([]Link, 2)
			errs := make(chan error, 2)
			for i := range ts {
				go func(i int) {
					var err error
					links[i], err = ts[i].Open(ctx, Plan{Job: "j", Generation: 1, Rank: i, Peers: peers})
					errs <- err
				}(i)
			}
			for range ts {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			for i, l := range links {
				defer l.Close()
				out := l.(*grpcLink).out
				if out == nil {
					t.Fatalf("rank %d: no TCP frame connection", i)
				}
				got, err := sendBufferOf(out.c)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Fatalf("rank %d: SO_SNDBUF %d, want %d", i, got, c.want)
				}
			}
		})
	}
}

// sendBufferOf reads a TCP connection's SO_SNDBUF.
func sendBufferOf(c net.Conn) (int, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, fmt.Errorf("%T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF) }); err != nil {
		return 0, err
	}
	return v, serr
}

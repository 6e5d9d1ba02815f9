package allreduce

import (
	"fmt"
	"net"
	"syscall"
	"testing"
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
			links := openLinkPair(t, func(i int) GRPCConfig {
				return GRPCConfig{HostID: fmt.Sprintf("host-%d", i), TCPSendBuffer: c.set}
			})
			for i, l := range links {
				out := l.out
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

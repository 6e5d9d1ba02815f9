package allreduce

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"
)

func TestReachableAddrReplacesWildcard(t *testing.T) {
	lis := &net.TCPAddr{IP: net.IPv4zero, Port: 4242}
	ctx := peer.NewContext(context.Background(), &peer.Peer{
		Addr:      &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 5555},
		LocalAddr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 7080},
	})
	if got := reachableAddr(lis, ctx); got != "10.0.0.7:4242" {
		t.Fatalf("wildcard listener announced as %s", got)
	}
	fixed := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	if got := reachableAddr(fixed, ctx); got != "127.0.0.1:9" {
		t.Fatalf("bound listener announced as %s", got)
	}
}

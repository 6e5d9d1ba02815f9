package scale

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
)

// TestRingRankMeasures runs the all-reduce measurement's two ranks on
// loopback: rank 0 prints the result line RunRing parses.
func TestRingRankMeasures(t *testing.T) {
	peers := make([]string, 2)
	for i := range peers {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers[i] = l.Addr().String()
		l.Close()
	}
	var out [2]bytes.Buffer
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			errs[r] = RingRank(context.Background(), RingRankConfig{Rank: r, World: 2, Peers: peers, HostID: fmt.Sprintf("h%d", r),
				Bytes: 1 << 20, Iters: 3}, &out[r])
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	m := ringOut.FindSubmatch(out[0].Bytes())
	if m == nil || string(m[1]) != fmt.Sprint(1<<20) || out[1].Len() != 0 {
		t.Fatalf("rank 0 printed %q, rank 1 %q", out[0].String(), out[1].String())
	}
}

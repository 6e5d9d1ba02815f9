package nn

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestParallelPartsTeam: over many back-to-back calls of varying sizes,
// parallelParts covers every index exactly once, never runs one part on
// two goroutines at a time, uses parts below the thread count, and its
// helpers exit once no call has come for teamSpin.
func TestParallelPartsTeam(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, threads := range []int{2, 3, 5} {
		c := NewCPU(threads)
		busy := make([]atomic.Int32, threads)
		for call := 0; call < 100; call++ {
			n := 1 + call*7%200
			seen := make([]atomic.Int32, n)
			var bad atomic.Int32
			c.parallelParts(n, 1+call%3, func(part, lo, hi int) {
				if part < 0 || part >= threads || busy[part].Add(1) != 1 {
					bad.Add(1)
				}
				for i := lo; i < hi; i++ {
					seen[i].Add(1)
				}
				for i := 0; i < 50; i++ { // give other parts time to overlap
					runtime.Gosched()
				}
				busy[part].Add(-1)
			})
			if bad.Load() != 0 {
				t.Fatalf("threads %d call %d: a part out of range or run twice at once", threads, call)
			}
			for i := range seen {
				if v := seen[i].Load(); v != 1 {
					t.Fatalf("threads %d call %d: index %d of %d covered %d times", threads, call, i, n, v)
				}
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(teamSpin)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Fatalf("%d goroutines left running after the calls (%d before)", g, before)
	}
}

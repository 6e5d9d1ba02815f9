package nn

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn/internal/gemm"
)

// The CPU backend's helper goroutines. A training step is a few hundred
// parallel ops back to back, many of them 0.1-1 ms long. Starting a
// goroutine per op costs more than that on a VM: the new goroutine waits in
// the caller's run queue until an idle processor wakes up (measured here: a
// median of ~75 µs, and often never before the caller has done all the work
// itself). So a helper, once started, stays running between ops: it polls
// for the next op for up to teamSpin, then exits (no goroutine outlives a
// burst of ops by more than that). Every wait yields the core between polls
// (sched_yield), so that on a machine shared with busy neighbours a waiting
// goroutine does not take the core from one that has work. Helpers only
// ever speed an op up: the caller takes chunks like any helper, and runs
// whatever nobody took.
//
// The GEMMs of the backend's ops go through the same helpers (c.sgemm,
// gemm.Split), not gemm's pool, whose parked workers would wake as slowly.

// teamSpin is how long an idle helper waits for the next op.
const teamSpin = time.Millisecond

// team is one backend's helper goroutines (the backend is used from one
// goroutine at a time, so one op is open at a time).
type team struct {
	cur     atomic.Pointer[teamJob] // the op open to helpers, or nil
	helpers atomic.Int32            // helper goroutines alive
}

// teamJob is one parallelParts call: chunks of [0, n) taken from next by
// the caller (part 0) and the helpers that found a seat (parts 1..).
type teamJob struct {
	fn     func(part, lo, hi int)
	n      int
	chunks int
	parts  int32        // goroutines wanted, the caller included
	seats  atomic.Int32 // parts handed out
	next   atomic.Int64 // next chunk to take
	done   atomic.Int64 // chunks finished
}

// run takes chunks until none is left.
func (j *teamJob) run(part int) {
	for {
		i := int(j.next.Add(1) - 1)
		if i >= j.chunks {
			return
		}
		j.fn(part, i*j.n/j.chunks, (i+1)*j.n/j.chunks)
		j.done.Add(1)
	}
}

// do runs j on the calling goroutine and the helpers, and returns when
// every chunk is done.
func (tm *team) do(j *teamJob) {
	j.seats.Store(1)
	tm.cur.Store(j)
	for h := tm.helpers.Load(); h < j.parts-1; h = tm.helpers.Load() {
		if tm.helpers.CompareAndSwap(h, h+1) {
			go tm.helper(j)
		}
	}
	j.run(0)
	tm.cur.CompareAndSwap(j, nil)
	// Chunks still running on helpers are short: wait without parking (a
	// parked caller would be woken as slowly as a new goroutine), yielding
	// the core between polls (it may be the one a helper needs).
	for spins := 1; j.done.Load() < int64(j.chunks); spins++ {
		if spins&63 == 0 {
			runtime.Gosched() // a helper holding a chunk may need this P
		}
		yieldThread()
	}
}

// helper serves ops, starting with j, until none has come for teamSpin.
func (tm *team) helper(j *teamJob) {
	defer tm.helpers.Add(-1)
	for {
		if seat := j.seats.Add(1) - 1; seat < j.parts {
			j.run(int(seat))
		}
		last := j
		j = nil
		t0 := time.Now()
		for spins := 1; j == nil; spins++ {
			if cur := tm.cur.Load(); cur != nil && cur != last {
				j = cur
				break
			}
			if spins&63 == 0 {
				if time.Since(t0) > teamSpin {
					return
				}
				runtime.Gosched() // let other goroutines of the process run
			}
			yieldThread() // and other threads of the machine
		}
	}
}

// workspaces makes sure there is a GEMM Workspace per goroutine part.
func (c *CPU) workspaces() {
	for len(c.work) < c.threads {
		c.work = append(c.work, new(gemm.Workspace))
	}
}

// sgemm is gemm.Sgemm on the backend's threads (its helpers and
// per-part Workspaces): bit-identical to gemm.Sgemm.
func (c *CPU) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cm []float32, ldc int) {
	c.runSplit(gemm.NewSplit(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cm, ldc, c.threads))
}

// sgemmPacker is gemm.SgemmPacker on the backend's threads.
func (c *CPU) sgemmPacker(transA bool, m, n, k int, alpha float32, a []float32, lda int,
	bp gemm.BPacker, beta float32, cm []float32, ldc int) {
	c.runSplit(gemm.NewSplitPacker(transA, m, n, k, alpha, a, lda, bp, beta, cm, ldc, c.threads))
}

func (c *CPU) runSplit(s *gemm.Split) {
	nch := s.Chunks()
	if nch == 0 {
		return
	}
	c.workspaces()
	c.parallelParts(nch, 1, func(part, lo, hi int) {
		for i := lo; i < hi; i++ {
			s.Chunk(c.work[part], i)
		}
	})
}

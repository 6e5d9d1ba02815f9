package gemm

import (
	"sync"
	"sync/atomic"
	"time"
)

// The worker pool: parked goroutines that help calls with threads > 1.
// A call publishes itself as a job; every participant (the caller and the
// helpers that picked the job up) takes chunk indices from the job's atomic
// counter until none is left, so a busy or late helper never delays a call:
// the caller runs whatever nobody else took. Which goroutine computes which
// chunk never changes the result.

// WorkerFunction is the pool goroutines' function, for leak checkers
// (goleak.IgnoreAnyFunction(gemm.WorkerFunction)).
const WorkerFunction = "github.com/ringtrain/ringtrain/pkg/nn/internal/gemm.worker"

// idleExit is how long a parked worker waits for work before exiting.
const idleExit = 5 * time.Second

var pool struct {
	jobs chan *job // helpers wanted; each receive is one helper joining a job

	mu    sync.Mutex // guards alive
	alive int        // workers started and not yet exited
}

func init() { pool.jobs = make(chan *job, maxThreads) }

// job is one parallel Sgemm call in flight.
type job struct {
	p     problem
	nch   int
	next  atomic.Int64   // next chunk index to take
	done  sync.WaitGroup // one count per chunk
	users atomic.Int32   // participants still holding the job
}

var jobPool = sync.Pool{New: func() any { return new(job) }}

// runParallel computes the nch chunks of p on the caller plus up to
// threads-1 pool workers, and returns when every chunk is done.
func runParallel(p *problem, nch, threads int) {
	j := jobPool.Get().(*job)
	j.p = *p
	j.nch = nch
	j.next.Store(0)
	j.done.Add(nch)
	helpers := min(threads, nch) - 1
	j.users.Store(int32(helpers) + 1)
	ensureWorkers(helpers)
	for h := 0; h < helpers; h++ {
		select {
		case pool.jobs <- j:
		default: // queue full: the caller does this helper's share
			j.users.Add(-1)
		}
	}
	buf := getBuffers(p.kern)
	j.work(buf)
	putBuffers(buf)
	j.done.Wait()
	j.release()
}

// work takes chunks until none is left.
func (j *job) work(buf *buffers) {
	for {
		i := int(j.next.Add(1) - 1)
		if i >= j.nch {
			return
		}
		j.p.chunk(buf, i)
		j.done.Done()
	}
}

// release drops one participant; the last one recycles the job.
func (j *job) release() {
	if j.users.Add(-1) == 0 {
		j.p = problem{} // do not keep the caller's matrices alive
		jobPool.Put(j)
	}
}

// ensureWorkers starts workers until at least n exist. Busy workers count:
// a job they cannot take at once is done by its caller, so the pool never
// grows past the largest thread count asked for.
func ensureWorkers(n int) {
	pool.mu.Lock()
	for pool.alive < n {
		pool.alive++
		go worker()
	}
	pool.mu.Unlock()
}

// worker serves jobs until it has been idle for idleExit. Each worker keeps
// its own packing buffers across jobs.
func worker() {
	var buf *buffers
	t := time.NewTimer(idleExit)
	defer t.Stop()
	for {
		select {
		case j := <-pool.jobs:
			if buf == nil || buf.kern != j.p.kern {
				buf = newBuffers(j.p.kern)
			}
			j.work(buf)
			j.release()
			t.Reset(idleExit) // Go >= 1.23 timers: no stale tick after Reset
		case <-t.C:
			pool.mu.Lock()
			pool.alive--
			pool.mu.Unlock()
			return
		}
	}
}

// bufPool holds callers' packing buffers, one pool per kernel.
var bufPools sync.Map // *kernel -> *sync.Pool

func getBuffers(kn *kernel) *buffers {
	v, ok := bufPools.Load(kn)
	if !ok {
		v, _ = bufPools.LoadOrStore(kn, &sync.Pool{New: func() any { return newBuffers(kn) }})
	}
	return v.(*sync.Pool).Get().(*buffers)
}

func putBuffers(b *buffers) {
	if v, ok := bufPools.Load(b.kern); ok {
		v.(*sync.Pool).Put(b)
	}
}

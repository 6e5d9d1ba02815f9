package worker

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// TestStepPhasesAddUp trains one step on two in-process replicas and checks
// the step report: the phases are positive where they must be, add up to
// the step, and the all-reduce figures match the reducer's plan.
func TestStepPhasesAddUp(t *testing.T) {
	spec := tinySpec()
	spec.BatchNorm = "average"
	train, test, err := OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	net := allreduce.NewInmemNetwork()
	peers := []string{"a", "b"}
	results := make([]StepResult, 2)
	elems := make([]int, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range peers {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			errs[r] = func() error {
				ctx := context.Background()
				tr, err := NewTrainer(spec, nn.NewCPU(1), train, test)
				if err != nil {
					return err
				}
				defer tr.Close()
				ring, err := allreduce.Open(ctx, net.Transport(peers[r]), allreduce.DefaultConfig("j", 1, r, 2), peers)
				if err != nil {
					return err
				}
				defer ring.Close()
				red, err := tr.NewReducer(ring)
				if err != nil {
					return err
				}
				for _, b := range red.Buckets() {
					elems[r] += b.Elements
				}
				ld, err := tr.Loader(ctx, r, 2)
				if err != nil {
					return err
				}
				defer ld.Close()
				b, err := ld.Next(ctx)
				if err != nil {
					return err
				}
				results[r], err = tr.TrainStep(ctx, b, red, 2)
				return err
			}()
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	res := results[0]
	ph := res.Phases
	if ph.Compute <= 0 || ph.Exposed < 0 || ph.Optimizer <= 0 {
		t.Fatalf("phases %+v", ph)
	}
	if d := ph.Compute + ph.Exposed + ph.Optimizer; d != res.Duration {
		t.Fatalf("phases add up to %s, step took %s", d, res.Duration)
	}
	p := stepPhases(res, 3*time.Millisecond, 2, false)
	if math.Abs(p.GetStepSeconds()-(res.Duration+3*time.Millisecond).Seconds()) > 1e-9 || p.GetDataWaitSeconds() != 0.003 {
		t.Fatalf("report %+v for step %s", p, res.Duration)
	}
	if p.GetAllreduceBytes() != int64(4*elems[0]) || p.GetBuckets() != int32(res.Comm.Buckets) || p.GetWorld() != 2 {
		t.Fatalf("report bytes %d buckets %d world %d; reducer plans %d bytes", p.GetAllreduceBytes(), p.GetBuckets(), p.GetWorld(), 4*elems[0])
	}
	want := float64(p.GetAllreduceBytes()) / res.Comm.Comm.Seconds() // 2(N-1)/N = 1 at N=2
	if p.GetBusbwBytesPerSecond() <= 0 || math.Abs(p.GetBusbwBytesPerSecond()-want) > 1e-6*want {
		t.Fatalf("busbw %g, want %g", p.GetBusbwBytesPerSecond(), want)
	}
	if e := p.GetEndUnixNano(); e != res.End.UnixNano() || time.Since(res.End) > time.Minute || time.Since(res.End) < 0 {
		t.Fatalf("end %d, step ended %s", e, res.End)
	}
	if h := p.GetHiddenFraction(); h < 0 || h > 1 {
		t.Fatalf("hidden fraction %g", h)
	}
}

func TestBusBW(t *testing.T) {
	// nccl-tests: 1 GB in 1 s on 8 ranks is algbw 1 GB/s, busbw 1.75 GB/s.
	if got := BusBW(1e9, time.Second, 8); math.Abs(got-1.75e9) > 1 {
		t.Fatalf("busbw %g", got)
	}
	if BusBW(1e9, time.Second, 1) != 0 || BusBW(1e9, 0, 4) != 0 {
		t.Fatal("busbw of one worker or no time must be 0")
	}
}

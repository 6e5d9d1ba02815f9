package worker

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/data"
	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

func tinySpec() job.Spec {
	s := job.Default()
	s.Model = job.Model{Arch: "resnet18", Stem: "cifar", Width: 1.0 / 16}
	s.Data.Dataset = "synthetic"
	s.Data.SyntheticSize = 96
	s.Data.Augment = true
	s.GlobalBatch = 16
	s.Epochs = 1
	s.BatchNorm = "sync"
	s.Threads = 1
	return s
}

// runLosses trains world in-process replicas over the in-memory ring for
// steps steps and returns rank 0's global losses and final parameters.
func runLosses(t *testing.T, spec job.Spec, world, steps int) ([]float64, []float32) {
	t.Helper()
	train, test, err := OpenDatasets(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	net := allreduce.NewInmemNetwork()
	peers := make([]string, world)
	for r := range peers {
		peers[r] = fmt.Sprintf("w%d", r)
	}
	losses := make([][]float64, world)
	finals := make([][]float32, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
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
				ring, err := allreduce.Open(ctx, net.Transport(peers[r]), allreduce.DefaultConfig("j", 1, r, world), peers)
				if err != nil {
					return err
				}
				defer ring.Close()
				if spec.BatchNorm == "sync" {
					tr.Model.SetChannelReducer(ring)
				}
				red, err := tr.NewReducer(ring)
				if err != nil {
					return err
				}
				ld, err := tr.Loader(ctx, r, world)
				if err != nil {
					return err
				}
				defer ld.Close()
				for s := 0; s < steps; s++ {
					b, err := ld.Next(ctx)
					if err != nil {
						return err
					}
					res, err := tr.TrainStep(ctx, b, red, world)
					if err != nil {
						return err
					}
					losses[r] = append(losses[r], res.Loss)
				}
				ev, err := tr.Evaluate(ctx, ring, r, world, allreduce.Tag{Step: uint64(tr.Step), Bucket: 1 << 20})
				if err != nil {
					return err
				}
				if ev.N != test.Len() {
					return fmt.Errorf("evaluated %d of %d test samples", ev.N, test.Len())
				}
				finals[r] = append([]float32(nil), tr.Model.ParamsFlat().Data...)
				return nil
			}()
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r := 1; r < world; r++ {
		for i := range finals[0] {
			if finals[r][i] != finals[0][i] {
				t.Fatalf("world %d: rank %d's replica differs from rank 0's at %d", world, r, i)
			}
		}
	}
	return losses[0], finals[0]
}

func TestSyncBNWorkersMatchOneWorker(t *testing.T) {
	spec := tinySpec()
	one, _ := runLosses(t, spec, 1, 4)
	for _, w := range []int{2, 4} {
		got, _ := runLosses(t, spec, w, 4)
		for s := range one {
			if d := math.Abs(got[s]-one[s]) / math.Abs(one[s]); d > 1e-4 {
				t.Errorf("world %d step %d: loss %.6f, one worker %.6f (rel %.2g)", w, s, got[s], one[s], d)
			}
		}
	}
	if one[len(one)-1] >= one[0] {
		t.Logf("losses %v (not decreasing over 4 tiny steps; informational)", one)
	}
}

func TestTrainerDeterministic(t *testing.T) {
	spec := tinySpec()
	spec.BatchNorm = "average"
	_, a := runLosses(t, spec, 2, 2)
	_, b := runLosses(t, spec, 2, 2)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("two identical runs differ at param %d", i)
		}
	}
}

func TestBuildScheduleAndOptimizers(t *testing.T) {
	spec := tinySpec()
	for _, name := range []string{"sgd", "adam", "adamw", "adagrad", "rmsprop"} {
		spec.Optimizer.Name = name
		spec.Optimizer.LR = 0.01
		train, test, _ := OpenDatasets(context.Background(), spec)
		tr, err := NewTrainer(spec, nn.NewCPU(1), train, test)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tr.Close()
	}
	spec.Schedule = job.Schedule{Name: "multistep", Milestones: []int{1, 2}, Gamma: 0.1, WarmupEpochs: 0}
	sch, err := BuildSchedule(spec, 10)
	if err != nil {
		t.Fatal(err)
	}
	if lr := sch.LR(15); math.Abs(lr-spec.Optimizer.LR*0.1) > 1e-12 {
		t.Fatalf("multistep at step 15: %g", lr)
	}
	_ = data.Position{}
}

func TestStepMetricsAreGlobal(t *testing.T) {
	spec := tinySpec()
	spec.BatchNorm = "average"
	train, test, _ := OpenDatasets(context.Background(), spec)
	tr, err := NewTrainer(spec, nn.NewCPU(1), train, test)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ring, err := allreduce.Open(context.Background(), allreduce.NewInmemNetwork().Transport("a"), allreduce.DefaultConfig("j", 1, 0, 1), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	red, _ := tr.NewReducer(ring)
	ld, _ := tr.Loader(context.Background(), 0, 1)
	defer ld.Close()
	b, _ := ld.Next(context.Background())
	res, err := tr.TrainStep(context.Background(), b, red, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Loss < 1 || res.Loss > 5 || res.N != spec.GlobalBatch || res.Correct < 0 || res.Correct > res.N {
		t.Fatalf("step metrics %+v (a 10-class loss at init is about ln 10)", res)
	}
}

func TestAdvertisedRefusesWildcard(t *testing.T) {
	l := &net.TCPAddr{IP: net.IPv4zero, Port: 7080}
	if _, err := advertised(l, ""); err == nil {
		t.Fatal("a wildcard listen address was accepted as the ring address")
	}
	a, err := advertised(l, "10.1.2.3:7080")
	if err != nil || a.String() != "10.1.2.3:7080" {
		t.Fatalf("advertise: %v %v", a, err)
	}
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}
	if a, err := advertised(lo, ""); err != nil || a != net.Addr(lo) {
		t.Fatalf("loopback: %v %v", a, err)
	}
}

// TestStepsPerEpochMatchesSampler: the coordinator counts an epoch's
// steps from the spec (job.Spec.StepsPerEpoch) without the data; the
// workers' sampler must agree for every size, batch and drop_last.
func TestStepsPerEpochMatchesSampler(t *testing.T) {
	for _, drop := range []bool{false, true} {
		for _, n := range []int{1, 7, 16, 96, 50000} {
			for _, b := range []int{1, 5, 16, 512} {
				s := tinySpec()
				s.GlobalBatch, s.Data.DropLast = b, drop
				sm, err := NewSampler(s, n)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := s.StepsPerEpoch(n), sm.StepsPerEpoch(b); got != want {
					t.Errorf("n=%d batch=%d drop_last=%v: spec says %d steps, sampler %d", n, b, drop, got, want)
				}
			}
		}
	}
}

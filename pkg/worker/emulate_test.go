package worker

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/allreduce"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// TestEmulatedComputeKeepsTheRealOrder measures the tiny model's backward,
// then runs an emulated pass from that profile: the parameters (hence the
// buckets, which launch as their parameters complete) become ready in the
// order real backward produced them, each no earlier than its measured
// fraction of the emulated time, and the pass lasts the emulated time.
func TestEmulatedComputeKeepsTheRealOrder(t *testing.T) {
	spec := tinySpec()
	prof, err := MeasureCompute(context.Background(), spec, nn.NewCPU(1), 8, 2)
	if err != nil {
		t.Fatal(err)
	}
	n := len(prof.Ready)
	if n < 10 || len(prof.Order) != n || prof.Backward <= 0 || prof.Forward <= 0 {
		t.Fatalf("profile: %d params, order %d, forward %s backward %s", n, len(prof.Order), prof.Forward, prof.Backward)
	}
	// Real backward finishes the classifier first and the stem last.
	if prof.Order[0] != n-1 && prof.Order[0] != n-2 || prof.Order[n-1] > 2 {
		t.Fatalf("real backward order %v", prof.Order)
	}
	total := 60 * time.Millisecond
	e := prof.Emulation(total)
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	spec.EmulateCompute = e
	train, test, _ := OpenDatasets(context.Background(), spec)
	tr, err := NewTrainer(spec, nn.NewCPU(1), train, test)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ld, _ := tr.Loader(context.Background(), 0, 1)
	defer ld.Close()
	b, _ := ld.Next(context.Background())
	var got []int
	var at []time.Duration
	start := time.Now()
	if err := tr.emulatedPass(context.Background(), b, func(i int) error {
		got = append(got, i)
		at = append(at, time.Since(start))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !slices.Equal(got, prof.Order) {
		t.Fatalf("emulated order %v, real %v", got, prof.Order)
	}
	for k, i := range got {
		want := time.Duration(float64(total) * (e.Forward + (1-e.Forward)*e.Ready[i]))
		if at[k] < want {
			t.Fatalf("param %d ready at %s, before its emulated time %s", i, at[k], want)
		}
	}
	if took < total || took > total+500*time.Millisecond { // loose: a busy machine wakes timers late
		t.Fatalf("emulated pass took %s, want %s", took, total)
	}
}

// TestEmulatedStepReducesRealSizes runs a whole emulated step through the
// reducer: the real gradient bytes are all-reduced and the optimizer runs.
func TestEmulatedStepReducesRealSizes(t *testing.T) {
	spec := tinySpec()
	spec.BatchNorm = "average"
	prof, err := MeasureCompute(context.Background(), spec, nn.NewCPU(1), 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	spec.EmulateCompute = prof.Emulation(20 * time.Millisecond)
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
	want := 0
	for _, bk := range red.Buckets() {
		want += 4 * bk.Elements
	}
	ld, _ := tr.Loader(context.Background(), 0, 1)
	defer ld.Close()
	before := slices.Clone(tr.Model.ParamsFlat().Data)
	for s := 0; s < 2; s++ {
		b, _ := ld.Next(context.Background())
		res, err := tr.TrainStep(context.Background(), b, red, 1)
		if err != nil {
			t.Fatal(err)
		}
		if res.Comm.Bytes != int64(want) || res.Phases.Compute < 20*time.Millisecond || res.Loss != 0 {
			t.Fatalf("step %d: bytes %d (want %d), compute %s, loss %g", s, res.Comm.Bytes, want, res.Phases.Compute, res.Loss)
		}
	}
	changed := false // weight decay moves the weights even with zero gradients
	for i, v := range tr.Model.ParamsFlat().Data {
		if math.Abs(float64(v-before[i])) > 0 {
			changed = true
			break
		}
	}
	if !changed || tr.Step != 2 {
		t.Fatalf("optimizer did not run (step %d)", tr.Step)
	}
}

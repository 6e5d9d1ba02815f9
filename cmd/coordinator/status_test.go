package main

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/job"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// TestPrintStatus: the first screen from a leader's answer: progress,
// ETA from the spec and the throughput, and each worker's state.
func TestPrintStatus(t *testing.T) {
	spec := job.Default()
	spec.Data.Dataset, spec.Data.SyntheticSize, spec.GlobalBatch, spec.Epochs = "synthetic", 1000, 100, 3 // 10 steps an epoch, 30 in all
	b, err := spec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	js := &controlpb.JobStatus{Job: "cifar", Spec: b, ImagesPerSec: 100,
		Leader: &controlpb.LeaderInfo{LeaderId: "c1", LeaderAddress: "c1:7070", NodeId: "c0"},
		Plan: &controlpb.Plan{Generation: 4, State: controlpb.JobState_JOB_STATE_RUNNING, Committed: &controlpb.Committed{Step: 10, Epoch: 1},
			Members: []*controlpb.PlanMember{{Rank: 0, Id: "w0", HostId: "h0", Device: "cpu"}, {Rank: 1, Id: "g1", HostId: "h1", Device: "cuda"}}},
		Live: []*controlpb.WorkerInfo{{Id: "w0"}, {Id: "w2", HostId: "h2"}},
		Metrics: []*controlpb.MetricsReport{
			{WorkerId: "w0", Generation: 4, Rank: 0, Step: 12, Epoch: 1, Phase: "train", ImagesPerSec: 100, UnixNano: now.UnixNano(),
				Phases: &controlpb.StepPhases{StepSeconds: 0.05, DataWaitSeconds: 0.001, ComputeSeconds: 0.04, ExposedAllreduceSeconds: 0.005, OptimizerSeconds: 0.004}},
			{WorkerId: "w1", Generation: 3, Rank: 1, Step: 11, Phase: "train", UnixNano: now.Add(-3 * time.Second).UnixNano()},
			{WorkerId: "g1", Generation: 4, Rank: 1, Step: 12, Phase: "train", ImagesPerSec: 900, UnixNano: now.UnixNano(),
				DeviceMemoryBytes: 5 << 29, DeviceMemoryTotalBytes: 80 << 30},
		}}
	var out bytes.Buffer
	if err := printStatus(&out, js, now); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, re := range []string{
		`job cifar: running, plan generation 4, 2 worker\(s\)`,
		`leader: c1 at c1:7070 \(answered by c0\)`,
		// 18 steps left x 100 images / 100 images/s = 18 s.
		`epoch 2/3, step 12/30 \(committed 10\), 100 images/s, ETA 18s`,
		`(?m)^w0 +h0 +cpu +0 +training +12 +100 +50\.0 +1\.0 +40\.0 +5\.0 +4\.0 +0s ago`,
		`(?m)^g1 +h1 +cuda 2\.5/80GiB +1 +training +12 +900 `,
		`(?m)^w2 +h2 +-1 +joining`,
		`(?m)^w1 .* -1 +gone +11 .* 3s ago`,
	} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("status lacks %s:\n%s", re, s)
		}
	}
}

// A finished job shows its last epoch, not the one after it (the
// committed epoch counts the epochs completed).
func TestPrintStatusDoneJob(t *testing.T) {
	spec := job.Default()
	spec.Data.Dataset, spec.Data.SyntheticSize, spec.GlobalBatch, spec.Epochs = "synthetic", 1000, 100, 1
	b, err := spec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	js := &controlpb.JobStatus{Job: "cifar", Spec: b,
		Plan: &controlpb.Plan{Generation: 2, State: controlpb.JobState_JOB_STATE_DONE, Committed: &controlpb.Committed{Step: 10, Epoch: 1}}}
	var out bytes.Buffer
	if err := printStatus(&out, js, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`epoch 1/1, step 10/10 \(committed 10\)`).MatchString(out.String()) {
		t.Fatalf("status of a done one-epoch job:\n%s", out.String())
	}
}

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/coordinator"
	"github.com/ringtrain/ringtrain/pkg/job"
)

func TestCheckOptions(t *testing.T) {
	base := options{workers: 2, memberTTL: 10 * time.Second, restartLimit: 5, restartBackoff: time.Second, restart: true}
	for _, c := range []struct {
		edit func(*options)
		want string
	}{
		{func(o *options) { o.workers = 100000 }, "--workers 100000: at most 256"},
		{func(o *options) { o.workers = 65 }, "--workers 65: at most --max-workers (64)"},
		{func(o *options) { o.workers = -1 }, "--workers -1 is negative"},
		{func(o *options) { o.raftPeers = []string{"a=x:1", "b=y:1"} }, "needs a shared etcd (--etcd-endpoints)"},
		{func(o *options) { o.timeout = -time.Second }, "--timeout -1s is negative"},
		{func(o *options) { o.memberTTL = 0 }, "--member-ttl 0s must be within [1s, 1h0m0s]"},
		{func(o *options) { o.restartBackoff = -1 }, "--restart-backoff -1ns is negative"},
		{func(o *options) { o.restartLimit = -1 }, "--restart-limit -1 is negative"},
		{func(o *options) { o.linger = true }, "--linger is for a coordinator whose workers run elsewhere"},
		{func(o *options) { o.workers, o.linger = 0, true }, ""},
		{func(o *options) {}, ""},
		{func(o *options) {
			o.raftPeers = []string{"a=x:1", "b=y:1"}
			o.etcdEndpoints = []string{"http://e:2379"}
		}, ""},
	} {
		o := base
		c.edit(&o)
		err := checkOptions(job.Default(), &o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("refused: %v", err)
		case c.want != "" && (!errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
	o := base
	o.restartLimit = 0
	if err := checkOptions(job.Default(), &o); err != nil || o.restart {
		t.Errorf("--restart-limit 0: err %v, restart %v (want no restarts)", err, o.restart)
	}
}

func TestCheckInputMemory(t *testing.T) {
	s := job.Default()
	img := imageShape{C: 3, H: 32, W: 32}
	s.GlobalBatch = 65536
	err := checkInputMemory(s, img, 2, 24<<30)
	if !errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), "needs about 36.5 GiB") {
		t.Fatalf("batch 65536 on 24 GiB: %v", err)
	}
	if err := checkInputMemory(s, img, 2, 64<<30); err != nil {
		t.Fatalf("batch 65536 on 64 GiB: %v", err)
	}
	if err := checkInputMemory(s, img, 0, 1<<30); err != nil {
		t.Fatalf("remote workers are not checked: %v", err)
	}
	s = job.Default() // the tutorial: batch 128, 2 workers
	if err := checkInputMemory(s, img, 2, 4<<30); err != nil {
		t.Fatalf("the tutorial on 4 GiB: %v", err)
	}
	s.Model.Stem = "cifar"
	s.GlobalBatch = 4096
	if err := checkInputMemory(s, img, 2, 16<<30); err == nil {
		t.Fatal("cifar stem, batch 4096 (about 26 GiB) accepted on 16 GiB")
	}
}

func TestClaimOutput(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "a", "state")
	os.MkdirAll(state, 0o755)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := claimOutput(state, a, false); err != nil {
		t.Fatal(err)
	}
	if err := claimOutput(state, a, false); err != nil {
		t.Fatalf("same output again: %v", err)
	}
	err := claimOutput(state, b, false)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--move-output") || !strings.Contains(err.Error(), a) {
		t.Fatalf("another output: %v", err)
	}
	if err := claimOutput(state, b, true); err != nil {
		t.Fatalf("--move-output: %v", err)
	}
	if err := claimOutput(state, b, false); err != nil {
		t.Fatalf("after the move, the new output is the job's: %v", err)
	}
}

// A run stopped early says how, where the job is and how it goes on.
func TestStoppedEarlySaysHowToResume(t *testing.T) {
	ran := coordinator.JobState{Ran: true, Committed: coordinator.Committed{Step: 850}}
	for _, c := range []struct {
		st   coordinator.JobState
		why  error
		want string
	}{
		{ran, context.Canceled, "interrupted at committed step 850: the same command with the same --output resumes from there"},
		{ran, context.DeadlineExceeded, "--timeout reached at committed step 850"},
		{coordinator.JobState{}, context.Canceled, "interrupted before the job started"},
	} {
		err := stoppedEarly(c.st, c.why)
		if !errors.Is(err, c.why) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.why, err, c.want)
		}
	}
}

package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// TestReportQueueLosesNothing: with the coordinator away (every send
// fails) far more reports than fit in memory are queued; they spill to
// disk, and once sends go through, every one arrives, once, in order.
func TestReportQueueLosesNothing(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "spool.bin")
	q := newReportQueue(8, spool)
	var mu sync.Mutex
	var got []int64
	up := make(chan struct{})
	send := func(ctx context.Context, m *controlpb.MetricsReport) error {
		select {
		case <-up:
		default:
			return errors.New("coordinator unreachable")
		}
		mu.Lock()
		got = append(got, m.GetStep())
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); q.deliver(ctx, send, nil) }()
	const n = 500
	for i := int64(1); i <= n; i++ {
		q.push(&controlpb.MetricsReport{WorkerId: "w0", Step: i, Phase: "train"})
	}
	if st, err := os.Stat(spool); err != nil || st.Size() == 0 {
		t.Fatalf("reports beyond the memory limit did not spill to disk: %v", err)
	}
	if q.len() != n {
		t.Fatalf("%d queued, want %d", q.len(), n)
	}
	close(up)
	if !q.wait(10 * time.Second) {
		t.Fatalf("%d reports still queued", q.len())
	}
	// Reports pushed while the spool drains go after it.
	q.push(&controlpb.MetricsReport{Step: n + 1})
	if !q.wait(5 * time.Second) {
		t.Fatal("last report not delivered")
	}
	cancel()
	<-done
	if len(got) != n+1 {
		t.Fatalf("%d delivered, want %d", len(got), n+1)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("report %d has step %d: out of order or repeated", i, s)
		}
	}
	if err := q.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Fatalf("spool left behind: %v", err)
	}
}

// TestReportQueueDropsOnlyRefused: a report the coordinator refuses as
// invalid is not retried forever.
func TestReportQueueDropsOnlyRefused(t *testing.T) {
	q := newReportQueue(4, filepath.Join(t.TempDir(), "spool.bin"))
	defer q.close()
	var sent []int64
	tries := 0
	send := func(ctx context.Context, m *controlpb.MetricsReport) error {
		tries++
		if m.GetStep() == 2 {
			return errPermanent
		}
		if tries == 1 {
			return errors.New("transient")
		}
		sent = append(sent, m.GetStep())
		return nil
	}
	for i := int64(1); i <= 3; i++ {
		q.push(&controlpb.MetricsReport{Step: i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go q.deliver(ctx, send, nil)
	if !q.wait(5 * time.Second) {
		t.Fatal("not drained")
	}
	if len(sent) != 2 || sent[0] != 1 || sent[1] != 3 {
		t.Fatalf("sent %v, want [1 3] (1 retried after a transient error, 2 refused)", sent)
	}
}

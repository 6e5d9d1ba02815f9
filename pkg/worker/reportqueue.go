package worker

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ringtrain/ringtrain/proto/controlpb"
)

// reportQueue holds metric reports until the coordinator has them. The
// newest memLimit wait in memory; beyond that, reports are appended to a
// spool file, so a long coordinator failover costs disk, never a report.
// Order is kept: once reports spill to disk, later ones follow them there
// until the spool is drained. Safe for concurrent use.
type reportQueue struct {
	memLimit  int
	spoolPath string

	mu      sync.Mutex // guards everything below
	mem     []*controlpb.MetricsReport
	spoolW  *os.File      // appends; nil until the first spill
	spoolR  *bufio.Reader // reads from the oldest unsent spooled report
	spoolRF *os.File
	spooled int // reports in the spool not yet taken
	head    *controlpb.MetricsReport
	cond    *sync.Cond // signalled on push and on every delivery
	closed  bool
	err     error // the spool's first error (reports are then dropped, with it)
	dropped int
}

// newReportQueue returns a queue spilling to spoolPath beyond memLimit
// reports in memory.
func newReportQueue(memLimit int, spoolPath string) *reportQueue {
	q := &reportQueue{memLimit: max(memLimit, 1), spoolPath: spoolPath}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues m; it never blocks on the network.
func (q *reportQueue) push(m *controlpb.MetricsReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if q.spooled == 0 && len(q.mem) < q.memLimit {
		q.mem = append(q.mem, m)
		q.cond.Broadcast()
		return
	}
	if err := q.spill(m); err != nil {
		if q.err == nil {
			q.err = err
		}
		q.dropped++
		return
	}
	q.cond.Broadcast()
}

// spill appends m to the spool (length-prefixed protobuf).
func (q *reportQueue) spill(m *controlpb.MetricsReport) error {
	if q.spoolW == nil {
		w, err := os.OpenFile(q.spoolPath, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("worker: report spool: %w", err)
		}
		r, err := os.Open(q.spoolPath)
		if err != nil {
			w.Close()
			return fmt.Errorf("worker: report spool: %w", err)
		}
		q.spoolW, q.spoolRF, q.spoolR = w, r, bufio.NewReader(r)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	var n [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(n[:], uint64(len(b)))
	if _, err := q.spoolW.Write(append(n[:k], b...)); err != nil {
		return fmt.Errorf("worker: report spool: %w", err)
	}
	q.spooled++
	return nil
}

// next waits for the oldest undelivered report (nil when ctx ends or the
// queue is closed and empty). It stays the oldest until done is called.
func (q *reportQueue) next(ctx context.Context) *controlpb.MetricsReport {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.head != nil {
			return q.head
		}
		if len(q.mem) > 0 {
			q.head = q.mem[0]
			return q.head
		}
		if q.spooled > 0 {
			m, err := q.readSpooled()
			if err == nil {
				q.head = m
				return m
			}
			if q.err == nil {
				q.err = err
			}
			q.dropped += q.spooled
			q.resetSpool()
			continue
		}
		if q.closed || ctx.Err() != nil {
			return nil
		}
		q.cond.Wait()
	}
}

func (q *reportQueue) readSpooled() (*controlpb.MetricsReport, error) {
	n, err := binary.ReadUvarint(q.spoolR)
	if err != nil {
		return nil, fmt.Errorf("worker: report spool: %w", err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(q.spoolR, b); err != nil {
		return nil, fmt.Errorf("worker: report spool: %w", err)
	}
	m := &controlpb.MetricsReport{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("worker: report spool: %w", err)
	}
	return m, nil
}

// resetSpool empties the spool file once everything in it was taken.
func (q *reportQueue) resetSpool() {
	q.spooled = 0
	if q.spoolW != nil {
		_ = q.spoolW.Truncate(0)
		_, _ = q.spoolW.Seek(0, io.SeekStart)
		_, _ = q.spoolRF.Seek(0, io.SeekStart)
		q.spoolR.Reset(q.spoolRF)
	}
}

// done marks the report returned by next as delivered.
func (q *reportQueue) done() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == nil {
		return
	}
	if len(q.mem) > 0 && q.mem[0] == q.head {
		q.mem[0] = nil
		q.mem = q.mem[1:]
	} else if q.spooled > 0 {
		q.spooled--
		if q.spooled == 0 {
			q.resetSpool()
		}
	}
	q.head = nil
	q.cond.Broadcast()
}

// len returns the number of undelivered reports.
func (q *reportQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.mem) + q.spooled
}

// wait waits until every report was delivered or d passed; it reports
// whether the queue is empty.
func (q *reportQueue) wait(d time.Duration) bool {
	deadline := time.Now().Add(d)
	t := time.AfterFunc(d, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer t.Stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.mem)+q.spooled > 0 && time.Now().Before(deadline) {
		q.cond.Wait()
	}
	return len(q.mem)+q.spooled == 0
}

// close stops accepting reports, wakes next, and removes the spool. It
// returns the spool's error, if any, with the count of reports lost to it.
func (q *reportQueue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
	if q.spoolW != nil {
		q.spoolW.Close()
		q.spoolRF.Close()
		os.Remove(q.spoolPath)
		q.spoolW = nil
	}
	if q.err != nil {
		return fmt.Errorf("%d reports lost: %w", q.dropped, q.err)
	}
	return nil
}

// deliver sends the queue's reports in order with send until ctx ends:
// a report that fails is sent again (after a pause growing to 2 s) until
// it goes through, unless send calls it invalid (errPermanent).
func (q *reportQueue) deliver(ctx context.Context, send func(context.Context, *controlpb.MetricsReport) error, onErr func(error)) {
	pause := 50 * time.Millisecond
	for {
		m := q.next(ctx)
		if m == nil {
			return
		}
		err := send(ctx, m)
		if err == nil || errors.Is(err, errPermanent) {
			if err != nil && onErr != nil {
				onErr(err)
			}
			q.done()
			pause = 50 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if onErr != nil {
			onErr(err)
		}
		sleepCtx(ctx, pause)
		pause = min(2*pause, 2*time.Second)
	}
}

// errPermanent marks a report the coordinator will never take.
var errPermanent = errors.New("worker: report refused")

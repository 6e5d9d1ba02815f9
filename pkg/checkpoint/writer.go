package checkpoint

import (
	"sync"
	"time"
)

// Writer writes snapshots in the background so that training stalls only
// for Capture (a device-to-host copy), not for serialisation and fsync. At
// most one snapshot waits while another is written; a newer submission
// replaces a waiting one (the newest state is the one worth keeping).
type Writer struct {
	store  Destination
	onDone func(Meta, Manifest, error)

	mu      sync.Mutex // guards pending, closed, submitted, finished, idle
	pending *Snapshot
	closed  bool
	wake    chan struct{}
	done    chan struct{}

	// submitted counts Submit calls; finished is the count that had been
	// submitted when the writer last found nothing pending after a write
	// (and its onDone) returned. idle is closed and replaced whenever
	// finished catches up with submitted.
	submitted, finished uint64
	idle                chan struct{}
}

// Destination is what a Writer writes to: a Store, or its in-memory twin
// MemStore.
type Destination interface {
	Write(*Snapshot) (Manifest, error)
}

// NewWriter starts the background writer. onDone is called on the writer's
// goroutine after every write (success or failure) with the written
// snapshot's metadata; it may be nil.
func NewWriter(s Destination, onDone func(Meta, Manifest, error)) *Writer {
	w := &Writer{store: s, onDone: onDone, wake: make(chan struct{}, 1), done: make(chan struct{}), idle: make(chan struct{})}
	go w.loop()
	return w
}

// Submit queues snap. It never blocks on disk.
func (w *Writer) Submit(snap *Snapshot) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.pending = snap
	w.submitted++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Writer) loop() {
	defer close(w.done)
	for range w.wake {
		for {
			w.mu.Lock()
			snap := w.pending
			w.pending = nil
			if snap == nil {
				w.finished = w.submitted
				close(w.idle)
				w.idle = make(chan struct{})
				w.mu.Unlock()
				break
			}
			w.mu.Unlock()
			m, err := w.store.Write(snap)
			if w.onDone != nil {
				w.onDone(snap.Meta, m, err)
			}
		}
		w.mu.Lock()
		closed := w.closed && w.pending == nil
		w.mu.Unlock()
		if closed {
			return
		}
	}
}

// WaitIdle waits until every snapshot submitted so far was written (or
// replaced by a newer one that was) and its onDone returned, or until d
// has passed. It reports whether the writer is idle. A caller that waits
// before each Submit bounds how far the durable state lags behind the
// newest snapshot: one snapshot at most.
func (w *Writer) WaitIdle(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if w.finished == w.submitted || w.closed {
			w.mu.Unlock()
			return w.finished == w.submitted
		}
		idle := w.idle
		w.mu.Unlock()
		select {
		case <-idle:
		case <-timer.C:
			return false
		}
	}
}

// Close writes what is pending and stops the writer. It is idempotent.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

package checkpoint

import (
	"sync"

	"github.com/ringtrain/ringtrain/pkg/cluster"
)

// Writer writes snapshots in the background so that training stalls only
// for Capture (a device-to-host copy), not for serialisation and fsync. At
// most one snapshot waits while another is written; a newer submission
// replaces a waiting one (the newest state is the one worth keeping).
type Writer struct {
	store  *Store
	onDone func(Meta, cluster.Manifest, error)

	mu      sync.Mutex // guards pending, closed
	pending *Snapshot
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// NewWriter starts the background writer. onDone is called on the writer's
// goroutine after every write (success or failure) with the written
// snapshot's metadata; it may be nil.
func NewWriter(s *Store, onDone func(Meta, cluster.Manifest, error)) *Writer {
	w := &Writer{store: s, onDone: onDone, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
			w.mu.Unlock()
			if snap == nil {
				break
			}
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

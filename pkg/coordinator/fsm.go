package coordinator

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// snapshotVersion is the format version of FSM snapshots.
const snapshotVersion = 1

// applyResult is what FSM.Apply returns for each log entry.
type applyResult struct {
	state JobState
	err   error
}

// FSM is the raft state machine over JobState. raft calls Apply, Snapshot
// and Restore from one goroutine; State and Watch may be called from any.
type FSM struct {
	mu      sync.Mutex    // guards state and changed
	state   JobState      // the applied state
	changed chan struct{} // closed and replaced after every change
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns the state machine of a fresh job.
func NewFSM() *FSM {
	return &FSM{state: initialState(), changed: make(chan struct{})}
}

// Apply decodes one JSON Command and applies it. It returns an applyResult
// holding the new state, or the command's error (the state is then
// unchanged).
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return applyResult{state: f.State()}
	}
	var cmd Command
	if err := json.Unmarshal(l.Data, &cmd); err != nil {
		return applyResult{state: f.State(), err: fmt.Errorf("%w: undecodable command at index %d: %w", ErrInvalid, l.Index, err)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next, err := apply(f.state, cmd)
	if err != nil {
		return applyResult{state: f.state.Clone(), err: err}
	}
	if next.Status == StatusFailed && f.state.Status != StatusFailed {
		next.FailedIndex = l.Index
	}
	f.state = next
	f.notifyLocked()
	return applyResult{state: next.Clone()}
}

func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// State returns a copy of the current state.
func (f *FSM) State() JobState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Clone()
}

// Watch returns the current state and a channel that is closed at the
// next change.
func (f *FSM) Watch() (JobState, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Clone(), f.changed
}

// snapshotFile is the JSON layout of a snapshot.
type snapshotFile struct {
	Version int      `json:"version"`
	State   JobState `json:"state"`
}

// Snapshot captures the current state.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	data, err := json.Marshal(snapshotFile{Version: snapshotVersion, State: f.State()})
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode snapshot: %w", err)
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var sf snapshotFile
	if err := json.NewDecoder(rc).Decode(&sf); err != nil {
		return fmt.Errorf("%w: decode snapshot: %w", ErrInvalid, err)
	}
	if sf.Version != snapshotVersion {
		return fmt.Errorf("%w: snapshot version %d, want %d", ErrInvalid, sf.Version, snapshotVersion)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = sf.State
	f.notifyLocked()
	return nil
}

// fsmSnapshot is a point-in-time encoded state.
type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("coordinator: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("coordinator: close snapshot: %w", err)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}

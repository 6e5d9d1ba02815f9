package worker

import (
	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/cluster"
)

// CheckpointStore is where checkpoints are written and read back.
// *checkpoint.Store (a directory) is the real one; checkpoint.MemStore the
// in-memory twin.
type CheckpointStore interface {
	// Write stores a snapshot durably and applies retention.
	Write(s *checkpoint.Snapshot) (cluster.Manifest, error)
	// Steps lists the steps that have a checkpoint, newest first.
	Steps() ([]int64, error)
	// LoadAtMost loads the newest checkpoint of configHash at or before
	// maxStep (any step when maxStep < 0) that verifies; skipped says
	// which newer ones were passed over and why.
	LoadAtMost(configHash string, maxStep int64) (*checkpoint.Loaded, []checkpoint.Skipped, error)
	// CleanOrphans removes what an interrupted write left; the store's
	// one writer (rank 0) calls it before it writes.
	CleanOrphans() error
	// Protect marks the job's committed step: retention never deletes
	// its checkpoint (it is what a worker restarting under the current
	// plan loads), replacing the step marked before.
	Protect(step int64)
	// Discard removes the checkpoint of step if plan generation gen wrote
	// it and it is not the protected step's (its commit was refused as
	// stale); it reports whether it did.
	Discard(step int64, gen uint64) (bool, error)
}

var (
	_ CheckpointStore = (*checkpoint.Store)(nil)
	_ CheckpointStore = (*checkpoint.MemStore)(nil)
)

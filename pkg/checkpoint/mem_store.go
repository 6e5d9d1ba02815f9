package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// MemStore is the in-memory twin of Store, for tests: checkpoints are
// encoded into the same files (kept as byte slices) with the same
// manifest, verified on load the same way, and Damage corrupts one as a
// bad disk would. It is safe for concurrent use.
type MemStore struct {
	Keep int // newest checkpoints kept (plus the protected one); < 1 means 3

	mu        sync.Mutex // guards steps, protected
	steps     map[int64]*memCheckpoint
	protected int64 // the step retention never deletes; -1: none
}

type memCheckpoint struct {
	manifest Manifest
	files    map[string][]byte
}

// NewMemStore returns an empty store keeping the newest keep checkpoints.
func NewMemStore(keep int) *MemStore {
	if keep < 1 {
		keep = 3
	}
	return &MemStore{Keep: keep, steps: map[int64]*memCheckpoint{}, protected: -1}
}

// Protect is Store.Protect: retention never deletes the checkpoint of
// step (the job's committed step); a negative step clears the mark.
func (s *MemStore) Protect(step int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.protected = max(step, -1)
}

// Write implements Destination: it encodes snap and applies retention.
func (s *MemStore) Write(snap *Snapshot) (Manifest, error) {
	c := &memCheckpoint{files: map[string][]byte{}}
	var files []ManifestFile
	put := func(name string, b []byte) {
		h := sha256.Sum256(b)
		c.files[name] = b
		files = append(files, ManifestFile{Name: name, Size: int64(len(b)), SHA256: hex.EncodeToString(h[:])})
	}
	var w bytes.Buffer
	if err := nn.EncodeSafetensors(&w, snap.Model, map[string]string{"format": "pt", "step": strconv.FormatInt(snap.Meta.Step, 10)}); err != nil {
		return Manifest{}, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	put(ModelFile, bytes.Clone(w.Bytes()))
	if snap.Optimizer != nil {
		w.Reset()
		if err := nn.EncodeSafetensors(&w, snap.Optimizer, snap.OptMeta); err != nil {
			return Manifest{}, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
		}
		put(OptimizerFile, bytes.Clone(w.Bytes()))
	}
	meta, err := json.Marshal(snap.Meta)
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	put(MetaFile, meta)
	c.manifest = Manifest{
		Step: snap.Meta.Step, Epoch: snap.Meta.Epoch, Cursor: snap.Meta.Cursor,
		Dir: fmt.Sprintf("mem:%s%010d", dirPrefix, snap.Meta.Step), Files: files, WorldSize: max(snap.Meta.WorldSize, 1),
		ConfigHash: snap.Meta.ConfigHash, Accuracy: snap.Meta.Accuracy, Created: snap.Meta.Created,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps[snap.Meta.Step] = c
	keep := s.Keep
	if keep < 1 {
		keep = 3
	}
	steps := s.sortedLocked()
	for _, st := range steps[min(keep, len(steps)):] {
		if st != s.protected {
			delete(s.steps, st)
		}
	}
	return c.manifest, nil
}

// generation is the plan generation in the checkpoint's meta.
func (c *memCheckpoint) generation() (uint64, bool) {
	var m Meta
	if json.Unmarshal(c.files[MetaFile], &m) != nil {
		return 0, false
	}
	return m.Generation, true
}

// Discard is Store.Discard.
func (s *MemStore) Discard(step int64, gen uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.steps[step]
	if c == nil || step == s.protected {
		return false, nil
	}
	if g, ok := c.generation(); !ok || g != gen {
		return false, nil
	}
	delete(s.steps, step)
	return true, nil
}

// Damage flips a byte of the model file of step's checkpoint, as a bad
// disk would; it reports whether there was such a checkpoint.
func (s *MemStore) Damage(step int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.steps[step]
	if !ok {
		return false
	}
	b := c.files[ModelFile]
	b[len(b)/2] ^= 0xff
	return true
}

func (s *MemStore) sortedLocked() []int64 {
	steps := make([]int64, 0, len(s.steps))
	for st := range s.steps {
		steps = append(steps, st)
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i] > steps[j] })
	return steps
}

// CleanOrphans implements the Store method: an in-memory write cannot be
// interrupted half-way, so there is nothing to clean.
func (s *MemStore) CleanOrphans() error { return nil }

// Steps lists the steps that have a checkpoint, newest first.
func (s *MemStore) Steps() ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedLocked(), nil
}

// Load verifies and decodes the checkpoint of step.
func (s *MemStore) Load(step int64) (*Loaded, error) {
	s.mu.Lock()
	c, ok := s.steps[step]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: step %d", ErrNotFound, step)
	}
	for _, f := range c.manifest.Files {
		h := sha256.Sum256(c.files[f.Name])
		if got := hex.EncodeToString(h[:]); got != f.SHA256 {
			return nil, fmt.Errorf("%w: step %d: %s: SHA-256 %s, manifest says %s", ErrCorrupt, step, f.Name, got[:12], f.SHA256[:12])
		}
	}
	l := &Loaded{Manifest: c.manifest}
	if err := json.Unmarshal(c.files[MetaFile], &l.Meta); err != nil {
		return nil, fmt.Errorf("%w: step %d: %s: %v", ErrCorrupt, step, MetaFile, err)
	}
	var err error
	if l.Weights, err = nn.ParseSafetensors(c.files[ModelFile]); err != nil {
		return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
	}
	if b, ok := c.files[OptimizerFile]; ok {
		st, err := nn.ParseSafetensors(b)
		if err != nil {
			return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
		}
		if l.Optimizer, err = nn.OptimizerStateFrom(st); err != nil {
			return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
		}
	}
	return l, nil
}

// LoadAtMost is Store.LoadAtMost over the in-memory checkpoints.
func (s *MemStore) LoadAtMost(configHash string, maxStep int64) (*Loaded, []Skipped, error) {
	return loadAtMost(s, configHash, maxStep, "memory")
}

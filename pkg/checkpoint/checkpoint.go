// Package checkpoint turns a worker's full training state into files and
// back: parameters and batch-norm buffers as safetensors with torchvision
// names (so safetensors.torch.load_file + load_state_dict works in
// PyTorch), optimizer state as a second safetensors file, and everything
// else (step, epoch, data cursor, seeds, schedule position, configuration
// hash) as JSON.
//
// Promises:
//   - A checkpoint directory appears under its final name only when all of
//     its files are written and fsynced (write into a temporary directory,
//     fsync every file, rename, fsync the parent). A crash or a full disk
//     leaves the previous checkpoints untouched.
//   - Every file's SHA-256 is recorded in the checkpoint's MANIFEST.json and
//     verified on load; a checkpoint that fails verification is never
//     loaded, and LoadLatest falls back to older ones, saying why.
//   - Retention keeps the newest Keep checkpoints plus the one with the best
//     accuracy, and never deletes the checkpoint of the protected step (the
//     job's committed step, see Store.Protect), however old it is.
//   - Discard removes a checkpoint whose commit the control plane refused
//     as stale (a state of an abandoned plan), when it is that plan's.
package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
	"github.com/ringtrain/ringtrain/pkg/nn"
)

// Errors.
var (
	ErrCorrupt  = manifest.ErrCorrupt
	ErrNotFound = errors.New("checkpoint: none found")
	ErrMismatch = errors.New("checkpoint: does not match this job")
)

// File names inside a checkpoint directory.
const (
	ModelFile     = "model.safetensors"
	OptimizerFile = "optimizer.safetensors"
	MetaFile      = manifest.MetaFile
	ManifestName  = manifest.FileName
	dirPrefix     = manifest.DirPrefix
)

// Manifest describes one checkpoint (MANIFEST.json); ManifestFile is one
// of its files. See package manifest.
type (
	Manifest     = manifest.Manifest
	ManifestFile = manifest.File
)

// Meta is the non-tensor part of the training state (meta.json; see
// package manifest).
type Meta = manifest.Meta

// Snapshot is a host copy of the training state, taken between steps.
// Capturing is the only part that stalls training; writing it can run in
// the background.
type Snapshot struct {
	Meta      Meta
	Model     []*nn.STTensor
	Optimizer []*nn.STTensor
	OptMeta   map[string]string
}

// Capture copies the model's parameters and buffers and the optimizer's
// state into host memory. opt may be nil (weights only).
func Capture(b nn.Backend, params []*nn.Param, buffers []*nn.Buffer, opt nn.Optimizer, meta Meta) (*Snapshot, error) {
	model, err := nn.WeightTensors(b, params, buffers)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: capture weights: %w", err)
	}
	s := &Snapshot{Meta: meta, Model: model}
	if opt != nil {
		st, err := opt.State()
		if err != nil {
			return nil, fmt.Errorf("checkpoint: capture optimizer: %w", err)
		}
		s.Optimizer, s.OptMeta, err = nn.OptimizerStateTensors(st)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: capture optimizer: %w", err)
		}
	}
	if s.Meta.Created.IsZero() {
		s.Meta.Created = time.Now().UTC()
	}
	return s, nil
}

// Store is a directory of checkpoints.
type Store struct {
	Dir  string
	Keep int // newest checkpoints kept (plus the best and the protected one); < 1 means 3

	mu        sync.Mutex // guards protected, protectOn
	protected int64      // the step retention never deletes, when protectOn
	protectOn bool

	// rename and removeAll are the file operations of Write's and
	// CleanOrphans' renames and removals (nil: os.Rename, os.RemoveAll);
	// tests make them fail.
	rename    func(oldpath, newpath string) error
	removeAll func(path string) error
}

func (s *Store) osRename(oldpath, newpath string) error {
	if s.rename != nil {
		return s.rename(oldpath, newpath)
	}
	return os.Rename(oldpath, newpath)
}

func (s *Store) osRemoveAll(path string) error {
	if s.removeAll != nil {
		return s.removeAll(path)
	}
	return os.RemoveAll(path)
}

// Protect marks step as the one checkpoint retention never deletes,
// replacing the step marked before: the caller passes the job's committed
// step whenever it learns it, because that is the state every worker
// (re)starting under the current plan loads, even when newer checkpoints
// were written whose commits the control plane refused. A negative step
// clears the mark. It is safe to call while a write runs.
func (s *Store) Protect(step int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.protected, s.protectOn = step, step >= 0
}

// protectedStep returns the protected step, or -1 when none is.
func (s *Store) protectedStep() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.protectOn {
		return -1
	}
	return s.protected
}

// NewStore creates dir if needed.
func NewStore(dir string, keep int) (*Store, error) {
	if keep < 1 {
		keep = 3
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return &Store{Dir: dir, Keep: keep}, nil
}

// oldSuffix marks the previous checkpoint of a step while a new one of the
// same step replaces it.
const oldSuffix = ".old"

// CleanOrphans removes what an interrupted Write left in the directory:
// temporary directories, and the previous copy of a replaced checkpoint
// (put back under its name when the replacement never got there). Only
// the store's one writer may call it, before it writes.
func (s *Store) CleanOrphans() error {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(s.Dir, name)
		switch {
		case !e.IsDir():
		case strings.HasPrefix(name, ".tmp-"+dirPrefix):
			if err := s.osRemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(name, dirPrefix) && strings.HasSuffix(name, oldSuffix):
			final := strings.TrimSuffix(path, oldSuffix)
			if _, err := os.Stat(final); errors.Is(err, os.ErrNotExist) {
				if err := s.osRename(path, final); err != nil {
					errs = append(errs, err)
				}
			} else if err := s.osRemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("checkpoint: clean %s: %w", s.Dir, err)
	}
	return nil
}

// StepDir is the directory of the checkpoint of a step.
func (s *Store) StepDir(step int64) string {
	return manifest.Dir(s.Dir, step)
}

// Write stores snap atomically and applies retention. It returns the
// manifest (also written as MANIFEST.json inside the directory). On any
// error the previous checkpoints are intact and no partial directory is
// left under a final name.
func (s *Store) Write(snap *Snapshot) (m Manifest, err error) {
	final := s.StepDir(snap.Meta.Step)
	tmp, err := os.MkdirTemp(s.Dir, ".tmp-"+filepath.Base(final)+"-")
	if err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	defer func() {
		if err != nil {
			if rerr := s.osRemoveAll(tmp); rerr != nil {
				err = errors.Join(err, fmt.Errorf("checkpoint: remove %s: %w (removed when the next writer starts)", tmp, rerr))
			}
		}
	}()
	// MkdirTemp makes it 0700; the checkpoint is an output like the final
	// model (0644, see atomicfile): others on a shared volume read it.
	if err = os.Chmod(tmp, 0o755); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	var files []ManifestFile
	put := func(name string, write func(io.Writer) error) error {
		f, err := os.OpenFile(filepath.Join(tmp, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		if err := write(cw); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("%s: fsync: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		files = append(files, ManifestFile{Name: name, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}
	if err = put(ModelFile, func(w io.Writer) error {
		return nn.EncodeSafetensors(w, snap.Model, map[string]string{"format": "pt", "step": strconv.FormatInt(snap.Meta.Step, 10)})
	}); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	if snap.Optimizer != nil {
		if err = put(OptimizerFile, func(w io.Writer) error { return nn.EncodeSafetensors(w, snap.Optimizer, snap.OptMeta) }); err != nil {
			return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
		}
	}
	if err = put(MetaFile, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(snap.Meta)
	}); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	m = Manifest{
		Step: snap.Meta.Step, Epoch: snap.Meta.Epoch, Cursor: snap.Meta.Cursor,
		Dir: final, Files: files, WorldSize: max(snap.Meta.WorldSize, 1),
		ConfigHash: snap.Meta.ConfigHash, Accuracy: snap.Meta.Accuracy, Created: snap.Meta.Created,
	}
	if err = put(ManifestName, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	if err = syncDir(tmp); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	// A checkpoint of the same step (a re-run after a rollback) is replaced.
	// Generations are not compared: they count from 1 again when a job is
	// started on a new state directory over an old output directory.
	old := ""
	if _, statErr := os.Stat(final); statErr == nil {
		old = final + oldSuffix
		if err = s.osRemoveAll(old); err != nil {
			return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
		}
		if err = s.osRename(final, old); err != nil {
			return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
		}
	}
	if err = s.osRename(tmp, final); err != nil {
		if old != "" {
			if rerr := s.osRename(old, final); rerr != nil {
				// The previous checkpoint of this step stays as old;
				// CleanOrphans puts it back.
				err = errors.Join(err, fmt.Errorf("put back %s: %w", old, rerr))
			}
		}
		return m, fmt.Errorf("checkpoint: step %d: rename: %w", snap.Meta.Step, err)
	}
	if old != "" {
		// The new checkpoint is in place: a leftover old copy only
		// takes space, and CleanOrphans removes it.
		_ = s.osRemoveAll(old)
	}
	if err = syncDir(s.Dir); err != nil {
		return m, fmt.Errorf("checkpoint: step %d: %w", snap.Meta.Step, err)
	}
	s.retain()
	return m, nil
}

// dirGeneration reads the plan generation of the checkpoint in dir; false
// when there is none or its meta cannot be read.
func dirGeneration(dir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return 0, false
	}
	var m Meta
	if json.Unmarshal(b, &m) != nil {
		return 0, false
	}
	return m.Generation, true
}

// Discard removes the checkpoint of step when it was written under plan
// generation gen (the control plane refused to commit it: a newer plan
// replaced that one) and is not the protected step's. It reports whether
// it removed one; a checkpoint of another generation is left alone.
func (s *Store) Discard(step int64, gen uint64) (bool, error) {
	dir := s.StepDir(step)
	if g, ok := dirGeneration(dir); !ok || g != gen || step == s.protectedStep() {
		return false, nil
	}
	if err := s.osRemoveAll(dir); err != nil {
		return false, fmt.Errorf("checkpoint: discard step %d: %w", step, err)
	}
	if err := syncDir(s.Dir); err != nil {
		return true, fmt.Errorf("checkpoint: discard step %d: %w", step, err)
	}
	return true, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Info describes a checkpoint on disk.
type Info struct {
	Step     int64
	Dir      string
	Manifest Manifest
	Verified error // nil when every file's size and SHA-256 match
}

// Steps lists the steps that have a checkpoint directory, newest first.
func (s *Store) Steps() ([]int64, error) { return manifest.Steps(s.Dir) }

// List returns every checkpoint, newest first, each verified.
func (s *Store) List() ([]Info, error) {
	steps, err := s.Steps()
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(steps))
	for _, st := range steps {
		m, verr := s.Verify(st)
		out = append(out, Info{Step: st, Dir: s.StepDir(st), Manifest: m, Verified: verr})
	}
	return out, nil
}

// Verify reads the checkpoint's manifest and checks every file's size and
// SHA-256. Errors wrap ErrCorrupt and name the file.
func (s *Store) Verify(step int64) (Manifest, error) { return manifest.Verify(s.Dir, step) }

// Loaded is a verified checkpoint read into host memory.
type Loaded struct {
	Meta      Meta
	Manifest  Manifest
	Weights   *nn.Safetensors
	Optimizer *nn.OptimizerState // nil for weights-only checkpoints
}

// Load verifies and reads the checkpoint of step.
func (s *Store) Load(step int64) (*Loaded, error) {
	m, err := s.Verify(step)
	if err != nil {
		return nil, err
	}
	dir := s.StepDir(step)
	l := &Loaded{Manifest: m}
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
	}
	if err := json.Unmarshal(b, &l.Meta); err != nil {
		return nil, fmt.Errorf("%w: step %d: %s: %v", ErrCorrupt, step, MetaFile, err)
	}
	if l.Weights, err = nn.ReadSafetensorsFile(filepath.Join(dir, ModelFile)); err != nil {
		return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
	}
	for _, f := range m.Files {
		if f.Name == OptimizerFile {
			st, err := nn.ReadSafetensorsFile(filepath.Join(dir, OptimizerFile))
			if err != nil {
				return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
			}
			if l.Optimizer, err = nn.OptimizerStateFrom(st); err != nil {
				return nil, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
			}
		}
	}
	return l, nil
}

// Skipped says why a newer checkpoint was not used.
type Skipped struct {
	Step int64
	Err  error
}

// LoadLatest loads the newest checkpoint that verifies and, when
// configHash is not empty, belongs to a job with that hash. skipped lists
// the newer ones it passed over and why (for a log line each). It returns
// ErrNotFound when none qualifies.
func (s *Store) LoadLatest(configHash string) (l *Loaded, skipped []Skipped, err error) {
	return s.LoadAtMost(configHash, -1)
}

// LoadAtMost is LoadLatest restricted to checkpoints of steps <= maxStep
// (no limit when maxStep < 0): the newest usable state not ahead of a
// committed step.
func (s *Store) LoadAtMost(configHash string, maxStep int64) (l *Loaded, skipped []Skipped, err error) {
	return loadAtMost(s, configHash, maxStep, s.Dir)
}

// loadAtMost is LoadAtMost over any store that lists and loads steps;
// where names it in the error.
func loadAtMost(s interface {
	Steps() ([]int64, error)
	Load(int64) (*Loaded, error)
}, configHash string, maxStep int64, where string) (l *Loaded, skipped []Skipped, err error) {
	steps, err := s.Steps()
	if err != nil {
		return nil, nil, err
	}
	for _, st := range steps {
		if maxStep >= 0 && st > maxStep {
			continue
		}
		l, err := s.Load(st)
		if err == nil && configHash != "" && l.Meta.ConfigHash != configHash {
			err = fmt.Errorf("%w: step %d has config hash %.12s, this job %.12s", ErrMismatch, st, l.Meta.ConfigHash, configHash)
		}
		if err != nil {
			skipped = append(skipped, Skipped{Step: st, Err: err})
			continue
		}
		return l, skipped, nil
	}
	return nil, skipped, notFound(where, maxStep, skipped)
}

// notFound is the error of a search that found no usable checkpoint: when
// some exist, it says how many and why the newest was refused, wrapping
// that error too (ErrCorrupt for a damaged one: it does not heal, so
// retrying is pointless).
func notFound(where string, maxStep int64, skipped []Skipped) error {
	if len(skipped) == 0 {
		if maxStep >= 0 {
			return fmt.Errorf("%w at or before step %d in %s", ErrNotFound, maxStep, where)
		}
		return fmt.Errorf("%w in %s", ErrNotFound, where)
	}
	newest := skipped[0]
	return fmt.Errorf("%w usable in %s: all %d checkpoint(s) there were refused; the newest, step %d: %w",
		ErrNotFound, where, len(skipped), newest.Step, newest.Err)
}

// Apply loads the checkpoint's weights (and optimizer state, when opt is
// not nil and the checkpoint has one) into a model on backend b.
func (l *Loaded) Apply(b nn.Backend, params []*nn.Param, buffers []*nn.Buffer, opt nn.Optimizer) error {
	if err := nn.ApplyWeights(l.Weights, b, params, buffers, nn.LoadOptions{}); err != nil {
		return fmt.Errorf("checkpoint: step %d: %w", l.Meta.Step, err)
	}
	if opt != nil && l.Optimizer != nil {
		if err := opt.LoadState(l.Optimizer); err != nil {
			return fmt.Errorf("checkpoint: step %d: %w", l.Meta.Step, err)
		}
	}
	return nil
}

// retain deletes all but the newest Keep checkpoints, the best one and
// the protected one. Failures are ignored: retention never endangers a
// newer checkpoint.
func (s *Store) retain() {
	keep := s.Keep
	if keep < 1 {
		keep = 3
	}
	steps, err := s.Steps()
	if err != nil || len(steps) <= keep {
		return
	}
	protected := s.protectedStep()
	best, bestAcc := int64(-1), -1.0
	for _, st := range steps {
		b, err := os.ReadFile(filepath.Join(s.StepDir(st), MetaFile))
		if err != nil {
			continue
		}
		var m Meta
		if json.Unmarshal(b, &m) == nil && m.Accuracy != nil && *m.Accuracy > bestAcc {
			best, bestAcc = st, *m.Accuracy
		}
	}
	for _, st := range steps[keep:] {
		if st != best && st != protected {
			_ = os.RemoveAll(s.StepDir(st)) // what is left is retried at the next write
		}
	}
}

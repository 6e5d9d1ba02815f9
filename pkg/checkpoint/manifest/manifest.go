// Package manifest is the on-disk description of a checkpoint, owned by
// pkg/checkpoint: the MANIFEST.json of each checkpoint directory, with
// every file's size and SHA-256, and the check of a directory against
// it. It depends on nothing of the engine, so the coordinator (which
// lists checkpoints) and pkg/cluster (which records manifests in etcd)
// use it without linking the training engine.
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Errors.
var (
	// ErrInvalid reports a malformed manifest.
	ErrInvalid = errors.New("checkpoint: invalid manifest")
	// ErrCorrupt reports a checkpoint whose files do not match its
	// manifest (the same value as checkpoint.ErrCorrupt).
	ErrCorrupt = errors.New("checkpoint: corrupt")
)

// FileName is the manifest's name inside a checkpoint directory.
const FileName = "MANIFEST.json"

// MetaFile holds a checkpoint's Meta as JSON.
const MetaFile = "meta.json"

// Meta is the non-tensor part of the training state.
type Meta struct {
	Step int64 `json:"step"` // optimizer steps completed
	// Generation is the plan generation whose ring computed this state
	// (0 when unknown). A state is committed only under that generation.
	Generation  uint64            `json:"generation,omitempty"`
	Epoch       int64             `json:"epoch"`  // epoch the cursor is in
	Cursor      int64             `json:"cursor"` // samples of that epoch already consumed (global)
	WorldSize   int               `json:"world_size"`
	ConfigHash  string            `json:"config_hash"`
	Seed        int64             `json:"seed"`
	DropoutStep int64             `json:"dropout_step"`
	LR          float64           `json:"lr"`
	Accuracy    *float64          `json:"accuracy,omitempty"` // test accuracy when evaluated at this step
	Loss        *float64          `json:"loss,omitempty"`
	Created     time.Time         `json:"created"`
	Extra       map[string]string `json:"extra,omitempty"`
}

// ReadMeta reads the Meta of step's checkpoint under root (unverified:
// for reports; loading verifies the files first).
func ReadMeta(root string, step int64) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(Dir(root, step), MetaFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: step %d: %s: %v", ErrCorrupt, step, MetaFile, err)
	}
	return m, nil
}

// DirPrefix starts the name of every checkpoint directory.
const DirPrefix = "ckpt-"

// Dir is the directory of step's checkpoint under root.
func Dir(root string, step int64) string {
	return filepath.Join(root, fmt.Sprintf("%s%010d", DirPrefix, step))
}

// Steps lists the steps that have a checkpoint directory under root,
// newest first; none when root does not exist.
func Steps(root string) ([]int64, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var steps []int64
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), DirPrefix) {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), DirPrefix), 10, 64)
		if err == nil && n >= 0 {
			steps = append(steps, n)
		}
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i] > steps[j] })
	return steps, nil
}

// File is one file of a checkpoint.
type File struct {
	Name   string `json:"name"`   // path relative to the checkpoint directory
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // lower-case hex, 64 characters
}

// Manifest describes one checkpoint: MANIFEST.json in its directory, and
// (through pkg/cluster) the job's checkpoint record in etcd.
type Manifest struct {
	Step       int64  `json:"step"`
	Epoch      int64  `json:"epoch"`
	Cursor     int64  `json:"cursor"` // global sample cursor within the epoch
	Dir        string `json:"dir,omitempty"`
	Files      []File `json:"files"`
	WorldSize  int    `json:"world_size"`
	ConfigHash string `json:"config_hash"`
	// Accuracy is the test accuracy at this step, if evaluated (else nil).
	Accuracy *float64  `json:"accuracy,omitempty"`
	Created  time.Time `json:"created"`
}

// Validate checks that a manifest is complete and well formed.
func (m Manifest) Validate() error {
	if m.Step < 0 || m.Epoch < 0 || m.Cursor < 0 {
		return fmt.Errorf("%w: manifest has negative step/epoch/cursor (%d/%d/%d)", ErrInvalid, m.Step, m.Epoch, m.Cursor)
	}
	if m.WorldSize < 1 {
		return fmt.Errorf("%w: manifest of step %d has world size %d", ErrInvalid, m.Step, m.WorldSize)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("%w: manifest of step %d lists no files", ErrInvalid, m.Step)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if f.Name == "" {
			return fmt.Errorf("%w: manifest of step %d has a file without a name", ErrInvalid, m.Step)
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: manifest of step %d lists %q twice", ErrInvalid, m.Step, f.Name)
		}
		seen[f.Name] = true
		if f.Size < 0 {
			return fmt.Errorf("%w: file %q has negative size", ErrInvalid, f.Name)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != 32 || f.SHA256 != hex.EncodeToString(b) {
			return fmt.Errorf("%w: file %q: SHA-256 %q is not 64 lower-case hex digits", ErrInvalid, f.Name, f.SHA256)
		}
	}
	return nil
}

// TotalSize returns the sum of the files' sizes.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Verify reads the manifest of step's checkpoint under root and checks
// every file's size and SHA-256. Errors wrap ErrCorrupt and name the file.
func Verify(root string, step int64) (Manifest, error) {
	dir := Dir(root, step)
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return m, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: step %d: %s: %v", ErrCorrupt, step, FileName, err)
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
	}
	if m.Step != step {
		return m, fmt.Errorf("%w: directory of step %d holds the manifest of step %d", ErrCorrupt, step, m.Step)
	}
	for _, f := range m.Files {
		if err := verifyFile(filepath.Join(dir, f.Name), f); err != nil {
			return m, fmt.Errorf("%w: step %d: %v", ErrCorrupt, step, err)
		}
	}
	return m, nil
}

func verifyFile(path string, want File) error {
	if strings.ContainsAny(want.Name, `/\`) || want.Name == ".." {
		return fmt.Errorf("manifest names an unsafe file %q", want.Name)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("%s: %v", want.Name, err)
	}
	if n != want.Size {
		return fmt.Errorf("%s: %d bytes, manifest says %d", want.Name, n, want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("%s: SHA-256 %s, manifest says %s", want.Name, got[:12], want.SHA256[:12])
	}
	return nil
}

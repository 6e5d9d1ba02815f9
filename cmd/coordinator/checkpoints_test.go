package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
)

// writeCheckpoint writes a small checkpoint directory of step by hand: a
// model file, meta.json and a MANIFEST.json with their SHA-256.
func writeCheckpoint(t *testing.T, root string, step, epoch int64, acc *float64) string {
	t.Helper()
	dir := manifest.Dir(root, step)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(manifest.Meta{Step: step, Epoch: epoch, WorldSize: 2, Accuracy: acc, Created: time.Now()})
	files := map[string][]byte{"model.safetensors": bytes.Repeat([]byte{byte(step)}, 1000), manifest.MetaFile: meta}
	m := manifest.Manifest{Step: step, Epoch: epoch, WorldSize: 2, Accuracy: acc, Created: time.Now()}
	for _, name := range []string{"model.safetensors", manifest.MetaFile} {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(files[name])
		m.Files = append(m.Files, manifest.File{Name: name, Size: int64(len(files[name])), SHA256: hex.EncodeToString(sum[:])})
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, manifest.FileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runCheckpoints(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := checkpointsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestCheckpointsListsTheDirectory: 'coordinator checkpoints' lists what
// is in <output>/checkpoints, each verified, from the directory alone:
// without the job's state directory (lost, or held by the running
// coordinator), and without creating one. Before 2026-12-06 it listed
// the records of the job's embedded etcd: it waited while a job ran (the
// etcd's files are locked) until the job ended, showed an empty table
// when the state directory was lost though checkpoints were there, and
// for a mistyped --output created <output>/state with a new etcd and
// printed an empty table, exit 0.
func TestCheckpointsListsTheDirectory(t *testing.T) {
	out := t.TempDir()
	root := filepath.Join(out, "checkpoints")
	acc := 0.5
	writeCheckpoint(t, root, 10, 1, &acc)
	bad := writeCheckpoint(t, root, 20, 1, nil)
	if err := os.WriteFile(filepath.Join(bad, "model.safetensors"), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	noManifest := writeCheckpoint(t, root, 30, 2, nil)
	if err := os.Remove(filepath.Join(noManifest, manifest.FileName)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(manifest.Dir(root, 40), 0o755); err != nil { // an empty directory
		t.Fatal(err)
	}

	got, err := runCheckpoints(t, "--output", out)
	if err != nil {
		t.Fatalf("checkpoints: %v\n%s", err, got)
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "STEP") {
		t.Fatalf("want a header and 4 rows, got:\n%s", got)
	}
	for i, c := range []struct{ prefix, has string }{
		{"10 ", "50.00%"},
		{"20 ", "NO: checkpoint: corrupt: step 20: model.safetensors: 5 bytes, manifest says 1000"},
		{"30 ", "NO: checkpoint: corrupt: step 30"},
		{"40 ", "NO: checkpoint: corrupt: step 40"},
	} {
		l := lines[i+1]
		if !strings.HasPrefix(l, c.prefix) || !strings.Contains(l, c.has) {
			t.Errorf("row %d: want %q... with %q, got %q", i+1, c.prefix, c.has, l)
		}
	}
	if !strings.HasSuffix(lines[1], "yes") {
		t.Errorf("intact checkpoint not verified: %q", lines[1])
	}
	if f := strings.Fields(lines[3]); len(f) < 2 || f[1] != "2" {
		t.Errorf("checkpoint without a manifest: want its epoch (2) from meta.json, got %q", lines[3])
	}
	if _, err := os.Stat(filepath.Join(out, "state")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("listing created a state directory (stat: %v)", err)
	}

	// A mistyped --output: an error naming the directory, nothing created.
	missing := filepath.Join(t.TempDir(), "no-such-run")
	got, err = runCheckpoints(t, "--output", missing)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(missing, "checkpoints")+" does not exist") {
		t.Errorf("missing output directory: err %v, output %q", err, got)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("listing created %s (stat: %v)", missing, err)
	}

	// A job that has not written one yet.
	empty := t.TempDir()
	if err := os.MkdirAll(filepath.Join(empty, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := runCheckpoints(t, "--output", empty); err != nil || !strings.Contains(got, "no checkpoints in") {
		t.Errorf("empty checkpoints directory: err %v, output %q", err, got)
	}
}

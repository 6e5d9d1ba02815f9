package checkpoint

import (
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/nn"
)

// trained returns a tiny model and optimizer after two SGD steps, so that
// weights, BN buffers and momentum buffers are all non-trivial.
func trained(t *testing.T, seed int64) (*nn.Model, nn.Optimizer) {
	t.Helper()
	b := nn.NewCPU(1)
	m, err := nn.NewResNet(b, nn.ResNetConfig{Depth: 18, Stem: "cifar", Width: 1.0 / 16, Classes: 10, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	opt, err := nn.NewSGD(b, m.Params(), nn.SGDConfig{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	x := nn.NewTensor(4, 3, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	labels := []int32{1, 2, 3, 4}
	ce := &nn.CrossEntropy{}
	m.SetTrain(true)
	for step := 0; step < 2; step++ {
		logits, err := m.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		_, dl, err := ce.Compute(b, logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(dl); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
	}
	return m, opt
}

func capture(t *testing.T, m *nn.Model, opt nn.Optimizer, step int64, acc float64) *Snapshot {
	t.Helper()
	s, err := Capture(m.Backend(), m.Params(), m.Buffers(), opt, Meta{Step: step, Epoch: 1, Cursor: 256, WorldSize: 2, ConfigHash: "abc", Seed: 7, Accuracy: &acc})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func equalState(t *testing.T, a, b *nn.Model) {
	t.Helper()
	pa, pb := a.ParamsFlat().Data, b.ParamsFlat().Data
	for i := range pa {
		if pa[i] != pb[i] {
			t.Fatalf("param %d differs: %v vs %v", i, pa[i], pb[i])
		}
	}
	ba, bb := a.BuffersFlat().Data, b.BuffersFlat().Data
	for i := range ba {
		if ba[i] != bb[i] {
			t.Fatalf("buffer %d differs", i)
		}
	}
	for i, buf := range a.Buffers() {
		if buf.Count != nil && *buf.Count != *b.Buffers()[i].Count {
			t.Fatalf("%s differs", buf.Name)
		}
	}
}

func TestWriteLoadRoundTripIsExact(t *testing.T) {
	m, opt := trained(t, 1)
	st, err := NewStore(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	man, err := st.Write(capture(t, m, opt, 10, 0.5))
	if err != nil {
		t.Fatal(err)
	}
	if man.Step != 10 || len(man.Files) != 3 || man.WorldSize != 2 {
		t.Fatalf("manifest: %+v", man)
	}
	l, skipped, err := st.LoadLatest("abc")
	if err != nil || len(skipped) != 0 {
		t.Fatalf("load: %v %v", err, skipped)
	}
	if l.Meta.Step != 10 || l.Meta.Cursor != 256 || l.Meta.Seed != 7 || *l.Meta.Accuracy != 0.5 {
		t.Fatalf("meta: %+v", l.Meta)
	}
	m2, opt2 := trained(t, 2) // different weights and optimizer state
	if err := l.Apply(m2.Backend(), m2.Params(), m2.Buffers(), opt2); err != nil {
		t.Fatal(err)
	}
	equalState(t, m, m2)
	s1, _ := opt.State()
	s2, _ := opt2.State()
	for k, v := range s1.Tensors {
		w := s2.Tensors[k]
		for i := range v.Data {
			if v.Data[i] != w.Data[i] {
				t.Fatalf("optimizer %s[%d] differs", k, i)
			}
		}
	}
}

func TestCorruptNewestFallsBackToPrevious(t *testing.T) {
	for _, damage := range []string{"flip", "truncate", "delete"} {
		t.Run(damage, func(t *testing.T) {
			m, opt := trained(t, 1)
			st, _ := NewStore(t.TempDir(), 5)
			if _, err := st.Write(capture(t, m, opt, 10, 0.1)); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(capture(t, m, opt, 20, 0.2)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(st.StepDir(20), ModelFile)
			b, _ := os.ReadFile(p)
			switch damage {
			case "flip":
				b[len(b)/2] ^= 0x40
				os.WriteFile(p, b, 0o644)
			case "truncate":
				os.WriteFile(p, b[:len(b)-100], 0o644)
			case "delete":
				os.Remove(p)
			}
			if _, err := st.Verify(20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("verify of damaged checkpoint: %v", err)
			}
			l, skipped, err := st.LoadLatest("abc")
			if err != nil {
				t.Fatal(err)
			}
			if l.Meta.Step != 10 || len(skipped) != 1 || skipped[0].Step != 20 || !errors.Is(skipped[0].Err, ErrCorrupt) {
				t.Fatalf("got step %d, skipped %+v", l.Meta.Step, skipped)
			}
		})
	}
}

func TestConfigMismatchIsSkipped(t *testing.T) {
	m, opt := trained(t, 1)
	st, _ := NewStore(t.TempDir(), 3)
	st.Write(capture(t, m, opt, 5, 0))
	_, skipped, err := st.LoadLatest("other")
	if !errors.Is(err, ErrNotFound) || len(skipped) != 1 || !errors.Is(skipped[0].Err, ErrMismatch) {
		t.Fatalf("err %v skipped %+v", err, skipped)
	}
}

func TestFailedWriteLeavesPreviousIntact(t *testing.T) {
	m, opt := trained(t, 1)
	dir := t.TempDir()
	st, _ := NewStore(dir, 3)
	if _, err := st.Write(capture(t, m, opt, 10, 0.1)); err != nil {
		t.Fatal(err)
	}
	// Make the next write fail: a tensor whose data is shorter than its shape says.
	bad := capture(t, m, opt, 20, 0.2)
	bad.Model[0].Data = bad.Model[0].Data[:3]
	if _, err := st.Write(bad); err == nil {
		t.Fatal("write of a malformed snapshot succeeded")
	}
	steps, _ := st.Steps()
	if len(steps) != 1 || steps[0] != 10 {
		t.Fatalf("steps after failed write: %v", steps)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftovers after failed write: %v", ents)
	}
	if _, err := st.Verify(10); err != nil {
		t.Fatal(err)
	}
	// A store whose directory vanished (e.g. an unmounted volume) reports an error too.
	gone := &Store{Dir: filepath.Join(dir, "missing", "deeper"), Keep: 3}
	if _, err := gone.Write(capture(t, m, opt, 30, 0)); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestRetentionKeepsNewestAndBest(t *testing.T) {
	m, opt := trained(t, 1)
	st, _ := NewStore(t.TempDir(), 2)
	accs := []float64{0.3, 0.9, 0.4, 0.5, 0.6}
	for i, a := range accs {
		if _, err := st.Write(capture(t, m, opt, int64(i+1)*10, a)); err != nil {
			t.Fatal(err)
		}
	}
	steps, _ := st.Steps()
	want := []int64{50, 40, 20}
	if len(steps) != len(want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Fatalf("steps %v, want %v", steps, want)
		}
	}
}

func TestWriterWritesInBackgroundAndCloseFlushes(t *testing.T) {
	m, opt := trained(t, 1)
	st, _ := NewStore(t.TempDir(), 10)
	var done []int64
	w := NewWriter(st, func(_ Meta, man Manifest, err error) {
		if err != nil {
			t.Error(err)
		}
		done = append(done, man.Step)
	})
	for i := int64(1); i <= 3; i++ {
		w.Submit(capture(t, m, opt, i, 0))
	}
	w.Close()
	w.Close() // idempotent
	if len(done) == 0 || done[len(done)-1] != 3 {
		t.Fatalf("written: %v (the newest must always be written)", done)
	}
	if _, err := st.Verify(3); err != nil {
		t.Fatal(err)
	}
}

func TestWriterWaitIdleWaitsForWriteAndOnDone(t *testing.T) {
	m, opt := trained(t, 1)
	st, _ := NewStore(t.TempDir(), 10)
	release := make(chan struct{})
	var mu sync.Mutex
	var done []int64
	w := NewWriter(st, func(_ Meta, man Manifest, err error) {
		<-release
		mu.Lock()
		done = append(done, man.Step)
		mu.Unlock()
	})
	defer w.Close()
	if !w.WaitIdle(time.Second) {
		t.Fatal("a writer with nothing submitted is not idle")
	}
	w.Submit(capture(t, m, opt, 1, 0))
	if w.WaitIdle(50 * time.Millisecond) {
		t.Fatal("idle while a write's onDone is still running")
	}
	close(release)
	if !w.WaitIdle(10 * time.Second) {
		t.Fatal("not idle after the write finished")
	}
	mu.Lock()
	got := slices.Clone(done)
	mu.Unlock()
	if len(got) != 1 || got[0] != 1 {
		t.Fatalf("onDone ran for %v before WaitIdle returned, want [1]", got)
	}
	w.Submit(capture(t, m, opt, 2, 0))
	if !w.WaitIdle(10 * time.Second) {
		t.Fatal("not idle after the second write")
	}
	if _, err := st.Verify(2); err != nil {
		t.Fatal(err)
	}
}

// With every checkpoint damaged the error says how many there are and
// why the newest was refused (not just "none found") and wraps
// ErrCorrupt, so that a worker stops instead of retrying (issue 12, "Why"
// 5).
func TestAllDamagedSaysWhy(t *testing.T) {
	m, opt := trained(t, 1)
	st, _ := NewStore(t.TempDir(), 5)
	if _, _, err := st.LoadAtMost("", 30); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), "at or before step 30") {
		t.Fatalf("empty store: %v", err)
	}
	for _, step := range []int64{10, 20, 30} {
		if _, err := st.Write(capture(t, m, opt, step, 0)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(st.StepDir(step), ModelFile)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x40
		os.WriteFile(p, b, 0o644)
	}
	_, skipped, err := st.LoadAtMost("", 30)
	if len(skipped) != 3 || !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("skipped %d, err %v", len(skipped), err)
	}
	for _, want := range []string{"all 3 checkpoint(s) there were refused", "the newest, step 30", st.Dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestCleanOrphans: what an interrupted write leaves is cleaned when the
// next writer starts: a temporary directory goes, the previous copy of a
// replaced checkpoint is put back when the replacement never got there
// and removed when it did.
func TestCleanOrphans(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "f"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := ".tmp-" + filepath.Base(s.StepDir(7)) + "-123"
	mk(tmp)
	mk(filepath.Base(s.StepDir(5)) + oldSuffix) // replacement never renamed in
	mk(filepath.Base(s.StepDir(6)))
	mk(filepath.Base(s.StepDir(6)) + oldSuffix) // replacement in place
	if err := s.CleanOrphans(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{filepath.Base(s.StepDir(5)), filepath.Base(s.StepDir(6))}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("after cleaning: %v, want %v", names, want)
	}
	if b, _ := os.ReadFile(filepath.Join(s.StepDir(6), "f")); string(b) != filepath.Base(s.StepDir(6)) {
		t.Fatalf("step 6 holds %q: the replacement was not kept", b)
	}
}

// TestRetentionKeepsProtectedStep: the job's committed step stays on disk
// (and in memory) while newer checkpoints whose commits were refused push
// it out of the newest Keep; once a newer step is protected, the old one
// goes at the next write.
func TestRetentionKeepsProtectedStep(t *testing.T) {
	m, opt := trained(t, 1)
	for _, tc := range bothStores(t, 2) {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store
			write := func(step int64) {
				t.Helper()
				// Falling accuracy: the best is the oldest, step 10,
				// so the protected step 20 is kept for being protected.
				if _, err := st.Write(capture(t, m, opt, step, 1-float64(step)/100)); err != nil {
					t.Fatal(err)
				}
			}
			write(10)
			write(20)
			st.Protect(20)
			for _, step := range []int64{30, 40, 50} {
				write(step)
			}
			want := []int64{50, 40, 20, 10}
			if tc.name == "MemStore" {
				want = []int64{50, 40, 20} // MemStore keeps no best
			}
			if steps, _ := st.Steps(); !slices.Equal(steps, want) {
				t.Fatalf("with step 20 protected: steps %v, want %v", steps, want)
			}
			st.Protect(40)
			write(60)
			want = []int64{60, 50, 40, 10}
			if tc.name == "MemStore" {
				want = []int64{60, 50, 40}
			}
			if steps, _ := st.Steps(); !slices.Equal(steps, want) {
				t.Fatalf("with step 40 protected: steps %v, want %v", steps, want)
			}
		})
	}
}

// errInjected is the failure the rollback tests inject into a Store's
// renames and removals (the files are real).
var errInjected = errors.New("injected failure")

// leftovers lists the store directory's entries other than step dirs.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasSuffix(e.Name(), oldSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// accuracyAt reads the accuracy recorded in step's verified checkpoint.
func accuracyAt(t *testing.T, st *Store, step int64) float64 {
	t.Helper()
	if _, err := st.Verify(step); err != nil {
		t.Fatalf("step %d: %v", step, err)
	}
	b, err := os.ReadFile(filepath.Join(st.StepDir(step), MetaFile))
	if err != nil {
		t.Fatal(err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil || m.Accuracy == nil {
		t.Fatalf("step %d meta: %v %s", step, err, b)
	}
	return *m.Accuracy
}

// Replacing a step's checkpoint (a re-run after a rollback) when the new
// copy cannot be renamed into place: the previous copy is put back under
// its name, the temporary directory goes, and the error says so.
func TestWriteRollbackPutsPreviousBack(t *testing.T) {
	m, opt := trained(t, 1)
	dir := t.TempDir()
	st, _ := NewStore(dir, 3)
	if _, err := st.Write(capture(t, m, opt, 10, 0.1)); err != nil {
		t.Fatal(err)
	}
	final := st.StepDir(10)
	st.rename = func(from, to string) error {
		if to == final && strings.HasPrefix(filepath.Base(from), ".tmp-") {
			return errInjected
		}
		return os.Rename(from, to)
	}
	if _, err := st.Write(capture(t, m, opt, 10, 0.2)); !errors.Is(err, errInjected) {
		t.Fatalf("write with a failing rename: %v, want the injected failure", err)
	}
	if acc := accuracyAt(t, st, 10); acc != 0.1 {
		t.Fatalf("step 10 holds accuracy %v, want the previous copy's 0.1", acc)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Fatalf("leftovers after the failed replacement: %v", l)
	}
}

// When putting the previous copy back fails too, the error names both
// failures and the copy stays as <step>.old; the next writer's
// CleanOrphans puts it back under its name.
func TestWriteRollbackPutBackFailsCleanOrphansRestores(t *testing.T) {
	m, opt := trained(t, 1)
	dir := t.TempDir()
	st, _ := NewStore(dir, 3)
	if _, err := st.Write(capture(t, m, opt, 10, 0.1)); err != nil {
		t.Fatal(err)
	}
	final := st.StepDir(10)
	st.rename = func(from, to string) error {
		if to == final {
			return errInjected // the new copy's rename and the put-back
		}
		return os.Rename(from, to)
	}
	_, err := st.Write(capture(t, m, opt, 10, 0.2))
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "put back") {
		t.Fatalf("write: %v, want the rename's and the put-back's failures", err)
	}
	if l := leftovers(t, dir); len(l) != 1 || l[0] != filepath.Base(final)+oldSuffix {
		t.Fatalf("leftovers %v, want only the previous copy %s", l, filepath.Base(final)+oldSuffix)
	}
	next, _ := NewStore(dir, 3) // the next writer, with working renames
	if err := next.CleanOrphans(); err != nil {
		t.Fatal(err)
	}
	if acc := accuracyAt(t, next, 10); acc != 0.1 {
		t.Fatalf("after CleanOrphans step 10 holds accuracy %v, want the previous copy's 0.1", acc)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Fatalf("leftovers after CleanOrphans: %v", l)
	}
}

// A failed write whose temporary directory cannot be removed says so (the
// write's own error first), and the next writer's CleanOrphans removes it;
// a removal CleanOrphans cannot do is its error.
func TestWriteRollbackRemoveFailsCleanOrphansRemoves(t *testing.T) {
	m, opt := trained(t, 1)
	dir := t.TempDir()
	st, _ := NewStore(dir, 3)
	st.removeAll = func(string) error { return errInjected }
	bad := capture(t, m, opt, 20, 0.2)
	bad.Model[0].Data = bad.Model[0].Data[:3] // shorter than its shape: the write fails
	_, err := st.Write(bad)
	if err == nil || !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "removed when the next writer starts") {
		t.Fatalf("write: %v, want the write's error and the failed removal", err)
	}
	if l := leftovers(t, dir); len(l) != 1 || !strings.HasPrefix(l[0], ".tmp-") {
		t.Fatalf("leftovers %v, want the temporary directory", l)
	}
	if err := st.CleanOrphans(); !errors.Is(err, errInjected) {
		t.Fatalf("CleanOrphans with failing removals: %v, want the injected failure", err)
	}
	st.removeAll = nil
	if err := st.CleanOrphans(); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Fatalf("leftovers after CleanOrphans: %v", l)
	}
}

// TestCheckpointDirectoryIsReadable: a checkpoint directory gets the mode
// of the job's other outputs (0755; its files 0644), so that another user
// of a shared volume can list, verify and load it. Before 2026-12-06 it
// kept the 0700 of its temporary directory: 'coordinator checkpoints' run
// by another user said every checkpoint was corrupt (permission denied),
// and nobody else could load one in PyTorch.
func TestCheckpointDirectoryIsReadable(t *testing.T) {
	m, opt := trained(t, 1)
	st, err := NewStore(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(capture(t, m, opt, 10, 0.5)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(st.StepDir(10))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o755 {
		t.Errorf("checkpoint directory mode %v, want -rwxr-xr-x", got)
	}
	ents, err := os.ReadDir(st.StepDir(10))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s mode %v: not readable by group and others", e.Name(), fi.Mode().Perm())
		}
	}
}

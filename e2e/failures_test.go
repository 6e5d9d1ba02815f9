package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/pkg/checkpoint"
	"github.com/ringtrain/ringtrain/pkg/report"
	"github.com/ringtrain/ringtrain/pkg/worker"
)

// workerPID returns the pid of local worker id from the coordinator's log
// (the newest "started worker" line).
func workerPID(t *testing.T, co *proc, id string) int {
	t.Helper()
	pid := 0
	for _, m := range logLines(t, co.logPath, "started worker") {
		if m["id"] == id {
			pid = int(m["pid"].(float64))
		}
	}
	if pid == 0 {
		t.Fatalf("no pid of %s in the coordinator's log", id)
	}
	return pid
}

// kill -9 one worker mid-epoch; the coordinator starts a replacement with
// the same id; the final weights are bit-identical to an uninterrupted run.
func TestKillWorkerReplacementBitIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("two jobs (~15 s)")
	}
	args := flags("--workers", "2", "--min-workers", "2")
	base := baseline(t, args...)
	out := filepath.Join(t.TempDir(), "out")
	co := start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
	waitFor(t, time.Minute, "step 12", func() bool { return countSteps(out) >= 12 })
	pid := workerPID(t, co, "w1")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	mustFinish(t, co, 2*time.Minute)
	// The survivor rolls back in memory (no disk read) — unless the kill
	// landed right after a committed step, when it is already there.
	w0 := filepath.Join(out, "logs", "w0.log")
	if n := len(logLines(t, w0, "loaded checkpoint")); n != 0 {
		b, _ := os.ReadFile(w0)
		t.Fatalf("the survivor read its state from disk instead of rolling back in memory:\n%s", tail(string(b), 4000))
	}
	t.Logf("survivor's in-memory rollbacks: %d", len(logLines(t, w0, "rolling back in memory")))
	if n := len(logLines(t, co.logPath, "restarting worker")); n != 1 {
		t.Fatalf("%d restarts, want 1", n)
	}
	requireIdenticalModels(t, filepath.Join(base, "model.safetensors"), filepath.Join(out, "model.safetensors"))
}

// 4 -> 3 -> 4 workers (--min-workers 3): one worker is killed and not
// replaced, a new one joins later; every sample is trained exactly once in
// every epoch, rolled-back steps excepted.
func TestElasticFourThreeFourSamplesOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("a 4-worker job (~25 s)")
	}
	out := filepath.Join(t.TempDir(), "out")
	samples := t.TempDir()
	port := freePorts(t, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	env := []string{"RINGTRAIN_SAMPLE_LOG=" + samples}
	co := start(t, t.TempDir(), "coordinator", env, jobArgs(out, "--workers", "4", "--min-workers", "3",
		"--restart-workers=false", "--listen", addr, "--epochs", "3", "--synthetic-size", "1000", "--member-ttl", "3s")...)
	waitFor(t, time.Minute, "step 10", func() bool { return countSteps(out) >= 10 })
	if err := syscall.Kill(workerPID(t, co, "w2"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at := countSteps(out)
	waitFor(t, time.Minute, "steps with 3 workers", func() bool { return countSteps(out) >= at+15 })
	joiner := start(t, t.TempDir(), "worker", env, "run", "--coordinator", addr, "--id", "w9", "--threads", "1")
	mustFinish(t, co, 3*time.Minute)
	mustFinish(t, joiner, 30*time.Second)

	recs, err := worker.ReadSampleLogs(samples)
	if err != nil {
		t.Fatal(err)
	}
	a := worker.AuditSamples(recs, 1000, 3)
	worlds := map[int]int{}
	for _, r := range recs {
		if r.Kind == "assigned" && r.Rank == 0 {
			worlds[r.World]++
		}
	}
	t.Logf("audit: %+v; steps by world size (rank 0 records): %v", a, worlds)
	if a.Lost != 0 || a.Duplicated != 0 || len(a.IncompleteSteps) != 0 {
		t.Fatalf("samples lost %d, duplicated %d, incomplete steps %v", a.Lost, a.Duplicated, a.IncompleteSteps)
	}
	if a.Steps != 96 || a.Samples != 3000 {
		t.Fatalf("lineage: %d steps, %d samples; want 96 and 3000", a.Steps, a.Samples)
	}
	if worlds[3] == 0 || worlds[4] == 0 {
		t.Fatalf("the job did not run with both 3 and 4 workers: %v", worlds)
	}
}

// killJob SIGKILLs the coordinator and its local workers once the job has
// a committed checkpoint past step 15.
func killJobMidRun(t *testing.T, args []string, out string) {
	t.Helper()
	co := start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
	store := &checkpoint.Store{Dir: filepath.Join(out, "checkpoints")}
	waitFor(t, time.Minute, "a checkpoint past step 15", func() bool {
		s, _ := store.Steps()
		return len(s) > 0 && s[0] >= 15 && countSteps(out) >= 22
	})
	co.killGroup()
	_ = co.wait(10 * time.Second)
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err == nil {
		t.Fatal("the job finished before it was killed")
	}
}

// Kill the whole job (coordinator and workers), restart the coordinator
// with the same output directory: it resumes and the final weights are
// bit-identical to an uninterrupted run.
func TestWholeJobKillResumeBitIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("two jobs (~20 s)")
	}
	args := flags("--workers", "2", "--min-workers", "2")
	base := baseline(t, args...)
	out := filepath.Join(t.TempDir(), "out")
	killJobMidRun(t, args, out)
	// Other settings are refused before any worker starts, with what
	// differs; the job is left as it was (the resume below is still
	// bit-identical).
	o := runBin(t, t.TempDir(), "coordinator", time.Minute, append(args, "--output", out, "--lr", "0.05", "--epochs", "3")...)
	requireClearFailure(t, "other settings", o, "coordinator:", "has committed step", "epochs 2 -> 3", "optimizer.lr 0.1 -> 0.05",
		"run again with its settings")
	if strings.Contains(o.all, "started worker") {
		t.Errorf("workers were started for refused settings:\n%s", tail(o.all, 2000))
	}
	co := start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
	mustFinish(t, co, 2*time.Minute)
	if len(logLines(t, co.logPath, "resuming job")) == 0 || len(logLines(t, co.logPath, "resuming the job's record")) == 0 {
		t.Fatalf("the restarted coordinator did not resume, or did not say so:\n%s", tail(co.log(), 3000))
	}
	requireIdenticalModels(t, filepath.Join(base, "model.safetensors"), filepath.Join(out, "model.safetensors"))
	// The record too: every epoch's train figures cover the whole epoch,
	// whatever happened in it, so they equal the uninterrupted run's.
	requireSameHistory(t, base, out, false)
}

// requireSameHistory compares the per-epoch figures of two runs' history
// (the validation loss too unless rebuilt epochs may lack it).
func requireSameHistory(t *testing.T, base, out string, rebuilt bool) {
	t.Helper()
	hb, err := report.ReadHistory(filepath.Join(base, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	ho, err := report.ReadHistory(filepath.Join(out, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ho.Epochs) != len(hb.Epochs) {
		t.Fatalf("history has %d epochs, the uninterrupted run %d: %+v", len(ho.Epochs), len(hb.Epochs), ho.Epochs)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
	for i, e := range ho.Epochs {
		b := hb.Epochs[i]
		if e.Epoch != b.Epoch || e.Steps != b.Steps || !near(e.TrainLoss, b.TrainLoss) || !near(e.TrainAcc, b.TrainAcc) ||
			!near(e.ValAcc, b.ValAcc) || (!e.Rebuilt && !near(e.ValLoss, b.ValLoss)) {
			t.Fatalf("epoch %d after the resume: %+v\nuninterrupted: %+v", e.Epoch, e, b)
		}
		if e.Rebuilt && !rebuilt {
			t.Fatalf("epoch %d was rebuilt although history.json was kept", e.Epoch)
		}
	}
}

// The state directory is lost (raft log, embedded etcd) and history.json
// with it: the restarted job resumes from its checkpoints, and the record
// of the epochs before the resume comes back from steps.jsonl and the
// epoch-end checkpoint (train figures, validation accuracy and loss).
func TestStateLostHistoryRebuilt(t *testing.T) {
	if testing.Short() {
		t.Skip("two jobs (~25 s)")
	}
	args := flags("--workers", "2", "--min-workers", "2", "--epochs", "3", "--checkpoint-keep", "20")
	base := baseline(t, args...)
	out := filepath.Join(t.TempDir(), "out")
	co := start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
	store := &checkpoint.Store{Dir: filepath.Join(out, "checkpoints")}
	waitFor(t, time.Minute, "a checkpoint in epoch 2", func() bool {
		s, _ := store.Steps()
		return len(s) > 0 && s[0] >= 40 && countSteps(out) >= 45
	})
	co.killGroup()
	_ = co.wait(10 * time.Second)
	for _, p := range []string{"state", report.JSONFile, report.CSVFile} {
		if err := os.RemoveAll(filepath.Join(out, p)); err != nil {
			t.Fatal(err)
		}
	}
	co = start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
	mustFinish(t, co, 2*time.Minute)
	if len(logLines(t, co.logPath, "resuming the job's record")) == 0 {
		t.Fatalf("the coordinator did not log the resume:\n%s", tail(co.log(), 3000))
	}
	requireIdenticalModels(t, filepath.Join(base, "model.safetensors"), filepath.Join(out, "model.safetensors"))
	requireSameHistory(t, base, out, true)
	ho, _ := report.ReadHistory(filepath.Join(out, report.JSONFile))
	if !ho.Epochs[0].Rebuilt {
		t.Fatalf("epoch 1 not marked as rebuilt: %+v", ho.Epochs[0])
	}
}

// A corrupted newest checkpoint (a flipped byte; a truncated file) is
// detected on resume, the previous one is used with a clear log line, and
// the replay from there still ends bit-identical.
func TestCorruptNewestCheckpointFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("three jobs (~30 s)")
	}
	args := flags("--workers", "2", "--min-workers", "2")
	base := baseline(t, args...)
	for _, how := range []string{"flip", "truncate"} {
		t.Run(how, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			killJobMidRun(t, args, out)
			store := &checkpoint.Store{Dir: filepath.Join(out, "checkpoints")}
			steps, _ := store.Steps()
			if len(steps) < 3 {
				t.Fatalf("checkpoints %v: want 3", steps)
			}
			// The two newest: the newest may not be committed yet when
			// the job was killed (its commit is sent after the write).
			corrupt := map[int64]bool{steps[0]: true, steps[1]: true}
			for step := range corrupt {
				file := filepath.Join(store.StepDir(step), checkpoint.ModelFile)
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if how == "flip" {
					b[len(b)/2] ^= 0x40
				} else {
					b = b[:len(b)-100]
				}
				if err := os.WriteFile(file, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			co := start(t, t.TempDir(), "coordinator", nil, append(args, "--output", out)...)
			mustFinish(t, co, 2*time.Minute)
			skipped := logLines(t, filepath.Join(out, "logs", "*.log"), "checkpoint unusable; falling back to an older one")
			found := false
			for _, m := range skipped {
				if corrupt[int64(m["step"].(float64))] && strings.Contains(fmt.Sprint(m["error"]), "corrupt") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no log line about the corrupt checkpoints %v: %v", corrupt, skipped)
			}
			requireIdenticalModels(t, filepath.Join(base, "model.safetensors"), filepath.Join(out, "model.safetensors"))
		})
	}
}

// A failing checkpoint write (the checkpoints directory made read-only, or
// immutable when running as root) is logged, leaves the previous
// checkpoint intact, and training goes on to the end.
func TestFailingCheckpointWriteKeepsTraining(t *testing.T) {
	if testing.Short() {
		t.Skip("a job (~10 s)")
	}
	out := filepath.Join(t.TempDir(), "out")
	co := start(t, t.TempDir(), "coordinator", nil, jobArgs(out, "--workers", "2")...)
	dir := filepath.Join(out, "checkpoints")
	store := &checkpoint.Store{Dir: dir}
	waitFor(t, time.Minute, "a checkpoint past step 10", func() bool {
		s, _ := store.Steps()
		return len(s) > 0 && s[0] >= 10
	})
	lock, unlock := readOnly(t, dir)
	lock()
	defer unlock()
	steps, _ := store.Steps()
	newest := steps[0]
	mustFinish(t, co, 2*time.Minute)
	unlock()
	if _, err := store.Verify(newest); err != nil {
		t.Fatalf("previous checkpoint damaged: %v", err)
	}
	if n := len(logLines(t, filepath.Join(out, "logs", "*.log"), "checkpoint write failed; training goes on, the previous checkpoint stays the newest")); n == 0 {
		t.Fatal("no log line about the failed write")
	}
	// The user is told on the coordinator's terminal, not only in a
	// worker's log: an event per failed write and a warning at the end.
	if log := co.log(); !strings.Contains(log, "not written by w") || !strings.Contains(log, "training goes on, a failure would take the job back to step") ||
		!strings.Contains(log, "checkpoint write(s) failed during the job (see the log); the newest is step") {
		t.Fatalf("the coordinator did not report the failed writes:\n%s", tail(log, 3000))
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Fatalf("training did not finish: %v", err)
	}
}

// TestCheckpointsListingWhileJobRuns: 'coordinator checkpoints' answers
// while the job runs (the checkpoints directory is all it reads), and
// each checkpoint listed verifies. Before 2026-12-06 it opened the job's
// embedded etcd, whose files the running coordinator holds: it waited
// until the job ended, and did not stop on Ctrl-C meanwhile.
func TestCheckpointsListingWhileJobRuns(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	co := start(t, t.TempDir(), "coordinator", nil, jobArgs(out, "--workers", "2", "--epochs", "100")...)
	store := &checkpoint.Store{Dir: filepath.Join(out, "checkpoints")}
	waitFor(t, time.Minute, "a checkpoint past step 0", func() bool {
		s, _ := store.Steps()
		return len(s) > 0 && s[0] > 0
	})
	o := runBin(t, t.TempDir(), "coordinator", 20*time.Second, "checkpoints", "--output", out)
	select {
	case <-co.done:
		t.Fatalf("the job ended before the listing did: the test proves nothing\n%s", tail(co.log(), 2000))
	default:
	}
	if o.code != 0 {
		t.Fatalf("checkpoints: exit %d\n%s", o.code, o.all)
	}
	rows := 0
	for _, l := range strings.Split(strings.TrimSpace(o.all), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] != "STEP" {
			rows++
			if !strings.HasSuffix(l, "yes") {
				t.Errorf("checkpoint of a running job not verified: %q", l)
			}
		}
	}
	if rows == 0 {
		t.Fatalf("no checkpoint listed:\n%s", o.all)
	}
	t.Logf("listed %d checkpoints of the running job in %s", rows, o.took.Round(time.Millisecond))
}

// readOnly returns functions that make dir unwritable and writable again:
// chmod for ordinary users, the immutable attribute for root (whom
// permissions do not stop).
func readOnly(t *testing.T, dir string) (lock, unlock func()) {
	if os.Geteuid() != 0 {
		return func() { os.Chmod(dir, 0o555) }, func() { os.Chmod(dir, 0o755) }
	}
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("running as root without chattr: cannot make a directory unwritable")
	}
	return func() {
			if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
				t.Skipf("chattr +i: %v %s", err, out)
			}
		}, func() {
			_ = exec.Command("chattr", "-i", dir).Run()
		}
}

// A checkpoint written here loads into torchvision's ResNet-18 with
// load_state_dict(strict=True) and gives finite outputs.
func TestCheckpointLoadsInPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("a full-width job (~15 s)")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import torch, torchvision").Run(); err != nil {
		t.Skip("python3 with torch and torchvision not available")
	}
	out := filepath.Join(t.TempDir(), "out")
	co := start(t, t.TempDir(), "coordinator", nil, "--workers", "1", "--dataset", "synthetic", "--synthetic-size", "64",
		"--epochs", "1", "--batch", "16", "--max-steps", "2", "--threads", "2", "--no-progress", "--output", out)
	mustFinish(t, co, 3*time.Minute)
	store := &checkpoint.Store{Dir: filepath.Join(out, "checkpoints")}
	steps, _ := store.Steps()
	if len(steps) == 0 {
		t.Fatal("no checkpoint")
	}
	path := filepath.Join(store.StepDir(steps[0]), checkpoint.ModelFile)
	script := `
import json, struct, sys, torch, torchvision
path = sys.argv[1]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
dt = {"F32": torch.float32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16}
sd = {}
for name, info in header.items():
    if name == "__metadata__":
        continue
    a, b = info["data_offsets"]
    sd[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dt[info["dtype"]]).reshape(info["shape"])
m = torchvision.models.resnet18(num_classes=10)
m.load_state_dict(sd, strict=True)
m.eval()
y = m(torch.randn(2, 3, 32, 32))
assert torch.isfinite(y).all()
print("torch ok", len(sd), "tensors", tuple(y.shape))
`
	cmd := exec.Command("/usr/bin/python3", "-c", script, path)
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "torch ok") {
		t.Fatalf("PyTorch could not load %s: %v\n%s", path, err, b)
	}
	t.Log(strings.TrimSpace(string(b)))
}

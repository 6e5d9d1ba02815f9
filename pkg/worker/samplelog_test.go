package worker

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAuditSamplesLineageLostAndDuplicated(t *testing.T) {
	as := func(gen uint64, step int64, rank, world int, idx ...int) SampleRecord {
		return SampleRecord{Kind: "assigned", Generation: gen, Step: step, Rank: rank, World: world, Indices: idx}
	}
	done := func(gen uint64, step int64) SampleRecord {
		return SampleRecord{Kind: "done", Generation: gen, Step: step}
	}
	// Dataset of 6, batch 3: steps 0 and 1 make epoch 0. Step 1 ran in
	// generation 1 with 2 ranks (rolled back), again in generation 2 with 3.
	recs := []SampleRecord{
		as(1, 0, 0, 2, 4, 1), as(1, 0, 1, 2, 0), done(1, 0),
		as(1, 1, 0, 2, 5, 3), as(1, 1, 1, 2, 2), done(1, 1),
		as(2, 1, 0, 3, 5), as(2, 1, 1, 3, 3), as(2, 1, 2, 3, 2), done(2, 1),
	}
	a := AuditSamples(recs, 6, 1)
	if a.Lost != 0 || a.Duplicated != 0 || a.RolledBack != 1 || a.Steps != 2 || a.Samples != 6 || len(a.IncompleteSteps) != 0 {
		t.Fatalf("clean lineage: %+v", a)
	}
	// Rank 2's record of the final execution missing: index 2 lost, step 1 incomplete.
	missing := append(append([]SampleRecord{}, recs[:8]...), recs[9:]...)
	a = AuditSamples(missing, 6, 1)
	if a.Lost != 1 || len(a.IncompleteSteps) != 1 || a.IncompleteSteps[0] != 1 {
		t.Fatalf("missing rank: %+v", a)
	}
	bad := append([]SampleRecord{}, recs...)
	bad[8] = as(2, 1, 2, 3, 4) // index 4 twice, 2 never
	a = AuditSamples(bad, 6, 1)
	if a.Lost != 1 || a.Duplicated != 1 {
		t.Fatalf("duplicate: %+v", a)
	}
}

func TestReadSampleLogsSkipsTruncatedLine(t *testing.T) {
	dir := t.TempDir()
	l, err := openSampleLog(dir, "w0")
	if err != nil {
		t.Fatal(err)
	}
	l.done(3, 7, 0)
	l.Close()
	f, _ := os.OpenFile(filepath.Join(dir, "samples-w0-"+strconv.Itoa(os.Getpid())+".jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"assigned","gen":3,"st`) // a process killed mid-write
	f.Close()
	recs, err := ReadSampleLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Generation != 3 || recs[0].Step != 7 {
		t.Fatalf("records: %+v", recs)
	}
}

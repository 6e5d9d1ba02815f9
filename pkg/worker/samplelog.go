package worker

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ringtrain/ringtrain/pkg/data"
)

// SampleRecord is one line of the sample log (a debugging and audit aid,
// enabled with worker run --sample-log DIR or RINGTRAIN_SAMPLE_LOG=DIR). Before a step a rank writes an
// "assigned" record with the dataset indices of its slice; after the step
// completed (its all-reduce finished) it writes a "done" record without
// indices. A record is written with one write call, so a killed process
// leaves at most a truncated last line, which ReadSampleLogs skips.
type SampleRecord struct {
	Kind       string `json:"kind"` // "assigned" or "done"
	Generation uint64 `json:"gen"`
	Step       int64  `json:"step"` // the step being trained (steps completed before it)
	Epoch      int    `json:"epoch,omitempty"`
	Cursor     int    `json:"cursor,omitempty"`
	Rank       int    `json:"rank"`
	World      int    `json:"world,omitempty"`
	Indices    []int  `json:"idx,omitempty"`
}

// sampleLog appends SampleRecords to one file.
type sampleLog struct {
	mu sync.Mutex // guards f
	f  *os.File
}

func openSampleLog(dir, id string) (*sampleLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("worker: sample log: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("samples-%s-%d.jsonl", id, os.Getpid()))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("worker: sample log: %w", err)
	}
	return &sampleLog{f: f}, nil
}

func (l *sampleLog) write(r SampleRecord) {
	if l == nil {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.Write(append(b, '\n'))
}

func (l *sampleLog) assigned(gen uint64, step int64, b *data.Batch, rank, world int) {
	if l == nil {
		return
	}
	l.write(SampleRecord{Kind: "assigned", Generation: gen, Step: step, Epoch: b.Pos.Epoch, Cursor: b.Pos.Cursor,
		Rank: rank, World: world, Indices: append([]int{}, b.Indices[:b.N]...)})
}

func (l *sampleLog) done(gen uint64, step int64, rank int) {
	l.write(SampleRecord{Kind: "done", Generation: gen, Step: step, Rank: rank})
}

// Close closes the file.
func (l *sampleLog) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// ReadSampleLogs reads every samples-*.jsonl file in dir. Truncated lines
// (a process killed while writing) are skipped.
func ReadSampleLogs(dir string) ([]SampleRecord, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "samples-*.jsonl"))
	if err != nil {
		return nil, err
	}
	var out []SampleRecord
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		r := bufio.NewReaderSize(f, 1<<20)
		for {
			line, err := r.ReadString('\n')
			if strings.HasSuffix(line, "\n") {
				var rec SampleRecord
				if json.Unmarshal([]byte(line), &rec) == nil {
					out = append(out, rec)
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return nil, err
			}
		}
		f.Close()
	}
	return out, nil
}

// SampleAudit is the result of AuditSamples.
type SampleAudit struct {
	Epochs          int // epochs seen
	Steps           int // steps in the final lineage
	Samples         int // samples trained in the final lineage
	Lost            int // dataset indices missing from an epoch
	Duplicated      int // extra occurrences of an index within an epoch
	RolledBack      int // step executions superseded by a later generation
	IncompleteSteps []int64
}

// AuditSamples checks that the final lineage of steps trains every sample
// of every complete epoch exactly once. The lineage: for every step, the
// newest generation in which some rank finished it; its samples are the
// union of the "assigned" records of that generation and step, which must
// come from every rank of that world exactly once. Executions of a step in
// older generations count as rolled back. datasetSize is the training set
// size; epochs is how many epochs must be complete (the last epoch may be
// shorter when maxSteps cut it: pass the number of complete epochs).
func AuditSamples(recs []SampleRecord, datasetSize, epochs int) SampleAudit {
	type key struct {
		gen  uint64
		step int64
	}
	done := map[int64]uint64{} // step -> newest generation that finished it
	execs := map[key]bool{}
	assigned := map[key][]SampleRecord{}
	for _, r := range recs {
		k := key{r.Generation, r.Step}
		switch r.Kind {
		case "done":
			if g, ok := done[r.Step]; !ok || r.Generation > g {
				done[r.Step] = r.Generation
			}
			execs[k] = true
		case "assigned":
			assigned[k] = append(assigned[k], r)
		}
	}
	var a SampleAudit
	for k := range execs {
		if done[k.step] != k.gen {
			a.RolledBack++
		}
	}
	counts := map[int][]int{} // epoch -> per-index count
	steps := make([]int64, 0, len(done))
	for s := range done {
		steps = append(steps, s)
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i] < steps[j] })
	for _, s := range steps {
		rs := assigned[key{done[s], s}]
		ranks := map[int]bool{}
		world := 0
		for _, r := range rs {
			if ranks[r.Rank] {
				continue // the same rank's record twice: count once
			}
			ranks[r.Rank] = true
			world = r.World
			c := counts[r.Epoch]
			if c == nil {
				c = make([]int, datasetSize)
				counts[r.Epoch] = c
			}
			for _, i := range r.Indices {
				if i >= 0 && i < datasetSize {
					c[i]++
				}
			}
			a.Samples += len(r.Indices)
		}
		if len(ranks) != world || world == 0 {
			a.IncompleteSteps = append(a.IncompleteSteps, s)
		}
		a.Steps++
	}
	a.Epochs = len(counts)
	for e := 0; e < epochs; e++ {
		c := counts[e]
		if c == nil {
			a.Lost += datasetSize
			continue
		}
		for _, n := range c {
			switch {
			case n == 0:
				a.Lost++
			case n > 1:
				a.Duplicated += n - 1
			}
		}
	}
	return a
}

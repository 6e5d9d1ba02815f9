package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/ringtrain/ringtrain/pkg/job"
)

// trainSize is the size of the job's training set. In one-machine mode
// (--workers N) the local worker binary prepares the input once ('worker
// prepare': the download for all workers, and an early, clear error when
// the input is bad) and says it. Otherwise the coordinator, which never
// touches the data, takes it from the spec: 0 when only the data could
// say it (an image folder on the workers' side), and the progress then
// counts steps without epochs' lengths.
func trainSize(ctx context.Context, spec job.Spec, o options) (int, error) {
	if o.workers == 0 {
		n, _ := spec.TrainSize()
		return n, nil
	}
	bin, err := workerBinary(o.workerBin)
	if err != nil {
		return 0, err
	}
	b, err := spec.Marshal()
	if err != nil {
		return 0, err
	}
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "prepare", "--world", strconv.Itoa(o.workers))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(b), &out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		var ee *exec.ExitError
		if msg == "" || !errors.As(err, &ee) {
			return 0, fmt.Errorf("%s prepare: %w %s", bin, err, msg)
		}
		return 0, errors.New(msg) // the worker's own message: "worker: ..."
	}
	var p struct {
		TrainSamples int        `json:"train_samples"`
		Shape        imageShape `json:"shape"`
	}
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		return 0, fmt.Errorf("%s prepare: unreadable answer %q: %w", bin, out.String(), err)
	}
	if err := checkInputMemory(spec, p.Shape, o.workers, memTotal()); err != nil {
		return 0, err
	}
	return p.TrainSamples, nil
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoordinatorLinksNoEngine keeps the control plane apart from the
// compute: the coordinator never trains, so it must not link the training
// engine, the GPU backend or the data pipeline (the training set's size
// and the schedule come from the job spec and pkg/schedule; in
// one-machine mode 'worker prepare' reads the data).
func TestCoordinatorLinksNoEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range []string{"pkg/worker", "pkg/nn", "pkg/gpu", "pkg/data", "pkg/checkpoint", "pkg/allreduce"} {
			p := "github.com/ringtrain/ringtrain/" + f
			if dep == p || (strings.HasPrefix(dep, p+"/") && dep != "github.com/ringtrain/ringtrain/pkg/checkpoint/manifest") {
				t.Errorf("cmd/coordinator depends on %s", dep)
			}
		}
	}
}

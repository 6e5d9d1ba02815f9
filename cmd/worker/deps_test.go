package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestWorkerLinksNoServers keeps the worker binary small: it talks to the
// coordinator and etcd as a client, so it must not link raft or etcd's
// server (pkg/control and pkg/cluster are the client sides).
func TestWorkerLinksNoServers(t *testing.T) {
	forbidden := []string{"github.com/hashicorp/raft", "go.etcd.io/etcd/server/", "github.com/ringtrain/ringtrain/pkg/coordinator"}
	for _, dep := range listDeps(t, ".") {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("cmd/worker depends on %s", dep)
			}
		}
	}
}

// listDeps returns the packages pkg depends on (go list -deps).
func listDeps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

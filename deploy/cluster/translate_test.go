package cluster

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func render(t *testing.T, values string) *Manifests {
	t.Helper()
	m, err := Render("../helm/ringtrain", RenderOptions{Release: "rt", Namespace: "ml", Values: values})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAME": "w-0", "POD_IP": "10.0.0.5"}
	for in, want := range map[string]string{
		"--id=$(POD_NAME)":          "--id=w-0",
		"--listen=$(POD_IP):7080":   "--listen=10.0.0.5:7080",
		"$(UNDEFINED) stays":        "$(UNDEFINED) stays",
		"$$(POD_NAME) is escaped":   "$(POD_NAME) is escaped",
		"a $ alone, $(unterminated": "a $ alone, $(unterminated",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// The e2e values, translated for one worker pod: the rendered flags with
// the downward API filled in, the stable DNS names, the claims, the
// ConfigMap and the TLS Secret mounts, and the security context.
func TestRunArgsWorker(t *testing.T) {
	vals, err := os.ReadFile("testdata/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := render(t, string(vals))
	m.Secrets["rt-tls"] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "rt-tls"}}
	set := m.StatefulSets["rt-ringtrain-worker"]
	if set == nil {
		t.Fatalf("no worker StatefulSet; have %v", m.StatefulSets)
	}
	args, err := m.RunArgs(PodRun{Set: set, Ordinal: 1, IP: "10.213.1.17", Network: "net", Domain: "cluster.local",
		Dirs: map[string]string{"rt-ringtrain-job": "/w/job", "rt-tls": "/w/tls"}})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"--name rt-ringtrain-worker-1 --hostname rt-ringtrain-worker-1",
		"--ip 10.213.1.17",
		"--network-alias rt-ringtrain-worker.ml.svc.cluster.local",
		"--network-alias rt-ringtrain-worker-1.rt-ringtrain-worker.ml.svc.cluster.local",
		"--dns-search ml.svc.cluster.local",
		"--env POD_NAME=rt-ringtrain-worker-1", "--env POD_IP=10.213.1.17",
		"--env RINGTRAIN_SAMPLE_LOG=/shared/samples",
		"--user 65532:65532", "--group-add 65532", "--cap-drop all", "--security-opt no-new-privileges",
		"--volume rt-ringtrain-shared:/shared",
		"--mount type=bind,src=/w/job,dst=/etc/ringtrain/job,ro=true",
		"--mount type=bind,src=/w/tls,dst=/etc/ringtrain/tls,ro=true",
		"--mount type=tmpfs,dst=/cache",
		`--entrypoint ["/usr/local/bin/worker"] ghcr.io/ringtrain/ringtrain:0.1.0 run`,
		"--listen=10.213.1.17:7080", "--id=rt-ringtrain-worker-1",
		"--coordinator=rt-ringtrain-coordinator-0.rt-ringtrain-coordinator.ml.svc.cluster.local:7070,",
		"--tls-ca=/etc/ringtrain/tls/ca.crt",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("podman run args lack %q:\n%s", want, joined)
		}
	}
	if slices.Contains(args, "$(POD_IP)") || strings.Contains(joined, "$(") {
		t.Errorf("an unexpanded reference is left: %s", joined)
	}
}

// What the emulation cannot do is refused by name, never dropped.
func TestUnsupported(t *testing.T) {
	m := render(t, "worker: {device: cuda}\n")
	_, err := m.RunArgs(PodRun{Set: m.StatefulSets["rt-ringtrain-worker"], IP: "10.0.0.2", Network: "n", Domain: "cluster.local"})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "nvidia.com/gpu") {
		t.Fatalf("GPU limit: %v, want %v naming nvidia.com/gpu", err, ErrUnsupported)
	}
	m = render(t, "tls: {enabled: true, secretName: missing}\n")
	_, err = m.RunArgs(PodRun{Set: m.StatefulSets["rt-ringtrain-worker"], IP: "10.0.0.2", Network: "n", Domain: "cluster.local"})
	if err == nil || !strings.Contains(err.Error(), "Secret missing does not exist") {
		t.Fatalf("missing Secret: %v", err)
	}
	if err := m.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a Deployment: %v, want %v", err, ErrUnsupported)
	}
}

// The multi-node values: --procs 2, two ring ports and a memory-backed
// /dev/shm with its size.
func TestRunArgsProcsPerPod(t *testing.T) {
	vals, err := os.ReadFile("testdata/nodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := render(t, string(vals))
	args, err := m.RunArgs(PodRun{Set: m.StatefulSets["rt-ringtrain-worker"], IP: "10.0.0.2", Network: "n", Domain: "cluster.local",
		Dirs: map[string]string{"rt-ringtrain-job": "/w/job"}})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{"--procs=2", "--mount type=tmpfs,dst=/dev/shm,tmpfs-mode=1777,tmpfs-size=268435456"} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q:\n%s", want, joined)
		}
	}
}

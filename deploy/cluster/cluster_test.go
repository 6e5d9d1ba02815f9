package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ringtrain/ringtrain/deploy/cluster"
	"github.com/ringtrain/ringtrain/deploy/podman"
	"github.com/ringtrain/ringtrain/pkg/tlsconf"
	"github.com/ringtrain/ringtrain/proto/controlpb"
)

const (
	chartDir  = "../helm/ringtrain"
	release   = "rt"
	namespace = "ml"
)

// env is what every cluster run of the test shares: a private podman
// store with the images of `make image` loaded, and the TLS files.
type env struct {
	st  *podman.Store
	tls tlsconf.Files
	dir string

	mu      sync.Mutex // guards running
	running []*cluster.Cluster
}

// onSignal removes the clusters and the store when the test is
// interrupted (SIGINT, SIGTERM): go test would exit without cleanups.
func (e *env) onSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "cluster: %v: removing the containers, volumes, networks and the store\n", s)
		e.mu.Lock()
		for _, c := range e.running {
			_ = c.Close()
		}
		e.mu.Unlock()
		_ = e.st.Close()
		_ = os.RemoveAll(filepath.Dir(e.dir)) // the test's temporary root
		os.Exit(2)
	}()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Getenv("RINGTRAIN_CLUSTER") == "" {
		t.Skip("set RINGTRAIN_CLUSTER=1 (make cluster-e2e): runs the chart's pods as podman containers, as root")
	}
	images := os.Getenv("RINGTRAIN_IMAGES")
	archives, _ := filepath.Glob(filepath.Join(images, "*.oci.tar"))
	if images == "" || len(archives) == 0 {
		t.Fatalf("no OCI archives in RINGTRAIN_IMAGES=%q: run make image first (make cluster-e2e does)", images)
	}
	dir := t.TempDir()
	st, err := podman.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("removing the store: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, a := range archives {
		if _, err := st.Podman(ctx, "load", "-q", "-i", a); err != nil {
			t.Fatal(err)
		}
	}
	// As `coordinator certs --dir DIR` and `kubectl create secret generic` would.
	tf, err := tlsconf.Generate(filepath.Join(dir, "tls"), tlsconf.DefaultServerName, nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, tls: tf, dir: dir}
	e.onSignal()
	return e
}

// secret is the Secret the user creates before installing with TLS on.
func (e *env) secret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{}}
	for key, path := range map[string]string{"ca.crt": e.tls.CA, "tls.crt": e.tls.Cert, "tls.key": e.tls.Key} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Data[key] = b
	}
	return s
}

// install renders the chart with valuesFile and starts it; the cluster is
// removed at the end of the test (and its absence checked).
func (e *env) install(t *testing.T, valuesFile, network string, subnet int) (*cluster.Cluster, *cluster.Manifests) {
	t.Helper()
	return e.installChart(t, chartDir, valuesFile, network, subnet)
}

func (e *env) installChart(t *testing.T, chartDir, valuesFile, network string, subnet int) (*cluster.Cluster, *cluster.Manifests) {
	t.Helper()
	vals, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cluster.Render(chartDir, cluster.RenderOptions{Release: release, Namespace: namespace, Values: string(vals)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.StatefulSets {
		for _, v := range s.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				m.Secrets[v.Secret.SecretName] = e.secret(t, v.Secret.SecretName)
			}
		}
	}
	work := filepath.Join(e.dir, network)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Store: e.st, Manifests: m, Network: network,
		Subnet: netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", subnet)), WorkDir: work, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.running = append(e.running, c)
	e.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.Pods() {
				t.Logf("--- log of %s (tail) ---\n%s", p, tail(c.Log(context.Background(), p), 3000))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
		left, err := e.st.Leftovers(context.Background(), false)
		if err != nil {
			t.Errorf("leftovers: %v", err)
		} else if len(left) > 0 {
			t.Errorf("the cluster left %v behind", left)
		}
	})
	return c, m
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// arg returns the value of --name=value in the rendered args of the only
// container of StatefulSet set.
func arg(t *testing.T, m *cluster.Manifests, set, name string) string {
	t.Helper()
	s, ok := m.StatefulSets[set]
	if !ok {
		t.Fatalf("no StatefulSet %s in the release", set)
	}
	for _, a := range s.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no --%s", set, name)
	return ""
}

// volumePath is the host directory of a podman volume.
func (e *env) volumePath(t *testing.T, name string) string {
	t.Helper()
	p, err := e.st.Podman(context.Background(), "volume", "inspect", "--format", "{{.Mountpoint}}", name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// steps counts the lines of the job's steps.jsonl and returns the last step.
func steps(path string) (lines int, last int64) {
	f, err := os.Open(path)
	if err != nil {
		return 0, -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	last = -1
	for sc.Scan() {
		var l struct {
			Step int64 `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines++
			last = max(last, l.Step)
		}
	}
	return lines, last
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out after %s waiting for %s", d, what)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// leader asks a coordinator replica (over mutual TLS, at its pod IP) which
// replica leads raft.
// leader asks the coordinator pods which replica leads, for up to 30 s,
// and returns its id and the highest raft term any replica reported
// ("" when none names a leader).
func (e *env) leader(t *testing.T, c *cluster.Cluster, pods []string, port string) (string, uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if l, term := e.askLeader(t, c, pods, port); l != "" {
			return l, term
		}
	}
	return "", 0
}

func (e *env) askLeader(t *testing.T, c *cluster.Cluster, pods []string, port string) (string, uint64) {
	t.Helper()
	tc, err := e.tls.Load()
	if err != nil {
		t.Fatal(err)
	}
	var leader string
	var term uint64
	for _, p := range pods {
		ip := c.PodIP(p)
		if ip == "" {
			continue
		}
		conn, err := grpc.NewClient(ip+":"+port, tc.DialOption())
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		li, err := controlpb.NewControlClient(conn).Leader(ctx, &controlpb.LeaderRequest{})
		cancel()
		conn.Close()
		if err != nil {
			continue
		}
		if li.GetTerm() > term {
			term = li.GetTerm()
		}
		if leader == "" {
			leader = li.GetLeaderId()
		}
	}
	return leader, term
}

// trainingLines returns the worker "training" log lines (JSON) of the pods
// whose name starts with prefix.
func trainingLines(c *cluster.Cluster, prefix string) []map[string]any {
	var out []map[string]any
	for _, p := range c.Pods() {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		for _, l := range strings.Split(c.Log(context.Background(), p), "\n") {
			if !strings.Contains(l, `"msg":"training"`) {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil {
				m["_pod"] = p
				out = append(out, m)
			}
		}
	}
	return out
}

// TestCluster (make cluster-e2e) installs the chart's release as podman
// containers and trains a job through failure drills, then runs the
// multi-node layout. It ends with the summary line.
func TestCluster(t *testing.T) {
	e := newEnv(t)
	var sum summary
	t.Run("train", func(t *testing.T) { trainWithDrills(t, e, &sum) })
	t.Run("nodes", func(t *testing.T) { nodes(t, e) })
	t.Run("broken-chart", func(t *testing.T) { brokenChart(t, e) })
	fmt.Printf("cluster: pods %d, kills %d, recovered %d, samples lost %d, duplicated %d, first step after %.1f s\n",
		sum.pods, sum.kills, sum.recovered, sum.lost, sum.duplicated, sum.firstStep.Seconds())
	if sum.lost != 0 || sum.duplicated != 0 || sum.recovered != sum.kills || sum.kills == 0 {
		t.Errorf("goals: lost 0, duplicated 0, recovered = kills > 0")
	}
}

type summary struct {
	pods, kills, recovered, lost, duplicated int
	firstStep                                time.Duration
}

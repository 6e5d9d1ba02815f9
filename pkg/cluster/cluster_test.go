package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	ckpt "github.com/ringtrain/ringtrain/pkg/checkpoint/manifest"
	"github.com/ringtrain/ringtrain/pkg/cluster/embedded"
)

// shared is the one embedded etcd of this test binary; tests use distinct
// job names so that they do not see each other's keys.
var shared *embedded.Server

// startEmbedded is Options.Start over package embedded.
func startEmbedded(ctx context.Context, dir string, tls *ServerTLS, log *zap.Logger) (Server, error) {
	cfg := embedded.Config{Dir: dir, Logger: log}
	if tls != nil {
		cfg.TLS = &embedded.ServerTLS{CertFile: tls.CertFile, KeyFile: tls.KeyFile, CAFile: tls.CAFile}
	}
	return embedded.Start(ctx, cfg)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	shared, err = embedded.Start(context.Background(), embedded.Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start shared etcd:", err)
		os.Exit(2)
	}
	code := m.Run()
	shared.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(etcdLeftovers()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// etcdLeftovers are goroutines that etcd's server and client libraries
// leave behind for the life of the process (package-level loggers and
// schedulers), not ours.
func etcdLeftovers() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	}
}

func connect(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, Options{Endpoints: shared.Endpoints()})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// jobRuns numbers the test runs of one test binary, so that a test run
// twice (-count=2) against the shared etcd starts from an empty job; all
// calls of job within one run share the name.
var (
	jobRuns  atomic.Int64
	jobNames sync.Map // *testing.T -> job name
)

func job(t *testing.T, c *Client) *Job {
	t.Helper()
	fresh := fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), jobRuns.Add(1))
	name, _ := jobNames.LoadOrStore(t, fresh)
	j, err := c.Job(name.(string))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestEmbeddedRestartKeepsDataAndCloseIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(ctx, Options{Dir: dir, Start: startEmbedded})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded() {
		t.Fatal("Open without endpoints did not start an embedded server")
	}
	if _, err := c.Etcd().Put(ctx, "/ringtrain/x/k", "v1"); err != nil {
		t.Fatal(err)
	}
	eps := c.Endpoints()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The server is gone: a client to its old endpoint cannot reach it.
	if _, err := Connect(ctx, Options{Endpoints: eps, DialTimeout: 500 * time.Millisecond}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("connect to a closed server: got %v, want ErrUnreachable", err)
	}

	c2, err := Open(ctx, Options{Dir: dir, Start: startEmbedded})
	if err != nil {
		t.Fatalf("restart in the same directory: %v", err)
	}
	defer c2.Close()
	resp, err := c2.Etcd().Get(ctx, "/ringtrain/x/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart got %v, want the value v1", resp.Kvs)
	}
}

func TestOpenAndConnectErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open with nothing: got %v, want ErrInvalid", err)
	}
	if _, err := Connect(ctx, Options{Endpoints: []string{" "}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("blank endpoint: got %v, want ErrInvalid", err)
	}
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = Connect(ctx, Options{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("dead endpoint: got %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dead endpoint took %s to fail", d)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, bad := range []string{"", "a/b", "a b", "x\x00", strings.Repeat("n", 129)} {
		if err := ValidateName("job name", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	for _, good := range []string{"cifar", "job-1_x.y", "w0"} {
		if err := ValidateName("job name", good); err != nil {
			t.Errorf("ValidateName(%q) = %v", good, err)
		}
	}
}

// nextSnapshot waits for a snapshot on ch for up to d.
func nextSnapshot(t *testing.T, ch <-chan MemberSnapshot, d time.Duration) MemberSnapshot {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return s
	case <-time.After(d):
		t.Fatalf("no membership change within %s", d)
	}
	return MemberSnapshot{}
}

func ids(ms []Member) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.ID
	}
	return strings.Join(s, ",")
}

func TestMembershipLeaseExpiryAndWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	coord := job(t, connect(t))
	w, err := coord.WatchMembers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := nextSnapshot(t, w, time.Second); len(s.Members) != 0 || len(s.Events) != 0 {
		t.Fatalf("initial snapshot %+v, want empty", s)
	}

	// Each worker has its own client, as a worker process would.
	ca, cb := connect(t), connect(t)
	ttl := time.Second
	ra, err := job(t, ca).Register(ctx, Member{ID: "a", Address: "127.0.0.1:1", HostID: "h", Device: "cpu", PID: 11}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := job(t, cb).Register(ctx, Member{ID: "b", Address: "127.0.0.1:2", HostID: "h", Device: "cpu", PID: 12}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Member().JoinRevision >= rb.Member().JoinRevision {
		t.Fatalf("join revisions %d, %d not increasing", ra.Member().JoinRevision, rb.Member().JoinRevision)
	}
	var s MemberSnapshot
	for ids(s.Members) != "a,b" {
		s = nextSnapshot(t, w, 2*time.Second)
	}
	if s.Members[1].Address != "127.0.0.1:2" || s.Members[1].PID != 12 || s.Members[1].Started.IsZero() {
		t.Fatalf("member b read back as %+v", s.Members[1])
	}
	// A second live registration of the same id is refused.
	if _, err := job(t, connect(t)).Register(ctx, Member{ID: "a"}, ttl); !errors.Is(err, ErrMemberExists) {
		t.Fatalf("duplicate id: got %v, want ErrMemberExists", err)
	}
	list, _, err := coord.Members(ctx)
	if err != nil || ids(list) != "a,b" {
		t.Fatalf("Members = %v, %v; want a,b", ids(list), err)
	}

	// b dies without revoking: its lease must expire within the TTL (plus
	// etcd's lease-check slack) and the watch must report it.
	killed := time.Now()
	cb.Close()
	select {
	case <-rb.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("b's registration Done not closed after its client closed")
	}
	s = nextSnapshot(t, w, ttl+4*time.Second)
	if ids(s.Members) != "a" || len(s.Events) != 1 || s.Events[0].Type != MemberLeft || s.Events[0].Member.ID != "b" {
		t.Fatalf("after b's death got members %q events %+v", ids(s.Members), s.Events)
	}
	t.Logf("lease expiry noticed %s after the client closed (TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)
	select {
	case <-ra.Done():
		t.Fatal("a's registration lost although a is alive")
	default:
	}

	// a leaves cleanly: revocation deletes the key at once.
	left := time.Now()
	if err := ra.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ra.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s = nextSnapshot(t, w, 2*time.Second)
	if len(s.Members) != 0 || s.Events[0].Type != MemberLeft {
		t.Fatalf("after a left: %+v", s)
	}
	if d := time.Since(left); d > ttl {
		t.Fatalf("clean leave took %s, longer than the TTL", d)
	}
	// The id is free again.
	ra2, err := job(t, ca).Register(ctx, Member{ID: "a"}, ttl)
	if err != nil {
		t.Fatalf("re-register a: %v", err)
	}
	s = nextSnapshot(t, w, 2*time.Second)
	if ids(s.Members) != "a" || s.Events[0].Type != MemberJoined {
		t.Fatalf("re-join: %+v", s)
	}
	ra2.Close()

	cancel()
	for range w { // the channel closes when ctx ends
	}
}

func TestRegisterRejectsBadInput(t *testing.T) {
	j := job(t, connect(t))
	ctx := context.Background()
	if _, err := j.Register(ctx, Member{ID: "x/y"}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := j.Register(ctx, Member{ID: "x"}, -time.Second); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative ttl: %v", err)
	}
	if _, err := j.Register(ctx, Member{ID: "x", PID: -1}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative pid: %v", err)
	}
}

func manifest(step int64, acc float64) Manifest {
	return Manifest{
		Step: step, Epoch: step / 10, Cursor: step * 128 % 50000, WorldSize: 2, ConfigHash: "cfg1",
		Files: []ckpt.File{
			{Name: "model.safetensors", Size: 1000 + step, SHA256: strings.Repeat("ab", 32)},
			{Name: "meta.json", Size: 10, SHA256: strings.Repeat("01", 32)},
		},
		Accuracy: &acc,
	}
}

func TestManifests(t *testing.T) {
	j := job(t, connect(t))
	ctx := context.Background()
	if _, err := j.LatestManifest(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest of none: %v", err)
	}
	// Steps 2, 10, 100 would sort 10, 100, 2 without zero padding.
	for _, step := range []int64{10, 2, 100} {
		key, err := j.PutManifest(ctx, manifest(step, float64(step)/1000))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(key, fmt.Sprintf("/checkpoints/%020d", step)) {
			t.Fatalf("key %q", key)
		}
	}
	all, err := j.ListManifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, m := range all {
		steps = append(steps, m.Step)
	}
	if fmt.Sprint(steps) != "[2 10 100]" {
		t.Fatalf("list order %v", steps)
	}
	latest, err := j.LatestManifest(ctx)
	if err != nil || latest.Step != 100 {
		t.Fatalf("latest = %d, %v", latest.Step, err)
	}
	got, err := j.GetManifest(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalSize() != 1020 || *got.Accuracy != 0.01 || got.Files[0].Name != "model.safetensors" || got.Created.IsZero() {
		t.Fatalf("round trip: %+v", got)
	}
	if err := j.DeleteManifest(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteManifest(ctx, 100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := j.GetManifest(ctx, 100); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if latest, _ := j.LatestManifest(ctx); latest.Step != 10 {
		t.Fatalf("latest after delete = %d", latest.Step)
	}

	bad := []func(*Manifest){
		func(m *Manifest) { m.Step = -1 },
		func(m *Manifest) { m.WorldSize = 0 },
		func(m *Manifest) { m.Files = nil },
		func(m *Manifest) { m.Files[0].SHA256 = "xyz" },
		func(m *Manifest) { m.Files[0].SHA256 = strings.Repeat("AB", 32) },
		func(m *Manifest) { m.Files[1].Name = m.Files[0].Name },
		func(m *Manifest) { m.Files[0].Size = -5 },
	}
	for i, f := range bad {
		m := manifest(5, 0)
		f(&m)
		if _, err := j.PutManifest(ctx, m); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad manifest %d: got %v, want ErrInvalid", i, err)
		}
	}
}

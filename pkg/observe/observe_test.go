package observe

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ringtrain/ringtrain/pkg/tlsconf"
)

func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestHealthFlips(t *testing.T) {
	var ready atomic.Bool
	s := start(t, Options{Health: &Health{Ready: func() error {
		if !ready.Load() {
			return errors.New("no leader")
		}
		return nil
	}}})
	c := http.DefaultClient
	if code, body := get(t, c, s.URL()+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, c, s.URL()+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no leader") {
		t.Fatalf("/readyz while not ready: %d %q", code, body)
	}
	ready.Store(true)
	if code, _ := get(t, c, s.URL()+"/readyz"); code != 200 {
		t.Fatalf("/readyz while ready: %d", code)
	}
	ready.Store(false)
	if code, _ := get(t, c, s.URL()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after losing readiness: %d", code)
	}
}

func TestWorkerReadiness(t *testing.T) {
	m := NewWorkerMetrics()
	if err := m.Stepping(1, time.Minute); err == nil {
		t.Fatal("ready before any step")
	}
	m.ObserveStep(StepSample{Step: 1, Generation: 1, World: 2, Duration: time.Millisecond})
	if err := m.Stepping(1, time.Minute); err != nil {
		t.Fatalf("not ready after a step of the current plan: %v", err)
	}
	if err := m.Stepping(2, time.Minute); err == nil {
		t.Fatal("ready although its last step was under an older plan")
	}
	time.Sleep(20 * time.Millisecond)
	if err := m.Stepping(1, 10*time.Millisecond); err == nil {
		t.Fatal("ready although it stopped stepping")
	}
}

// TestMetricNames lints both registries with client_golang's promlint
// (the checks of promtool check metrics) after every metric moved, and
// checks the names the docs promise.
func TestMetricNames(t *testing.T) {
	w := NewWorkerMetrics()
	s := StepSample{Step: 3, Epoch: 0, Generation: 2, World: 2, Loss: 1.5, Accuracy: 0.5, Images: 64, Duration: 80 * time.Millisecond,
		Data: time.Millisecond, Compute: 60 * time.Millisecond, Exposed: 5 * time.Millisecond, Optimizer: 4 * time.Millisecond,
		AllReduceBytes: 1 << 20, Comm: 10 * time.Millisecond, Hidden: 5 * time.Millisecond, ImagesPerSec: 800}
	w.ObserveStep(s)
	w.ObserveEval(1.2, 0.6)
	w.RingFailure()
	w.Rollback()
	w.CheckpointWritten(time.Second, 1000)
	w.SetLoaderQueue(3)
	w.SetPlan(2, 1, 2)
	w.SetDevice("cuda", "an old GPU", "fp32")
	w.SetDevice("cuda", "NVIDIA H100 80GB HBM3", "bf16") // replaces the labels
	w.SetDeviceMemory(3<<30, 1<<30, 5<<30, 80<<30)
	c := NewCoordinatorMetrics()
	c.ObserveStep(s, 0)
	c.RingRebuilds.WithLabelValues(ReasonFailure).Inc()
	c.Failures.Inc()
	c.SetMembers(map[string]int{StateTraining: 2, StateGone: 1})
	for who, g := range map[string]prometheus.Gatherer{"worker": w.Registry, "coordinator": c.Registry} {
		problems, err := testutil.GatherAndLint(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", who, p.Metric, p.Text)
		}
	}
	for _, want := range []struct {
		g    prometheus.Gatherer
		name string
		val  float64
	}{
		{w.Registry, "ringtrain_worker_images_total", 64},
		{w.Registry, "ringtrain_worker_ring_failures_total", 1},
		{w.Registry, "ringtrain_worker_data_loader_queued_batches", 3},
		{w.Registry, "ringtrain_worker_allreduce_hidden_ratio", 0.5},
		// 1 MiB in 10 ms x 2(N-1)/N with N=2.
		{w.Registry, "ringtrain_worker_allreduce_busbw_bytes_per_second", float64(1<<20) / 0.01},
		{c.Registry, "ringtrain_failures_total", 1},
		{c.Registry, "ringtrain_job_step", 3},
		{c.Registry, "ringtrain_train_loss", 1.5},
	} {
		if got := value(t, want.g, want.name); got != want.val {
			t.Errorf("%s = %v, want %v", want.name, got, want.val)
		}
	}
	if n, _ := testutil.GatherAndCount(w.Registry, "ringtrain_worker_device_info"); n != 1 {
		t.Errorf("ringtrain_worker_device_info has %d series, want 1", n)
	}
	if got := testutil.ToFloat64(w.devInfo.WithLabelValues("cuda", "NVIDIA H100 80GB HBM3", "bf16")); got != 1 {
		t.Errorf("device_info = %v", got)
	}
	for kind, want := range map[string]float64{"live": 3 << 30, "cached": 1 << 30, "peak": 5 << 30, "total": 80 << 30} {
		if got := testutil.ToFloat64(w.devMem.WithLabelValues(kind)); got != want {
			t.Errorf("device_memory_bytes{kind=%s} = %v, want %v", kind, got, want)
		}
	}
	if n, _ := testutil.GatherAndCount(w.Registry, "ringtrain_worker_step_seconds"); n != 5 {
		t.Errorf("ringtrain_worker_step_seconds has %d phase series, want 5", n)
	}
	if got := testutil.ToFloat64(c.Members.WithLabelValues(StateGone)); got != 1 {
		t.Errorf("members{state=gone} = %v", got)
	}
}

// value returns the value of the unlabelled gauge or counter name.
func value(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		m := f.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestTokenAndTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := tlsconf.Generate(dir, tlsconf.DefaultServerName, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	m := NewWorkerMetrics()
	s := start(t, Options{TLS: tc.ServerTLS(), Token: "s3cret", Registry: m.Registry})
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s is not https", s.URL())
	}
	ca, _ := os.ReadFile(files.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	// A browser-like client: verifies the server, has no client certificate.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: tlsconf.DefaultServerName}}}
	if code, _ := get(t, c, s.URL()+"/healthz"); code != 200 {
		t.Fatalf("/healthz without credentials: %d (probes must get through)", code)
	}
	if code, _ := get(t, c, s.URL()+"/metrics"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: %d", code)
	}
	if code, _ := get(t, c, s.URL()+"/metrics", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with a wrong token: %d", code)
	}
	if code, body := get(t, c, s.URL()+"/metrics", "Authorization", "Bearer s3cret"); code != 200 || !strings.Contains(body, "ringtrain_worker_steps_total") {
		t.Fatalf("/metrics with the token: %d", code)
	}
	if code, _ := get(t, c, s.URL()+"/metrics?token=s3cret"); code != 200 {
		t.Fatalf("/metrics?token=: %d", code)
	}
	// A client certificate of the job's CA stands for the token.
	mc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.ClientTLS()}}
	if code, _ := get(t, mc, s.URL()+"/metrics"); code != 200 {
		t.Fatalf("/metrics with a client certificate: %d", code)
	}
	// Plain HTTP to the HTTPS port fails.
	if code, _ := get(t, http.DefaultClient, "http://"+s.Addr()+"/healthz"); code == 200 {
		t.Fatal("plain HTTP answered on the TLS port")
	}
}

func testBoard() *Board {
	b := NewBoard()
	b.UpdateJob(func(j *JobView) { j.Name, j.Status, j.Epochs, j.TotalSteps = "cifar", "running", 2, 20 })
	b.UpdateWorker("w0", func(w *WorkerView) { w.Rank, w.State, w.Host, w.LastSeen = 0, StateTraining, "h0", time.Now() })
	b.UpdateWorker("w1", func(w *WorkerView) { w.Rank, w.State = -1, StateGone })
	b.AddStep(StepPoint{Step: 1, Loss: 2.3, Accuracy: 0.1})
	b.AddStep(StepPoint{Step: 2, Loss: 2.2, Accuracy: 0.15})
	b.AddEvent("failure", "ring of generation 1 failed <script>")
	return b
}

func TestDashboardPage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "history.json"), []byte(`{"job":"cifar"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("no"), 0o644)
	srv := httptest.NewServer(NewDashboard(testBoard(), DashboardOptions{OutputDir: dir}))
	defer srv.Close()
	code, body := get(t, srv.Client(), srv.URL+"/")
	if code != 200 {
		t.Fatalf("/: %d", code)
	}
	// The plain-HTML fallback carries the state without JavaScript.
	for _, want := range []string{`<tr data-worker="w0" class="row-training">`, `class="state st-training">training`, `class="state st-gone">gone`,
		`href="files/history.json"`, `ring of generation 1 failed &lt;script&gt;`, `http-equiv="refresh"`, `src="assets/app.js"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if code, body := get(t, srv.Client(), srv.URL+"/assets/app.js"); code != 200 || !strings.Contains(body, "EventSource") {
		t.Errorf("/assets/app.js: %d", code)
	}
	if code, body := get(t, srv.Client(), srv.URL+"/files/history.json"); code != 200 || body != `{"job":"cifar"}` {
		t.Errorf("/files/history.json: %d %q", code, body)
	}
	for _, p := range []string{"/files/secret.txt", "/files/..%2fsecret.txt", "/files/model.safetensors", "/nope"} {
		if code, _ := get(t, srv.Client(), srv.URL+p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	code, body = get(t, srv.Client(), srv.URL+"/api/state?from=1")
	var s Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 {
		t.Fatalf("/api/state: %d %v", code, err)
	}
	if s.StepsFrom != 1 || s.StepsEnd != 2 || len(s.Steps) != 1 || s.Steps[0].Step != 2 || len(s.Workers) != 2 || s.Workers[0].ID != "w0" {
		t.Errorf("/api/state?from=1: %+v", s)
	}
}

// readEvent reads one server-sent "state" event.
func readEvent(t *testing.T, r *bufio.Reader) Snapshot {
	t.Helper()
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case line == "" && data != "":
			if event != "state" {
				t.Fatalf("event %q", event)
			}
			var s Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
}

func TestDashboardEvents(t *testing.T) {
	b := testBoard()
	srv := httptest.NewServer(NewDashboard(b, DashboardOptions{MinInterval: time.Millisecond}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	first := readEvent(t, r)
	if len(first.Steps) != 2 || first.StepsEnd != 2 {
		t.Fatalf("first event: %d steps, end %d", len(first.Steps), first.StepsEnd)
	}
	b.AddStep(StepPoint{Step: 3, Loss: 2.0})
	b.UpdateWorker("w0", func(w *WorkerView) { w.State = StateStalled })
	var next Snapshot
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		next = readEvent(t, r)
		if next.Workers[0].State == StateStalled {
			break
		}
	}
	if next.Workers[0].State != StateStalled {
		t.Fatalf("no event with the stalled worker")
	}
	if next.StepsFrom != 2 || next.StepsEnd != 3 || len(next.Steps) != 1 || next.Steps[0].Step != 3 {
		t.Fatalf("update carries steps [%d,%d) %+v, want only step 3", next.StepsFrom, next.StepsEnd, next.Steps)
	}
}

func TestBoardThinsOldSteps(t *testing.T) {
	b := NewBoard()
	for i := 1; i <= maxSteps+1; i++ {
		b.AddStep(StepPoint{Step: int64(i)})
	}
	s := b.Snapshot(0)
	if len(s.Steps) > maxSteps || len(s.Steps) < maxSteps/2 {
		t.Fatalf("%d points kept", len(s.Steps))
	}
	if s.Steps[len(s.Steps)-1].Step != int64(maxSteps+1) || s.Steps[0].Step != 1 {
		t.Fatalf("first %d last %d", s.Steps[0].Step, s.Steps[len(s.Steps)-1].Step)
	}
	if s.StepsEnd-s.StepsFrom != len(s.Steps) {
		t.Fatalf("indices [%d,%d) for %d points", s.StepsFrom, s.StepsEnd, len(s.Steps))
	}
	// A client that had points from before the thinning gets them all again.
	if again := b.Snapshot(5); again.StepsFrom != s.StepsFrom || len(again.Steps) != len(s.Steps) {
		t.Fatalf("a stale client got [%d,%d)", again.StepsFrom, again.StepsEnd)
	}
}

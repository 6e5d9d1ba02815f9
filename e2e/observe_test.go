//go:build observe

// The live view of a job with real parts (make test-observe): Debian's
// chromium driven by chromedp loads the dashboard of a running 2-worker
// job, and Debian's prometheus scrapes the coordinator and both workers.

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// observedJob is a running 2-worker job with its dashboard and metrics.
type observedJob struct {
	out       string
	coord     *proc
	dashboard string            // http://127.0.0.1:PORT
	control   string            // the coordinator's control address
	workers   map[string]string // worker id -> its /metrics base URL
	pids      map[string]int    // worker id -> pid
}

// startObservedJob runs a long job (stopped by the test's cleanup) whose
// dashboard listens on a free port; restarts are off, so a killed worker
// stays gone.
func startObservedJob(t *testing.T) *observedJob {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	port := freePorts(t, 1)[0]
	args := []string{"--workers", "2", "--restart-workers=false", "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--dataset", "synthetic", "--synthetic-size", "1024", "--epochs", "400", "--batch", "64", "--width", "0.25",
		"--threads", "1", "--no-progress", "--checkpoint-every", "50", "--output", out}
	j := &observedJob{out: out, coord: start(t, filepath.Dir(out), "coordinator", nil, args...),
		dashboard: fmt.Sprintf("http://127.0.0.1:%d", port), workers: map[string]string{}, pids: map[string]int{}}
	waitFor(t, 60*time.Second, "both workers' metrics addresses", func() bool {
		for _, m := range logLines(t, filepath.Join(out, "logs", "w*.log"), "http") {
			id, _ := m["worker"].(string)
			u, _ := m["url"].(string)
			j.workers[id] = u
		}
		return len(j.workers) == 2
	})
	for _, m := range logLines(t, j.coord.logPath, "coordinator ready") {
		j.control, _ = m["control"].(string)
	}
	for _, m := range logLines(t, j.coord.logPath, "started worker") {
		id, _ := m["id"].(string)
		pid, _ := m["pid"].(float64)
		j.pids[id] = int(pid)
	}
	if j.control == "" || len(j.pids) != 2 {
		t.Fatalf("coordinator log lacks its control address or the workers' pids:\n%s", tail(j.coord.log(), 3000))
	}
	waitFor(t, 120*time.Second, "the first steps", func() bool { return countSteps(out) >= 5 })
	return j
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", u, resp.Status, b)
	}
	return string(b)
}

// TestDashboardInBrowser: headless chromium shows the loss curve gaining
// points while the job trains, and a killed worker's state change; the
// screenshot goes to $RINGTRAIN_OBSERVE_SCREENSHOT when set.
func TestDashboardInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	j := startObservedJob(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1100), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()

	if err := chromedp.Do(ctx, chromedp.Navigate(j.dashboard+"/"), chromedp.WaitVisible(chromedp.CSS(`#live.on`))); err != nil {
		t.Fatalf("dashboard did not go live: %v", err)
	}
	// Read the live page with one script each (the page re-renders its
	// tables on every update, so a node looked up first may be gone).
	eval := func(expr string) string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	attr := func(sel, name string) int {
		n, _ := strconv.Atoi(eval(fmt.Sprintf(`(document.querySelector(%q)?.getAttribute(%q)) ?? ""`, sel, name)))
		return n
	}
	text := func(sel string) string {
		return strings.TrimSpace(eval(fmt.Sprintf(`(document.querySelector(%q)?.textContent) ?? ""`, sel)))
	}
	first := attr(`#c-loss`, "data-points")
	waitFor(t, 60*time.Second, "the loss curve to gain points", func() bool { return attr(`#c-loss`, "data-points") > first+10 })
	t.Logf("loss curve: %d points, then %d (without a reload)", first, attr(`#c-loss`, "data-points"))
	for _, id := range []string{"w0", "w1"} {
		if s := text(fmt.Sprintf(`tr[data-worker="%s"] td.state`, id)); s != "training" {
			t.Fatalf("%s shows %q before the kill, want training", id, s)
		}
	}

	if err := syscall.Kill(j.pids["w1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var state string
	waitFor(t, 60*time.Second, "w1 to leave the training state on the page", func() bool {
		state = text(`tr[data-worker="w1"] td.state`)
		return state == "gone" || state == "stalled"
	})
	t.Logf("w1 shows %q %.1f s after SIGKILL", state, time.Since(killed).Seconds())
	waitFor(t, 60*time.Second, "a failure on the timeline", func() bool { return strings.Contains(text(`#events`), "failure") })
	after := attr(`#c-loss`, "data-points")
	waitFor(t, 60*time.Second, "training to go on with w0", func() bool { return attr(`#c-loss`, "data-points") > after+5 })

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv("RINGTRAIN_OBSERVE_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))

	// A phone-sized screen: one column, nothing wider than the screen
	// (wide tables scroll inside their card).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3))); err != nil {
		t.Fatal(err)
	}
	// Wait for a frame rendered at the new size (the poll runs in
	// requestAnimationFrame callbacks, after the resize handlers).
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.innerWidth === 390`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page never rendered at 390 px: %v", err)
	}
	if w := eval(`String(document.documentElement.scrollWidth) + " " + String(window.innerWidth)`); func() bool {
		var sw, iw int
		fmt.Sscan(w, &sw, &iw)
		return sw > iw || iw == 0
	}() {
		t.Errorf("on a 390 px wide screen the page is %s px wide (scroll width, screen width)", w)
	} else {
		t.Logf("phone-sized screen: page width, screen width = %s", w)
	}

	// The same facts in the terminal.
	st, err := exec.Command(bin("coordinator"), "status", "--coordinator", j.control).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^w0 .* training `).Match(st) || !strings.Contains(string(st), "running") {
		t.Fatalf("coordinator status: %v\n%s", err, st)
	}
	t.Logf("coordinator status:\n%s", st)
}

// promQuery runs an instant PromQL query and returns its first sample.
func promQuery(t *testing.T, base, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) == 0 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// TestPrometheusScrapesJob: a real Prometheus scrapes the coordinator and
// both workers; PromQL returns the job's images/s, and the failure counter
// moves after a worker is killed. promtool checks every /metrics page.
func TestPrometheusScrapesJob(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus)")
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (it comes with Debian's prometheus package)")
	}
	j := startObservedJob(t)

	// promtool check metrics: the Prometheus conventions, on the live pages.
	pages := map[string]string{"coordinator": j.dashboard}
	for id, u := range j.workers {
		pages[id] = u
	}
	for who, base := range pages {
		c := exec.Command("promtool", "check", "metrics")
		c.Stdin = strings.NewReader(get(t, base+"/metrics"))
		if b, err := c.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s: %v\n%s", who, err, b)
		}
	}

	dir := t.TempDir()
	port := freePorts(t, 1)[0]
	var targets []string
	for _, base := range pages {
		targets = append(targets, fmt.Sprintf("%q", strings.TrimPrefix(base, "http://")))
	}
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: ringtrain\n    static_configs:\n      - targets: [%s]\n",
		strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := startBin(t, dir, "prometheus", promBin, nil, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 60*time.Second, "prometheus to scrape all three targets", func() bool {
		v, ok := promQuery(t, base, `count(up == 1)`)
		return ok && v == 3
	})
	var ips, wips float64
	waitFor(t, 60*time.Second, "images/s in prometheus", func() bool {
		var ok1, ok2 bool
		ips, ok1 = promQuery(t, base, `ringtrain_job_images_per_second`)
		wips, ok2 = promQuery(t, base, `sum(rate(ringtrain_worker_images_total[10s]))`)
		return ok1 && ok2 && ips > 0 && wips > 0
	})
	// Once the window holds only training, the workers' counters and the
	// coordinator's gauge tell the same throughput.
	var cips float64
	waitFor(t, 60*time.Second, "the workers' image rate to match the coordinator's", func() bool {
		ips, _ = promQuery(t, base, `ringtrain_job_images_per_second`)
		cips, _ = promQuery(t, base, `rate(ringtrain_job_images_total[10s])`)
		wips, _ = promQuery(t, base, `sum(rate(ringtrain_worker_images_total[10s]))`)
		// (past the start-up, when the window holds only steps)
		return cips > 0.4*ips && wips > 0.7*cips && wips < 1.4*cips
	})
	t.Logf("PromQL: ringtrain_job_images_per_second = %.0f, rate(ringtrain_job_images_total[10s]) = %.0f, sum(rate(ringtrain_worker_images_total[10s])) = %.0f",
		ips, cips, wips)
	if v, ok := promQuery(t, base, `ringtrain_failures_total`); !ok || v != 0 {
		t.Fatalf("ringtrain_failures_total before the kill: %v (%v)", v, ok)
	}

	if err := syscall.Kill(j.pids["w1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var failures float64
	waitFor(t, 60*time.Second, "the failure counter to move in prometheus", func() bool {
		v, ok := promQuery(t, base, `ringtrain_failures_total`)
		failures = v
		return ok && v >= 1
	})
	waitFor(t, 30*time.Second, "prometheus to see the killed worker down", func() bool {
		v, ok := promQuery(t, base, `count(up == 0)`)
		return ok && v == 1
	})
	rebuilds, _ := promQuery(t, base, `sum(ringtrain_ring_rebuilds_total{reason=~"failure|leave"})`)
	t.Logf("after the kill: ringtrain_failures_total = %.0f, ring rebuilds for failure/leave = %.0f, one target down", failures, rebuilds)
	if err := prom.cmd.Process.Signal(syscall.SIGTERM); err == nil {
		_ = prom.wait(10 * time.Second)
	}
}

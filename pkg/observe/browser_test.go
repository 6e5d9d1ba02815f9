package observe

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// In a real browser (Debian's chromium), the workers table shows a GPU
// worker's device memory beside its device, and nothing of the kind for
// a CPU worker.
func TestDashboardShowsDeviceMemory(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	b := NewBoard()
	b.UpdateWorker("g0", func(w *WorkerView) {
		w.Device, w.Rank, w.State, w.DeviceMemGiB, w.DeviceTotalGiB = "cuda", 0, StateTraining, 3.04, 79.6
	})
	b.UpdateWorker("c1", func(w *WorkerView) { w.Device, w.Rank, w.State = "cpu", 1, StateTraining })
	srv := httptest.NewServer(NewDashboard(b, DashboardOptions{}))
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`#live.on`))); err != nil {
		t.Fatalf("dashboard did not go live: %v", err)
	}
	cell := func(id string) string {
		expr := fmt.Sprintf(`(document.querySelector('tr[data-worker=%q] td:nth-child(3)')?.textContent) ?? ""`, id)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(s)
	}
	if got, want := cell("g0"), "cuda 3.0 / 80 GiB"; got != want {
		t.Errorf("GPU worker's device cell %q, want %q", got, want)
	}
	if got := cell("c1"); got != "cpu" {
		t.Errorf("CPU worker's device cell %q, want \"cpu\"", got)
	}
}

package observe

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

//go:embed assets
var assets embed.FS

// DownloadFiles are the output files the dashboard offers, when present.
var DownloadFiles = []string{"model.safetensors", "history.json", "history.csv", "loss.png", "accuracy.png", "steps.jsonl"}

// DashboardOptions configures the dashboard's handler.
type DashboardOptions struct {
	// OutputDir is the job's output directory: DownloadFiles found there
	// are offered under /files/. Empty: no downloads.
	OutputDir string
	// MinInterval is the least time between two updates sent to one
	// browser (default 250 ms): a fast job does not flood it.
	MinInterval time.Duration
}

// NewDashboard returns the dashboard's handler over b: the page (/), its
// embedded assets (/assets/), the state as JSON (/api/state), live updates
// as server-sent events (/api/events) and downloads (/files/NAME).
func NewDashboard(b *Board, o DashboardOptions) http.Handler {
	if o.MinInterval <= 0 {
		o.MinInterval = 250 * time.Millisecond
	}
	d := &dashboard{b: b, o: o}
	sub, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServer(http.FS(sub))))
	mux.HandleFunc("GET /api/state", d.serveState)
	mux.HandleFunc("GET /api/events", d.serveEvents)
	mux.HandleFunc("GET /files/{name}", d.serveFile)
	mux.HandleFunc("GET /{$}", d.servePage)
	return mux
}

type dashboard struct {
	b *Board
	o DashboardOptions
}

// liveEvents is how many of the newest events an update carries (the
// timeline's view; /api/state has them all).
const liveEvents = 100

// snapshot is the board's snapshot with the downloadable files filled in.
func (d *dashboard) snapshot(from, events int) Snapshot {
	s := d.b.snapshot(from, events)
	s.Job.Files = d.files()
	return s
}

func (d *dashboard) files() []FileView {
	if d.o.OutputDir == "" {
		return nil
	}
	var out []FileView
	for _, n := range DownloadFiles {
		if st, err := os.Stat(filepath.Join(d.o.OutputDir, n)); err == nil && st.Mode().IsRegular() {
			out = append(out, FileView{Name: n, Size: st.Size(), URL: "files/" + n})
		}
	}
	return out
}

func (d *dashboard) serveState(w http.ResponseWriter, r *http.Request) {
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d.snapshot(from, maxEvents))
}

// serveEvents streams a "state" event with the whole board (and the step
// points the browser does not have yet) at connection and after every
// change, at most every MinInterval, until the client goes away.
func (d *dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		changed := d.b.Changed()
		s := d.snapshot(from, liveEvents)
		from = s.StepsEnd
		b, err := json.Marshal(s)
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", b); err != nil {
			return
		}
		fl.Flush()
		for waiting := true; waiting; {
			select {
			case <-r.Context().Done():
				return
			case <-keep.C:
				if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
					return
				}
				fl.Flush()
			case <-changed:
				waiting = false
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(d.o.MinInterval):
		}
	}
}

func (d *dashboard) serveFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	allowed := false
	for _, n := range DownloadFiles {
		allowed = allowed || n == name
	}
	if !allowed || d.o.OutputDir == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if filepath.Ext(name) == ".safetensors" || filepath.Ext(name) == ".jsonl" {
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	}
	http.ServeFile(w, r, filepath.Join(d.o.OutputDir, name))
}

var page = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"pct":  func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) },
	"f4":   func(v float64) string { return fmt.Sprintf("%.4f", v) },
	"f0":   func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"f1":   func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"ago":  ago,
	"eta":  eta,
	"hms":  func(t time.Time) string { return t.Local().Format("15:04:05") },
	"size": size,
	"add1": func(v int64) int64 { return v + 1 },
	"newestFirst": func(es []Event) []Event {
		out := make([]Event, len(es))
		for i, e := range es {
			out[len(es)-1-i] = e
		}
		return out
	},
}).ParseFS(assets, "assets/index.html"))

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

func eta(sec float64) string {
	if sec < 0 {
		return "-"
	}
	return (time.Duration(sec) * time.Second).String()
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// servePage renders the page with the current state in plain HTML (what a
// browser without JavaScript shows, refreshed by a meta tag); the script
// then keeps it live.
func (d *dashboard) servePage(w http.ResponseWriter, r *http.Request) {
	s := d.snapshot(0, liveEvents)
	s.Steps = nil // the curves come from the script
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := page.Execute(w, s); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

package observe

import (
	"fmt"
	"net/http"
)

// Health answers the liveness and readiness probes. The zero value is
// live and ready.
type Health struct {
	// Ready reports why the process is not ready (nil: ready). It is
	// called for every /readyz request and must be quick and safe for
	// concurrent use. nil: always ready.
	Ready func() error
}

// Check returns the readiness error (nil when ready).
func (h *Health) Check() error {
	if h == nil || h.Ready == nil {
		return nil
	}
	return h.Ready()
}

func (h *Health) serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *Health) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.Check(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", err)
		return
	}
	fmt.Fprintln(w, "ready")
}

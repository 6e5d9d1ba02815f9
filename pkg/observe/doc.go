// Package observe shows a running job to people and to machines: an HTTP
// server with Prometheus metrics (/metrics), health endpoints (/healthz,
// /readyz) and, on the coordinator, a live dashboard (/, with assets
// embedded in the binary and updates over server-sent events).
//
// The pieces, each in its own file:
//
//   - server.go: Server, the HTTP listener (plain or TLS) with the routes
//     and the optional bearer token.
//   - health.go: Health, the liveness and readiness checks.
//   - metrics.go: WorkerMetrics and CoordinatorMetrics, the collectors of
//     each process (prometheus/client_golang) on their own registry.
//   - board.go: Board, the dashboard's model of the job (curves, workers,
//     ring, events), fed by the coordinator and safe for concurrent use.
//   - dashboard.go: the dashboard's handlers (HTML page with a plain-HTML
//     fallback, JSON state, server-sent events, output-file downloads).
//
// Promises: nothing served changes the job (every route is read-only); a
// request never blocks training code (the Board and the metrics take a
// mutex for a few field copies, and slow HTTP clients are served from
// copies); /healthz answers while the process is up; /readyz answers 200
// only while the process's Ready check passes, 503 with the reason
// otherwise. The package imports neither the coordinator nor the engine,
// so both binaries link it cheaply.
package observe

package observe

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrInvalid marks bad server options.
var ErrInvalid = errors.New("observe: invalid options")

// Options configures a Server.
type Options struct {
	// Addr is the listen address, e.g. "127.0.0.1:0" (a free port) or
	// ":8080". Required.
	Addr string
	// TLS, when set, makes the server HTTPS with this configuration's
	// certificate. Client certificates are verified when given but not
	// required (a browser rarely has one): the Token guards access.
	TLS *tls.Config
	// Token, when set, is required as "Authorization: Bearer TOKEN" (or a
	// client certificate verified against TLS.ClientCAs) on every route
	// except /healthz and /readyz, which probes reach without credentials.
	Token string
	// Registry is served at /metrics; nil serves no metrics.
	Registry *prometheus.Registry
	// Health answers /healthz and /readyz; nil: always live and ready.
	Health *Health
	// Dashboard, when set, is mounted at / (the coordinator's page).
	Dashboard http.Handler
}

// Server is a running HTTP server. Close stops it.
type Server struct {
	srv    *http.Server
	lis    net.Listener
	scheme string
	served chan error
}

// Start listens on o.Addr and serves until Close.
func Start(o Options) (*Server, error) {
	if o.Addr == "" {
		return nil, fmt.Errorf("%w: no listen address", ErrInvalid)
	}
	mux := http.NewServeMux()
	h := o.Health
	if h == nil {
		h = &Health{}
	}
	mux.HandleFunc("/healthz", h.serveLive)
	mux.HandleFunc("/readyz", h.serveReady)
	if o.Registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	}
	if o.Dashboard != nil {
		mux.Handle("/", o.Dashboard)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintln(w, "ringtrain: /metrics /healthz /readyz")
		})
	}
	var handler http.Handler = mux
	if o.Token != "" {
		handler = requireToken(o.Token, mux)
	}
	lis, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("observe: listen on %s: %w", o.Addr, err)
	}
	s := &Server{srv: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}, lis: lis, scheme: "http", served: make(chan error, 1)}
	if o.TLS != nil {
		tc := o.TLS.Clone()
		if tc.ClientAuth > tls.VerifyClientCertIfGiven {
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
		s.srv.TLSConfig = tc
		s.scheme = "https"
		lis = tls.NewListener(lis, tc)
	}
	go func() { s.served <- s.srv.Serve(lis) }()
	return s, nil
}

// Addr returns the bound address (host:port).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// URL returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.scheme + "://" + s.Addr() }

// Close stops the server; open event streams end. It is idempotent.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// requireToken lets health probes through and requires the bearer token
// or a verified client certificate for everything else.
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
		case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1:
		case subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(token)) == 1:
			// A browser cannot set a header on a page load or an
			// EventSource: ?token= is accepted too.
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="ringtrain"`)
			http.Error(w, "ringtrain: a bearer token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

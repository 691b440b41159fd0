// Package admin is the worker's admin HTTP server: the rotations console
// at /rotations/ and its JSON API under /api/v1/rotations, the asynq web UI
// (asynqmon) at /monitoring/, Prometheus metrics at /metrics, and the
// Kubernetes probes /healthz and /readyz.
//
//	srv, err := admin.New(admin.Options{
//		Addr:         "0.0.0.0:8080",
//		Token:        os.Getenv("REKEY_ADMIN_TOKEN"),
//		RedisConnOpt: redisOpt,
//		Gatherer:     reg,
//		Rotations:    rekeyClient,
//		Ready:        func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
//	})
//	...
//	go srv.ListenAndServe()
//	defer srv.Shutdown(ctx)
//
// The console can pause and cancel rotations, the asynq UI can delete and
// run tasks, and asynqmon has no authentication of its own, so a server
// reachable beyond loopback must have a token: the console, the UIs and
// /metrics then take HTTP basic auth (any user name, the token as
// password) or "Authorization: Bearer <token>". The probes stay open, as
// the kubelet sends no credentials. ReadOnly makes both UIs view-only.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// Paths served.
const (
	ConsolePath = "/rotations"        // the rotations console, under ConsolePath + "/"
	APIPath     = "/api/v1/rotations" // the console's JSON API
	UIPath      = "/monitoring"       // the asynq web UI and its API, under UIPath + "/"
	MetricsPath = "/metrics"
	HealthPath  = "/healthz"
	ReadyPath   = "/readyz"
)

// readyTimeout bounds one readiness check, so a hung Redis does not pile
// up probe requests; a probe's timeoutSeconds longer than this is moot.
const readyTimeout = 3 * time.Second

// Options configure a Server.
type Options struct {
	// Addr is the listen address (host:port). A host other than a loopback
	// address or "localhost" (including an empty host, meaning every
	// interface) requires a Token.
	Addr string
	// Token protects the UI and /metrics; empty means no authentication,
	// which New allows only on loopback.
	Token string
	// ReadOnly makes the console and the asynq UI view-only: their APIs
	// refuse every request but GET with 405 and the pages hide their
	// buttons.
	ReadOnly bool
	// RedisConnOpt is asynq's Redis, for the UI. Required.
	RedisConnOpt asynq.RedisConnOpt
	// Gatherer is served on /metrics; nil serves no /metrics.
	Gatherer prometheus.Gatherer
	// Rotations is the client the console reads and steers rotations
	// through, the one the CLI and tools use: its namespace is the
	// console's, and its task options are those of every resume and
	// cancel. Nil serves no console.
	Rotations *rekey.Client
	// Region is the workers' own region (--region), which the console
	// names where a rotation's place is the default one; "": it says
	// "default region".
	Region string
	// Ready reports whether the worker can take tasks; nil means always.
	Ready func(ctx context.Context) error
	// PayloadFormatter and ResultFormatter render tasks' payloads and
	// results in the UI. nil means FormatJSON for both.
	PayloadFormatter asynqmon.PayloadFormatter
	ResultFormatter  asynqmon.ResultFormatter
	// Logger receives failed readiness checks and metric collection
	// errors. nil means slog.Default().
	Logger *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	opts    Options
	log     *slog.Logger
	ui      *asynqmon.HTTPHandler
	handler http.Handler
	srv     *http.Server

	closeUI sync.Once
	uiErr   error
}

// New checks opts and builds the server; nothing listens until
// ListenAndServe or Serve.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		return nil, errors.New("admin: listen address is empty")
	}
	loopback, err := isLoopback(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen address %q: %w", opts.Addr, err)
	}
	if !loopback && opts.Token == "" {
		return nil, fmt.Errorf("admin: listen address %q is reachable beyond loopback: a token is required for the web UI and /metrics", opts.Addr)
	}
	if opts.RedisConnOpt == nil {
		return nil, errors.New("admin: no Redis connection options for the web UI")
	}
	// asynqmon.New panics on a connection option that does not make a
	// go-redis v9 client; check first, so a mistake is an error.
	rc, ok := opts.RedisConnOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("admin: unsupported Redis connection options %T", opts.RedisConnOpt)
	}
	rc.Close()
	if opts.PayloadFormatter == nil {
		opts.PayloadFormatter = asynqmon.PayloadFormatterFunc(FormatJSON)
	}
	if opts.ResultFormatter == nil {
		opts.ResultFormatter = asynqmon.ResultFormatterFunc(FormatJSON)
	}
	s := &Server{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "admin")
	s.ui = asynqmon.New(asynqmon.Options{
		RootPath:         UIPath,
		RedisConnOpt:     opts.RedisConnOpt,
		PayloadFormatter: opts.PayloadFormatter,
		ResultFormatter:  opts.ResultFormatter,
		ReadOnly:         opts.ReadOnly,
	})
	s.handler = s.routes()
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+ReadyPath, s.ready)
	if s.opts.Gatherer != nil {
		mux.Handle("GET "+MetricsPath, s.protect(promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
			// One failing collector (Redis down) must not hide the others.
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      promLogger{s.log},
		})))
	}
	// asynqmon's mutating API is plain POST/DELETE, and a browser sends
	// cached basic-auth credentials along with a cross-site form: reject
	// cross-origin writes.
	ui := http.Handler(s.ui)
	home := UIPath + "/"
	if s.opts.Rotations != nil {
		s.consoleRoutes(mux)
		s.apiRoutes(mux)
		ui, home = withConsoleLink(onlyQueues(ui, s.queues())), ConsolePath+"/"
	}
	mux.Handle(UIPath+"/", s.protect(http.NewCrossOriginProtection().Handler(uiHeaders(ui))))
	mux.Handle("GET /{$}", http.RedirectHandler(home, http.StatusFound))
	return mux
}

// Handler returns the server's handler, for tests and for mounting it in
// another server.
func (s *Server) Handler() http.Handler { return s.handler }

// ListenAndServe listens on Options.Addr and serves until Shutdown, then
// returns nil.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return s.Serve(ln)
}

// Serve serves on ln until Shutdown, then returns nil. Without a token, ln
// must be a loopback listener.
func (s *Server) Serve(ln net.Listener) error {
	if s.opts.Token == "" {
		if ok, _ := isLoopback(ln.Addr().String()); !ok {
			ln.Close()
			return fmt.Errorf("admin: listener %s is reachable beyond loopback: a token is required", ln.Addr())
		}
	}
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops the server gracefully (see http.Server.Shutdown) and
// closes the web UI's Redis connections.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.closeUI.Do(func() { s.uiErr = s.ui.Close() })
	if s.uiErr != nil {
		err = errors.Join(err, fmt.Errorf("admin: close web UI: %w", s.uiErr))
	}
	return err
}

// ready answers the readiness probe. The reason for a failure goes to the
// log, not the response: the probe is open to anyone who reaches the port.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.opts.Ready(ctx); err != nil {
			s.log.WarnContext(ctx, "not ready", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// uiHeaders keeps the UI out of other sites' frames (clickjacking its
// buttons) and stops browsers from guessing content types.
func uiHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// promLogger sends promhttp's errors to slog.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) { p.l.Warn(fmt.Sprint(v...), "path", MetricsPath) }

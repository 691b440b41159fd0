package cphsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// API names one simulated CPH call. Stats are kept per API.
type API string

// The simulated calls.
const (
	APIUpdateKeypair API = "UpdateKeypair" // PUT …/cloud-phone/servers/open-access (the only write)
	APIShowJob       API = "ShowJob"       // GET …/cloud-phone/jobs/{job_id}
	APIListJobs      API = "ListJobs"      // GET …/cloud-phone/jobs
	APIListServers   API = "ListServers"   // GET …/cloud-phone/servers
	APIShowServer    API = "ShowServer"    // GET …/cloud-phone/servers/{server_id}
)

// APIs lists every simulated call.
func APIs() []API {
	return []API{APIUpdateKeypair, APIShowJob, APIListJobs, APIListServers, APIShowServer}
}

// Write reports whether the call changes anything (only UpdateKeypair does).
func (a API) Write() bool { return a == APIUpdateKeypair }

// maxBody bounds a request body; the gateway answers 413 beyond its limit.
const maxBody = 8 << 20

// Sim is a simulated CPH endpoint: an http.Handler plus inspection methods
// for tests. All methods are safe for concurrent use.
type Sim struct {
	opts   Options
	now    func() time.Time
	quotas *quotas

	mu     sync.Mutex
	rng    *rand.Rand // request-time draws: ids, latencies, faults
	fleet  fleet
	jobs   jobs
	churn  churn
	kps    keypairs
	denied map[API]bool // Options.Deny, changed by SetDeny
	stats  counters
}

// New returns a simulator configured by opts. Invalid options are corrected
// rather than refused (rates are clamped to [0, 1], negative sizes and
// durations count as zero, bad fleet entries are skipped); call
// opts.Validate first to refuse them instead.
func New(opts Options) *Sim {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.SlowDelay <= 0 {
		opts.SlowDelay = time.Second
	}
	opts.JobLatency, opts.JobJitter = max(opts.JobLatency, 0), max(opts.JobJitter, 0)
	opts.Latency, opts.LatencyJitter = max(opts.Latency, 0), max(opts.LatencyJitter, 0)
	opts.Error5xxRate, opts.SlowRate, opts.DropRate = clamp01(opts.Error5xxRate), clamp01(opts.SlowRate), clamp01(opts.DropRate)
	opts.JobFailRate, opts.BadServerRate = clamp01(opts.JobFailRate), clamp01(opts.BadServerRate)
	s := &Sim{
		opts:   opts,
		now:    opts.Clock,
		rng:    rand.New(rand.NewPCG(opts.Seed, 0x5eed_c0de)),
		fleet:  newFleet(opts),
		jobs:   newJobs(),
		churn:  newChurn(opts),
		kps:    newKeypairs(opts),
		stats:  newCounters(),
		quotas: newQuotas(opts),
		denied: map[API]bool{},
	}
	for _, api := range opts.Deny {
		s.denied[api] = true
	}
	return s
}

// request is one authenticated API call on its way to its handler.
type request struct {
	id      string // request id, also the X-Request-Id header
	project string // project id from the path
	param   string // job or server id, or keypair name, from the path
	query   map[string][]string
	body    []byte
	at      time.Time
}

// apiError is a non-2xx answer with a CPH or gateway error body.
type apiError struct {
	status    int
	code, msg string
}

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP answers one request, in the order the package doc describes,
// after Options.Latency.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := s.now()
	sim := strings.HasPrefix(r.URL.Path, "/_sim/")
	s.mu.Lock()
	reqID := newID(s.rng)
	var delay time.Duration
	if !sim {
		delay = s.latency()
	}
	s.mu.Unlock()
	w.Header().Set("X-Request-Id", reqID)
	w.Header().Set("Content-Type", "application/json")

	if sim {
		s.serveSim(w, r, reqID)
		return
	}
	rep := s.serveAPI(w, r, reqID, at)
	// The mutex is not held here: a slow answer holds up no other.
	if rep.gone || !pause(r.Context(), delay) {
		return
	}
	if rep.drop {
		drop(w)
		return
	}
	writeJSON(w, rep.status, rep.body)
}

// reply is the answer to one API call, written once Options.Latency has
// passed.
type reply struct {
	status int
	body   any
	drop   bool // close the connection without an answer
	gone   bool // the client went away; there is no one to answer
}

func okReply(body any) reply { return reply{status: http.StatusOK, body: body} }

func failed(reqID string, e *apiError) reply {
	return reply{status: e.status, body: errorBody{ErrorCode: e.code, ErrorMsg: e.msg, RequestID: reqID}}
}

// serveAPI does the work of one API call and returns its answer.
func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request, reqID string, at time.Time) reply {
	api, project, param, found := route(r.Method, r.URL.Path)
	if !found {
		return failed(reqID, errorf(http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment"))
	}
	s.count(func(c *counters) { c.calls[api]++ })
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return failed(reqID, errorf(http.StatusRequestEntityTooLarge, "APIGW.0201", "Request entity too large"))
		}
		return failed(reqID, errorf(http.StatusBadRequest, "APIGW.0201", "API request error: reading the body: %v", err))
	}
	if e := s.authenticate(r, body, at); e != nil {
		s.count(func(c *counters) { c.unauthorized++ })
		return failed(reqID, e)
	}
	if e := s.authorize(r, api, project); e != nil {
		s.count(func(c *counters) { c.forbidden++ })
		return failed(reqID, e)
	}
	if api.kps() {
		answer, status, e := s.serveKPS(api, &request{id: reqID, project: project, param: param, query: r.URL.Query(), body: body, at: at})
		if e != nil {
			return failed(reqID, e)
		}
		return reply{status: status, body: answer}
	}
	if wait, limit, allowed := s.quotas.allow(api, at); !allowed {
		s.count(func(c *counters) { c.throttled[api]++ })
		return failed(reqID, s.throttled(w, wait, limit))
	}

	f := s.drawFaults(api)
	if f.drop && (api != APIUpdateKeypair || s.opts.DropBeforeCommit) {
		return reply{drop: true}
	}
	if f.status != 0 {
		return failed(reqID, injected(f.status))
	}
	if f.slow && !pause(r.Context(), s.opts.SlowDelay) {
		return reply{gone: true}
	}

	req := &request{id: reqID, project: project, param: param, query: r.URL.Query(), body: body, at: at}
	var answer any
	var e *apiError
	switch api {
	case APIUpdateKeypair:
		answer, e = s.updateKeypair(req)
	case APIShowJob:
		answer, e = s.showJob(req)
	case APIListJobs:
		answer, e = s.listJobs(req)
	case APIListServers:
		answer, e = s.listServers(req)
	case APIShowServer:
		answer, e = s.showServer(req)
	}
	switch {
	case f.drop: // UpdateKeypair committed; only its answer is lost
		return reply{drop: true}
	case e != nil:
		return failed(reqID, e)
	}
	return okReply(answer)
}

// pause waits d of real time, cut short when ctx ends; it reports whether
// the whole wait passed.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// latency draws how long an answer waits (Options.Latency). It draws
// nothing without jitter, so that the request-time stream, and so every
// seeded answer, stays as it was without latency. s.mu must be held.
func (s *Sim) latency() time.Duration {
	d, jit := s.opts.Latency, s.opts.LatencyJitter
	if jit > 0 {
		d += time.Duration(s.rng.Int64N(2*int64(jit)+1)) - jit
	}
	return max(d, 0)
}

// route maps a method and path to an API, the path's project id and its
// job or server id, or keypair name. One trailing slash is accepted.
func route(method, path string) (api API, project, param string, ok bool) {
	path = strings.TrimSuffix(path, "/")
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) >= 3 && parts[0] == "v3" && parts[1] != "" && parts[2] == "keypairs" {
		return kpsRoute(method, parts[1], parts[3:])
	}
	if len(parts) < 4 || parts[0] != "v1" || parts[1] == "" || parts[2] != "cloud-phone" {
		return "", "", "", false
	}
	project, rest := parts[1], parts[3:]
	switch {
	case method == http.MethodPut && len(rest) == 2 && rest[0] == "servers" && rest[1] == "open-access":
		return APIUpdateKeypair, project, "", true
	case method != http.MethodGet:
		return "", "", "", false
	case len(rest) == 1 && rest[0] == "jobs":
		return APIListJobs, project, "", true
	case len(rest) == 2 && rest[0] == "jobs" && rest[1] != "":
		return APIShowJob, project, rest[1], true
	case len(rest) == 1 && rest[0] == "servers":
		return APIListServers, project, "", true
	case len(rest) == 2 && rest[0] == "servers" && rest[1] != "":
		return APIShowServer, project, rest[1], true
	}
	return "", "", "", false
}

// kpsRoute maps a KPS call under /v3/{project}/keypairs.
func kpsRoute(method, project string, rest []string) (api API, _, param string, ok bool) {
	switch {
	case len(rest) == 0 && method == http.MethodGet:
		return APIListKeypairs, project, "", true
	case len(rest) == 0 && method == http.MethodPost:
		return APICreateKeypair, project, "", true
	case len(rest) == 1 && rest[0] != "" && method == http.MethodGet:
		return APIShowKeypair, project, rest[0], true
	case len(rest) == 1 && rest[0] != "" && method == http.MethodDelete:
		return APIDeleteKeypair, project, rest[0], true
	}
	return "", "", "", false
}

// authorize refuses a path or X-Project-Id naming another project, and a
// call to a denied API (Options.Deny), with the answer the service gives
// for resources the caller may not touch: 403 CPS.0001.
func (s *Sim) authorize(r *http.Request, api API, project string) *apiError {
	hdr := r.Header.Get("X-Project-Id")
	s.mu.Lock()
	denied := s.denied[api]
	s.mu.Unlock()
	if denied || s.opts.ProjectID != "" && project != s.opts.ProjectID || hdr != "" && hdr != project {
		return errorf(http.StatusForbidden, "CPS.0001", "No permission to request resources.")
	}
	return nil
}

// SetDeny denies or allows api at run time, as an IAM policy losing or
// gaining the action would (see Options.Deny).
func (s *Sim) SetDeny(api API, denied bool) error {
	if !api.known() {
		return fmt.Errorf("set deny: unknown API %q", api)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[api] = denied
	return nil
}

func (s *Sim) count(f func(*counters)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// drop closes the connection without answering, as a load balancer that
// loses a backend does.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	// HTTP/2 cannot be hijacked; aborting the handler resets the stream.
	panic(http.ErrAbortHandler)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	// The client may have gone; there is no one left to tell.
	_ = enc.Encode(v)
}

type errorBody struct {
	ErrorCode string `json:"error_code"`
	ErrorMsg  string `json:"error_msg"`
	RequestID string `json:"request_id"`
}

func writeError(w http.ResponseWriter, reqID string, e *apiError) {
	writeJSON(w, e.status, errorBody{ErrorCode: e.code, ErrorMsg: e.msg, RequestID: reqID})
}

// newID returns 32 lowercase hex digits, the shape of CPH request, job and
// server ids.
func newID(rng *rand.Rand) string {
	return fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
}

// timeFormat is the layout of every time CPH returns.
const timeFormat = "2006-01-02T15:04:05Z"

func formatTime(unixNano int64) string { return time.Unix(0, unixNano).UTC().Format(timeFormat) }

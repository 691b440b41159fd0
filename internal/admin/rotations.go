package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// The JSON API under APIPath (docs/admin.md): the console's only source
// of data, and one tools can use with the same token.
//
//	GET  /api/v1/rotations?offset=0&limit=50   rotations, newest first
//	GET  /api/v1/rotations/{id}                one rotation: waves, budget, failures, history
//	POST /api/v1/rotations/{id}/pause          (also resume, with {"max_errors": "20%", "max_errors_total": "5%"}, and cancel)
//	GET  /api/v1/rotations/{id}/report?format=csv|json
const (
	// defaultPage and maxPage bound a list request: a page of rotations
	// costs one pipelined read of their records.
	defaultPage = 50
	maxPage     = 200
	// rateWindow is the span of history the rate (and so the ETA) is
	// measured over.
	rateWindow = time.Minute
	// etaAfter is how long a rotation runs (and it must be 1 % done)
	// before its rate gives an ETA.
	etaAfter = 30 * time.Second
	// maxHistory bounds the points of a progress chart.
	maxHistory = 240
)

// rotationList is the answer of GET /api/v1/rotations.
type rotationList struct {
	Rotations []rotationView `json:"rotations"`
	Total     int            `json:"total"` // rotations in the index (expired ones are dropped as they are listed)
	// Listed is how many entries of the index this page covers: a rotation
	// across places is one row of Rotations, and an entry a part.
	Listed int `json:"listed"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// rotationView is a rotation as the API shows it: its record, plus what
// an operator reads first.
type rotationView struct {
	ID             string        `json:"id"`
	Keypair        string        `json:"keypair"`
	ChunkSize      int           `json:"chunk_size"`
	Chunks         int           `json:"chunks"`
	Batches        int           `json:"batches"`
	MaxAttempts    int           `json:"max_attempts"`
	Waves          []plannedWave `json:"waves"`
	Wave           int           `json:"wave"`
	WaveOpen       int           `json:"wave_open"`
	MaxErrors      int           `json:"max_errors"`
	Verify         bool          `json:"verify"`
	PauseAfterWave bool          `json:"pause_after_wave"`
	Retention      time.Duration `json:"retention"`
	Schema         int           `json:"schema"`
	// NewerRelease: the record was written by a release newer than this
	// worker's, which leaves it to the workers that know it.
	NewerRelease bool         `json:"newer_release,omitempty"`
	State        rekey.State  `json:"state"`
	Reason       string       `json:"reason,omitempty"` // why the rotation is halted or paused
	CreatedAt    time.Time    `json:"created_at"`
	FinishedAt   time.Time    `json:"finished_at,omitzero"`
	Counts       rekey.Counts `json:"counts"`
	Done         int64        `json:"done"` // servers in a terminal outcome
	// Rate is servers ended per second over the last minute (0 when
	// nothing ended in it, or the rotation is not running); ETASeconds is
	// how long the rest takes at that rate, omitted without a rate and
	// until the rotation has run 30 s and is 1 % done.
	Rate       float64  `json:"rate"`
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
	// Region and ProjectID are the rotation's place (absent: the workers'
	// own); Group is the rotation across places it is a part of.
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	Group     string `json:"group,omitempty"`
	// A rotation across places: its rotation-wide budget (-1: none), what
	// its parts do when one halts, and its parts, a (region, project) each,
	// in its order (groups.go).
	MaxErrorsTotal *int           `json:"max_errors_total,omitempty"`
	OnRegionHalt   string         `json:"on_region_halt,omitempty"`
	Parts          []rotationView `json:"parts,omitempty"`
	// Waiting: a part waiting for its turn (--max-concurrent-regions).
	Waiting bool `json:"waiting,omitempty"`
}

// plannedWave is a wave of a rotation's plan.
type plannedWave struct {
	LastChunk int `json:"last_chunk"`
	Servers   int `json:"servers"`
}

func viewOf(rot *rekey.Rotation) rotationView {
	v := rotationView{ID: rot.ID, Keypair: rot.Keypair, ChunkSize: rot.ChunkSize, Chunks: rot.Chunks, Batches: rot.Batches,
		MaxAttempts: rot.MaxAttempts, Waves: make([]plannedWave, len(rot.WavePlan)), Wave: rot.Wave, WaveOpen: rot.WaveOpen,
		MaxErrors: rot.MaxErrors, Verify: rot.Verify, PauseAfterWave: rot.PauseAfterWave, Retention: rot.Retention,
		Schema: rot.Schema, NewerRelease: rot.NewerRelease(),
		State: rot.State, Reason: rot.Reason, CreatedAt: rot.CreatedAt, FinishedAt: rot.FinishedAt, Counts: rot.Counts,
		Done: rot.Counts.Done(), Region: rot.Region, ProjectID: rot.ProjectID, Group: rot.Group, Waiting: rot.Waiting()}
	for i, w := range rot.WavePlan {
		v.Waves[i] = plannedWave{LastChunk: w.LastChunk, Servers: w.Servers}
	}
	if rot.Parts != nil {
		total := rot.MaxErrorsTotal
		v.MaxErrorsTotal, v.OnRegionHalt = &total, string(rot.OnRegionHalt)
		for _, p := range rot.Parts {
			v.Parts = append(v.Parts, viewOf(p))
		}
	}
	return v
}

// rotationDetail is the answer of GET /api/v1/rotations/{id}.
type rotationDetail struct {
	rotationView
	Waves    []waveView     `json:"waves"` // shadows the record's waves: the same, with progress
	Budget   budgetView     `json:"budget"`
	Failures []failureView  `json:"failures"`
	History  []historyPoint `json:"history"`
	// Timeline is what happened to the rotation and who did it, oldest
	// first (rekey.Client.History).
	Timeline []rekey.HistoryEntry `json:"timeline"`
}

type waveView struct {
	Wave       int    `json:"wave"`
	FirstChunk int    `json:"first_chunk"`
	LastChunk  int    `json:"last_chunk"`
	Servers    int    `json:"servers"`
	State      string `json:"state"` // done, current, waiting
	Open       int    `json:"open"`  // servers not terminal yet
}

type budgetView struct {
	MaxErrors int   `json:"max_errors"` // -1: no budget
	Failed    int64 `json:"failed"`
}

type failureView struct {
	Code     string        `json:"code"`
	Count    int64         `json:"count"`
	Examples []exampleView `json:"examples"`
}

type exampleView struct {
	ServerID   string    `json:"server_id"`
	Message    string    `json:"error_msg"`
	Attempts   int       `json:"attempts"`
	JobID      string    `json:"job_id,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
}

// historyPoint is the rotation's progress at a time: servers ended and
// failed by then, cumulative.
type historyPoint struct {
	At     time.Time `json:"at"`
	Ended  int64     `json:"ended"`
	Failed int64     `json:"failed"`
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func (s *Server) apiRoutes(mux *http.ServeMux) {
	h := func(pattern string, f func(http.ResponseWriter, *http.Request)) {
		mux.Handle(pattern, s.protect(http.NewCrossOriginProtection().Handler(noStore(checked(http.HandlerFunc(f))))))
	}
	h("GET "+APIPath, s.listRotations)
	h("GET "+APIPath+"/{id}", s.getRotation)
	h("GET "+APIPath+"/{id}/report", s.getReport)
	h("POST "+APIPath+"/{id}/{action}", s.control)
}

// checked refuses what no handler should see: a rotation id that is not
// one (400; ids become Redis hash tags and task IDs), and a write that is
// not JSON (415): a form a web page posts cannot set that content type
// without the browser asking first.
func checked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.PathValue("id"); id != "" {
			if err := rekey.ValidateRotationID(id); err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		if r.Method == http.MethodPost {
			if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, errors.New("a write must be sent as Content-Type: application/json"))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) listRotations(w http.ResponseWriter, r *http.Request) {
	offset, err := intParam(r, "offset", 0, 0, 1<<30)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	limit, err := intParam(r, "limit", defaultPage, 1, maxPage)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	rots, total, err := s.opts.Rotations.RotationsPage(r.Context(), offset, limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	listed := len(rots)
	if rots, err = s.groupParts(r.Context(), rots); err != nil {
		s.storeError(w, r, err)
		return
	}
	// Only running rotations (and parts) have a rate: their stats are
	// read in one more pipeline.
	var running []string
	for _, rot := range rots {
		for _, p := range append([]*rekey.Rotation{rot}, rot.Parts...) {
			if p.Parts == nil && !p.Finished() && p.State == rekey.StateRunning {
				running = append(running, p.ID)
			}
		}
	}
	stats, err := s.opts.Rotations.Stats(r.Context(), running...)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	history := make(map[string][]rekey.Bucket, len(running))
	for i, id := range running {
		history[id] = stats[i].History
	}
	now := time.Now()
	out := rotationList{Rotations: make([]rotationView, 0, len(rots)), Total: total, Listed: listed, Offset: offset, Limit: limit}
	for _, rot := range rots {
		v := viewOf(rot)
		v.setRates(history, now)
		out.Rotations = append(out.Rotations, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getRotation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rot, err := s.opts.Rotations.Rotation(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	ids := []string{id}
	for i, p := range rot.Parts {
		if i == 0 {
			ids = ids[:0] // a group's stats are its parts'
		}
		ids = append(ids, p.ID)
	}
	st, err := s.opts.Rotations.Stats(r.Context(), ids...)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	d := detail(rot, st, time.Now())
	if d.Timeline, err = s.opts.Rotations.History(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// detail builds a rotation's page from its record and stats: one Stats
// for a rotation of one place, one a part, in order, for a rotation across
// places.
func detail(rot *rekey.Rotation, sts []*rekey.Stats, now time.Time) rotationDetail {
	d := rotationDetail{
		rotationView: viewOf(rot),
		Budget:       budgetView{MaxErrors: rot.MaxErrors, Failed: rot.Counts.Failed},
		Failures:     []failureView{},
	}
	hist := map[string][]rekey.Bucket{}
	for i, p := range rot.Parts {
		hist[p.ID] = sts[i].History
	}
	st := mergeStats(sts)
	if rot.Parts == nil {
		hist[rot.ID] = st.History
	} else if rot.MaxErrorsTotal >= 0 {
		d.Budget.MaxErrors = rot.MaxErrorsTotal
	}
	d.setRates(hist, now)
	first := 1
	for i, wv := range rot.WavePlan {
		v := waveView{Wave: i + 1, FirstChunk: first, LastChunk: wv.LastChunk, Servers: wv.Servers}
		switch {
		case rot.Finished() || i+1 < rot.Wave:
			v.State = "done"
		case i+1 == rot.Wave:
			v.State, v.Open = "current", rot.WaveOpen
		default:
			v.State, v.Open = "waiting", wv.Servers
		}
		d.Waves = append(d.Waves, v)
		first = wv.LastChunk + 1
	}
	for _, f := range st.Failures {
		fv := failureView{Code: f.Code, Count: f.Count}
		for _, e := range f.Examples {
			fv.Examples = append(fv.Examples, exampleView{ServerID: e.ServerID, Message: e.ErrorMsg, Attempts: e.Attempts,
				JobID: e.JobID, FinishedAt: e.FinishedAt})
		}
		d.Failures = append(d.Failures, fv)
	}
	d.History = history(rot, st.History, now)
	return d
}

// history turns the stats' buckets into a cumulative series of at most
// maxHistory points: it starts at the rotation's creation with the servers
// skipped at planning time, and ends now (or at the finish) on the
// rotation's own counters, which also count servers a cancel closed at
// once.
func history(rot *rekey.Rotation, buckets []rekey.Bucket, now time.Time) []historyPoint {
	every := 1
	if len(buckets) > maxHistory-2 {
		every = (len(buckets) + maxHistory - 3) / (maxHistory - 2)
	}
	end := now
	if rot.Finished() {
		end = rot.FinishedAt
	}
	if end.Before(rot.CreatedAt) {
		end = rot.CreatedAt
	}
	pts := []historyPoint{{At: rot.CreatedAt, Ended: rot.Counts.Skipped}}
	ended, failed := rot.Counts.Skipped, int64(0)
	for i, b := range buckets {
		ended += b.Ended
		failed += b.Failed
		if (i+1)%every == 0 || i == len(buckets)-1 {
			// A bucket's outcomes are placed at its end, within the
			// rotation's life (the last bucket ends after the finish).
			at := b.Start.Add(rekey.StatsBucket)
			if at.After(end) {
				at = end
			}
			pts = append(pts, historyPoint{At: at, Ended: ended, Failed: failed})
		}
	}
	return append(pts, historyPoint{At: end, Ended: rot.Counts.Done(), Failed: rot.Counts.Failed})
}

// setRates sets the rate of a running rotation, and of each running part
// of a rotation across places (whose rate is theirs summed), from the
// history of each.
func (v *rotationView) setRates(history map[string][]rekey.Bucket, now time.Time) {
	if v.Parts == nil {
		if v.State == rekey.StateRunning && v.FinishedAt.IsZero() {
			v.setRate(history[v.ID], now)
		}
		return
	}
	var rate, left float64
	for i := range v.Parts {
		p := &v.Parts[i]
		p.setRates(history, now)
		rate += p.Rate
		left += float64(p.Counts.Total - p.Done)
	}
	if v.FinishedAt.IsZero() && rate > 0 {
		v.Rate = rate
		if now.Sub(v.CreatedAt) >= etaAfter && v.Done*100 >= v.Counts.Total {
			eta := left / rate
			v.ETASeconds = &eta
		}
	}
}

// setRate measures the rate over the rateWindow before now (or since the
// rotation started, if later) and the ETA at that rate.
func (v *rotationView) setRate(buckets []rekey.Bucket, now time.Time) {
	since := now.Add(-rateWindow)
	if v.CreatedAt.After(since) {
		since = v.CreatedAt
	}
	var n int64
	for _, b := range buckets {
		if !b.Start.Add(rekey.StatsBucket).Before(since) {
			n += b.Ended
		}
	}
	span := now.Sub(since).Seconds()
	if n == 0 || span < 1 {
		return
	}
	v.Rate = float64(n) / span
	// The first minute's rate mostly measures submits and the first
	// failures, not the pace of jobs ending: no ETA from it.
	if now.Sub(v.CreatedAt) < etaAfter || v.Done*100 < v.Counts.Total {
		return
	}
	eta := float64(v.Counts.Total-v.Done) / v.Rate
	v.ETASeconds = &eta
}

func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	if s.opts.ReadOnly {
		writeError(w, http.StatusMethodNotAllowed, errors.New("the console is read-only (--ui-readonly)"))
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	ctx := rekey.WithActor(r.Context(), actor(r))
	var err error
	switch action {
	case "pause":
		err = s.opts.Rotations.Pause(ctx, id)
	case "resume":
		var body struct {
			MaxErrors      string `json:"max_errors"`
			MaxErrorsTotal string `json:"max_errors_total"`
		}
		if r.ContentLength != 0 {
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("resume body: %w", err))
				return
			}
		}
		var opts rekey.ResumeOptions
		if body.MaxErrors != "" {
			b, err := rekey.ParseSize(body.MaxErrors)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("max_errors: %w", err))
				return
			}
			opts.MaxErrors = &b
		}
		if body.MaxErrorsTotal != "" {
			b, err := rekey.ParseSize(body.MaxErrorsTotal)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("max_errors_total: %w", err))
				return
			}
			opts.MaxErrorsTotal = &b
		}
		_, err = s.opts.Rotations.Resume(ctx, id, opts)
	case "cancel":
		_, err = s.opts.Rotations.Cancel(ctx, id)
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("no action %q: pause, resume or cancel", action))
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.InfoContext(ctx, "rotation "+action+" from the console", "rotation", id, "actor", actor(r), "remote", r.RemoteAddr)
	rot, err := s.opts.Rotations.Rotation(ctx, id)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(rot))
}

// actor names who steers a rotation from the console, for its history:
// the user name given with the token (basic auth; the token itself is the
// one shared secret, so the name is the operator's own word), "console"
// without one or with one that is not a valid actor.
func actor(r *http.Request) string {
	if user, _, ok := r.BasicAuth(); ok && user != "" {
		if a := user + " (console)"; rekey.ValidateActor(a) == nil {
			return a
		}
	}
	return "console"
}

func (s *Server) getReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "json"
	}
	if format != "csv" && format != "json" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("format %q: csv or json", format))
		return
	}
	// Look the rotation up first, so a wrong id is a 404, not an empty
	// download.
	if _, err := s.opts.Rotations.Rotation(r.Context(), id); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-report.%s"`, id, format))
	// The report streams from Redis a batch at a time; once the first
	// bytes are out, a failure can only cut the download short.
	if err := s.opts.Rotations.WriteReport(r.Context(), id, w, rekey.ReportFormat(format)); err != nil {
		s.log.WarnContext(r.Context(), "report download cut short", "rotation", id, "err", err)
	}
}

// storeError answers a failed store call: 404 for a rotation that does
// not exist, 409 for a control its state refuses (Redis script errors
// name why, and rekey's input errors: a budget still exceeded), 503 when
// Redis cannot be reached, 500 otherwise.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var rerr redis.Error
	var nerr net.Error
	var ierr *rekey.InputError
	switch {
	case errors.Is(err, rekey.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.As(err, &ierr):
		writeError(w, http.StatusConflict, err)
	case errors.As(err, &rerr) && !strings.HasPrefix(rerr.Error(), "LOADING") && !strings.HasPrefix(rerr.Error(), "READONLY"):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, rekey.ErrRedisUnavailable), errors.As(err, &nerr), errors.Is(err, redis.ErrClosed):
		s.log.WarnContext(r.Context(), "console: Redis unavailable", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("redis unavailable: %w", err))
	default:
		s.log.ErrorContext(r.Context(), "console: store error", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err)
	}
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%q: want an integer from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

// noStore keeps proxies and browsers from caching live state.
func noStore(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

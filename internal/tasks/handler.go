package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
)

// API names, as the limiter and the metrics know them.
const (
	APIUpdateKeypair = "UpdateKeypair"
	APIListJobs      = "ListJobs"
	APIListServers   = "ListServers" // verification reads, a page at a time
	APIShowServer    = "ShowServer"  // verification reads, a server at a time
)

// Codes cph-rekey gives outcomes the CPH API did not name.
const (
	// CodeJobTimeout: a job still running after Config.JobTimeout. No
	// longer recorded: such a job's outcome is unknown and is read back
	// (CodePollUnknown); records of older versions may carry it.
	CodeJobTimeout = "REKEY.JOB_TIMEOUT"
	// CodePollUnknown: a job's outcome could not be learned and a
	// read-back found the server not on the target.
	CodePollUnknown  = "REKEY.JOB_UNKNOWN"
	CodeMissingJob   = "REKEY.MISSING_JOB"   // the answer had no entry for a server that was sent
	CodeSubmitFailed = "REKEY.SUBMIT_FAILED" // UpdateKeypair kept failing until the task's retries ran out
	// CodePollFailed: ListJobs kept failing until the job timeout. No
	// longer recorded: those jobs' outcomes are unknown and are read back
	// (CodePollUnknown); records of older versions may carry it.
	CodePollFailed = "REKEY.POLL_FAILED"
	// CodeVerifyMismatch: the job reported success but the server's
	// keypair_name, read back, is not the target. Permanent: not retried.
	CodeVerifyMismatch = "REKEY.VERIFY_MISMATCH"
	// CodeVerifyFailed: the read-back itself failed for good. Kept for
	// records written by earlier releases; see CodeVerifyUnavailable.
	CodeVerifyFailed = "REKEY.VERIFY_FAILED"
	// CodeVerifyUnavailable: the job reported success but the keypair
	// could not be read back at all: every way of reading the server kept
	// failing for Config.JobTimeout after the first failed read. Not a
	// mismatch: the keypair may well have changed.
	CodeVerifyUnavailable = "REKEY.VERIFY_UNAVAILABLE"
	// CodeServerDeleted: the server was deleted while the rotation ran
	// (its job succeeded, or its outcome was unknown, and the API no
	// longer knows it). Recorded as skipped: there is nothing to rotate.
	CodeServerDeleted = "REKEY.SERVER_DELETED"
)

// API is the part of the CPH API the handlers call (cph.Client has it).
type API interface {
	UpdateKeypair(ctx context.Context, servers []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error)
	// ListJobsOf lists the jobs of UpdateKeypair requests (at most 20) that
	// created expected jobs in all, without paging past them.
	ListJobsOf(ctx context.Context, expected int, requestIDs ...string) ([]cph.Job, error)
	// ListServersPage reads one page of the project's server list.
	ListServersPage(ctx context.Context, offset, limit int) (*cph.ListServersResponse, error)
	ShowServer(ctx context.Context, serverID string) (*cph.Server, error)
}

// Limiter hands out tokens of the fleet-wide rate limit per API. Wait
// returns a *ratelimit.DelayError when the task should be put back instead
// of waiting on a worker slot. Throttled reports a 429, with the quota its
// message named in calls per second (0: none).
type Limiter interface {
	Wait(ctx context.Context, api string) error
	Throttled(ctx context.Context, api string, retryAfter time.Duration, quota float64) error
	// Rate is the rate api's calls are granted at now, in calls a second
	// (+Inf: not limited), as this process knows it without asking
	// anyone: the stages size the calls they keep in flight from it.
	Rate(api string) float64
}

// Observer receives the pipeline's measurements (metrics.Metrics is one).
// The region of a rotation in the worker's default place is "".
type Observer interface {
	APIRequest(region, api, code string, d time.Duration)
	Throttled(region, api string)
	ServerOutcome(outcome string, n int)
	PollRound(api string)
	Submitted(n int)
	// UnknownSchema counts a task left alone because it, or its rotation,
	// was written by a newer release (kind: "task" or "rotation").
	UnknownSchema(kind string)
}

// DefaultFirstPoll is Config.FirstPoll's default: the floor of the learned
// first poll, and the first poll before any job has been seen to end
// (CPH's jobs take 1-3 s).
const DefaultFirstPoll = 2 * time.Second

// DefaultRetryBase is Config.RetryBase's default. A transient job failure
// is a server's, not the API's (the limiter paces the API), so a short
// wait is enough; with full jitter the attempts after a failure are spread
// over 1-2 s, then 1-3 s, and a rotation's tail waits that much.
const DefaultRetryBase = time.Second

// Config tunes the handlers. Zero values take the defaults shown.
type Config struct {
	// FirstPoll is the floor of a batch's first poll, which comes when the
	// rotation's jobs have been seen to end (their learned latency and a
	// fifth more), and its delay until a job has been seen to end: 2s.
	FirstPoll  time.Duration
	PollCap    time.Duration // longest delay between polls: 30s
	JobTimeout time.Duration // a job still running (or unverified) after this is a transient failure: 15m
	RetryBase  time.Duration // backoff base of a failed server's next attempt: 1s
	RetryCap   time.Duration // backoff cap: 60s
	// Linger is how long servers due for a retry wait for company before a
	// smaller batch carries them: 10s.
	Linger time.Duration
	// VerifyLinger is how long servers wait for verification on a page
	// whose other targets are still in flight before the page is read
	// anyway (and read again for the others): 30s.
	VerifyLinger time.Duration
	CallTimeout  time.Duration // one API call: 30s
	Tasks        TaskOptions
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.FirstPoll, DefaultFirstPoll)
	def(&c.PollCap, 30*time.Second)
	def(&c.JobTimeout, 15*time.Minute)
	def(&c.RetryBase, DefaultRetryBase)
	def(&c.RetryCap, 60*time.Second)
	def(&c.Linger, 10*time.Second)
	def(&c.VerifyLinger, 30*time.Second)
	def(&c.CallTimeout, 30*time.Second)
	c.Tasks = c.Tasks.withDefaults()
	return c
}

// Handler runs the pipeline's tasks.
type Handler struct {
	store  *Store
	places Places
	enq    Enqueuer
	ins    TaskInspector // nil: the watchdog cannot tell lost tasks
	obs    Observer
	log    *slog.Logger
	cfg    Config
	now    func() time.Time
	lat    *latencies // how long each API's calls take, for the stages' width
	retire RetirePlaces
}

// HandlerOptions are the parts a Handler is built from. Inspector,
// Observer and Logger are optional; without Inspector the watchdog does
// not look for lost tasks. Places, when set, gives each place its API and
// limiter; otherwise every rotation is on API and Limiter.
type HandlerOptions struct {
	Store     *Store
	API       API
	Limiter   Limiter
	Places    Places
	Enqueuer  Enqueuer
	Inspector TaskInspector
	Observer  Observer
	Logger    *slog.Logger
	Config    Config
	// Retire gives a scheduled retire the fleet and KPS of each place;
	// nil: scheduled retires fail, saying so.
	Retire RetirePlaces
}

// NewHandler returns a Handler.
func NewHandler(o HandlerOptions) *Handler {
	h := &Handler{store: o.Store, places: o.Places, enq: o.Enqueuer, ins: o.Inspector, obs: o.Observer,
		log: o.Logger, cfg: o.Config.withDefaults(), now: time.Now, lat: newLatencies(), retire: o.Retire}
	if h.places == nil {
		api, lim := o.API, o.Limiter
		h.places = func(Place) (API, Limiter) { return api, lim }
	}
	if h.obs == nil {
		h.obs = nopObserver{}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// Register adds the pipeline's task handlers to mux.
func (h *Handler) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(TypeSubmit, h.HandleSubmit)
	mux.HandleFunc(TypeTick, h.HandleTick)
	mux.HandleFunc(TypeWatchdog, h.HandleWatchdog)
	mux.HandleFunc(TypeRetire, h.HandleRetire)
}

// IsFailure tells asynq which errors count against a task's retries:
// rate-limit delays and expired leases (the worker died) do not.
func IsFailure(err error) bool {
	var d *ratelimit.DelayError
	return !errors.As(err, &d) && !errors.Is(err, asynq.ErrLeaseExpired)
}

// RetryDelay is asynq's RetryDelayFunc for the pipeline: a delay error's
// own delay, a quick pick-up after a lease expired, and full-jitter
// exponential backoff (1s base, 60s cap) for everything else.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var d *ratelimit.DelayError
	switch {
	case errors.As(err, &d):
		return d.RetryIn
	case errors.Is(err, asynq.ErrLeaseExpired):
		return time.Second
	}
	return time.Second + fullJitter(time.Second, time.Minute, n)
}

// fullJitter draws uniformly from [0, min(limit, base·2^n)).
func fullJitter(base, limit time.Duration, n int) time.Duration {
	d := limit
	if n < 30 && base<<n < limit {
		d = base << n
	}
	return rand.N(d)
}

// delayed returns an error that puts the task back after d without
// counting it as a failure.
func delayed(d time.Duration, err error) error {
	return &ratelimit.DelayError{RetryIn: d, Err: err}
}

// schemaRecheck is how long a task left to a newer release waits before
// it is offered again: by then a rolling upgrade has usually replaced
// this worker.
const schemaRecheck = 30 * time.Second

// unknownSchema leaves a task alone whose payload (kind "task") or
// rotation record (kind "rotation") has a SchemaVersion this release does
// not know: a newer release wrote it, and reading it here could misread
// it. The task goes back to its queue, without counting as a failure, for
// a worker that knows it; the rotation is not touched.
func (h *Handler) unknownSchema(ctx context.Context, log *slog.Logger, kind string, v int) error {
	h.obs.UnknownSchema(kind)
	log.WarnContext(ctx, "left to a newer release: its schema is unknown to this worker", "kind", kind,
		"schema", v, "known", SchemaVersion)
	return delayed(schemaRecheck, fmt.Errorf("%s of schema %d, this worker knows up to %d", kind, v, SchemaVersion))
}

// lastTry reports whether the running task has failed MaxRetry times
// already, so this run must give up on the API rather than fail again.
// asynq's retry count grows only with real failures (IsFailure), never with
// rate-limit waits or a dead worker's lease.
func (h *Handler) lastTry(ctx context.Context) bool {
	n, ok := asynq.GetRetryCount(ctx)
	return ok && n >= h.cfg.Tasks.MaxRetry
}

// detached returns a context for writes that must happen even when the
// task's context has just been cancelled: a checkpoint after the API call
// has acted, outcomes after the API answered.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// checkpointBackoff bounds the wait between two tries of a checkpoint
// write while Redis fails over.
const checkpointBackoff = 2 * time.Second

// untilDeadline returns a context for a write that must outlive the
// task's cancellation and ride a Redis failover (Sentinel takes 20 s or
// more): it ends at the task's deadline, and no sooner than 10 s from now.
func untilDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	end := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.After(end) {
		end = d
	}
	return context.WithDeadline(context.WithoutCancel(ctx), end)
}

// persist runs write until it succeeds, fails for a reason other than
// Redis being away (redisurl.Transient), or ctx ends; the write must be
// idempotent.
func persist[T any](ctx context.Context, write func(context.Context) (T, error)) (T, error) {
	wait := 100 * time.Millisecond
	for {
		v, err := write(ctx)
		if err == nil || !redisurl.Transient(err) {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		wait = min(2*wait, checkpointBackoff)
	}
}

// call runs one API call of rot's under the per-call timeout, reports it,
// and times it for the stages' width (every answer counts: a slot is held
// as long for an error as for a success).
func (h *Handler) call(ctx context.Context, rot *Rotation, api string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.CallTimeout)
	defer cancel()
	start := h.now()
	err := fn(ctx)
	d := h.now().Sub(start)
	h.lat.observe(api, d)
	code := "200"
	var ce *cph.Error
	switch {
	case errors.As(err, &ce) && ce.Code != "":
		code = ce.Code
	case errors.As(err, &ce) && ce.StatusCode != 0:
		code = fmt.Sprint(ce.StatusCode)
	case err != nil:
		code = "error"
	}
	h.obs.APIRequest(rot.Region, api, code, d)
	if cph.IsThrottled(err) {
		h.obs.Throttled(rot.Region, api)
	}
	return err
}

// throttled feeds a 429 back to the shared limiter of rot's place and puts
// the task back.
func (h *Handler) throttled(ctx context.Context, rot *Rotation, api string, err error) error {
	ra := cph.RetryAfter(err)
	if lerr := h.limiterOf(rot).Throttled(ctx, api, ra, cph.QuotaPerSecond(err)); lerr != nil {
		h.log.WarnContext(ctx, "report throttling to limiter", "api", api, "err", lerr)
	}
	if ra <= 0 {
		// The limiter now holds every process back for its shared pause
		// (250-375 ms) at a rate it has adapted: come back soon after and
		// let it pace the restart, rather than leave the quota idle.
		ra = 500*time.Millisecond + rand.N(500*time.Millisecond)
	}
	return delayed(ra, err)
}

// access names, for each API the handlers call, the CPH API and the IAM
// action its credentials need (reference/cph-api.md §4-6, all documented).
var access = map[string][2]string{
	APIUpdateKeypair: {"UpdateKeypair", "cph:servers:updateKeypair"},
	APIListJobs:      {"ListJobs", "cph:jobs:list"},
	APIListServers:   {"ListCloudPhoneServers", "cph:servers:list (and eip:publicIps:list, which it depends on)"},
	APIShowServer:    {"ShowCloudPhoneServerDetail", "cph:servers:get"},
}

// denied reports whether err is a 401 or 403 answer of api and, if so,
// halts the rotation (state failed) with a reason naming the API and what
// to fix: the IAM action a 403 lacks, or the credentials a 401 refused.
// Repeating the call cannot help, so it must not burn retries; the caller
// leaves its work as it is (unsubmitted, due for its poll or read), for
// resume to pick up. A denial of a tick's API (anything but UpdateKeypair)
// also ends the rotation's tick chain, so a halted rotation makes no more
// calls the API refuses; resume starts a new one. It reports false when
// the rotation could not be halted (cancelled or finished): the caller
// treats the error as any other permanent one.
func (h *Handler) denied(ctx context.Context, log *slog.Logger, rot *Rotation, api string, err error) (bool, error) {
	var ce *cph.Error
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusUnauthorized && ce.StatusCode != http.StatusForbidden {
		return false, nil
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	reason := deniedReason(api, ce)
	halted, herr := h.store.Halt(wctx, rot.ID, reason, api != APIUpdateKeypair)
	if herr != nil {
		return true, herr
	}
	if halted {
		log.ErrorContext(ctx, "rotation halted: the API refused the credentials", "api", api, "status", ce.StatusCode,
			"code", ce.Code, "request_id", ce.RequestID, "reason", reason)
	}
	return halted, nil
}

// deniedReason is a denied rotation's reason, e.g. "ListJobs answered 403
// CPS.0001 (No permission to request resources.): the credentials' IAM
// policy needs cph:jobs:list; resume once it is fixed". It carries no
// request id, so every denial of one API gives the same reason.
func deniedReason(api string, ce *cph.Error) string {
	a, ok := access[api]
	if !ok {
		a = [2]string{api, ""}
	}
	what := a[0] + " answered " + strconv.Itoa(ce.StatusCode)
	if ce.Code != "" {
		what += " " + ce.Code
	}
	if ce.Message != "" {
		what += " (" + ce.Message + ")"
	}
	if ce.StatusCode == http.StatusUnauthorized || a[1] == "" {
		return what + ": the credentials were refused (wrong, expired or revoked AK/SK or token); resume once they are fixed"
	}
	return what + ": the credentials' IAM policy needs " + a[1] + "; resume once it is fixed"
}

type nopObserver struct{}

func (nopObserver) APIRequest(string, string, string, time.Duration) {}
func (nopObserver) Throttled(string, string)                         {}
func (nopObserver) ServerOutcome(string, int)                        {}
func (nopObserver) UnknownSchema(string)                             {}
func (nopObserver) PollRound(string)                                 {}
func (nopObserver) Submitted(int)                                    {}

package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

const (
	gateProject = "0123456789abcdef0123456789abcdef"
	gateAK      = "GATEACCESSKEY0000000"
	gateSK      = "gate-secret-key-not-a-real-one"
)

// gate sits in front of the simulator: it answers 403 CPS.0001 for the
// API it denies, and 400 for a ListJobs call naming a poisoned request id.
type gate struct {
	sim  *cphsim.Sim
	deny atomic.Value // "", "jobs" (GET …/cloud-phone/jobs) or "submit" (PUT …/servers/open-access)

	mu       sync.Mutex
	poisonOn bool     // poison the request id of the first UpdateKeypair answer
	poison   string   // the poisoned request id
	calls    []string // request ids of every ListJobs call that reached the gate, comma-joined
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	deny, _ := g.deny.Load().(string)
	jobs := r.Method == http.MethodGet && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/cloud-phone/jobs")
	submit := r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/servers/open-access")
	if deny == "jobs" && jobs || deny == "submit" && submit {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error_code":"CPS.0001","error_msg":"No permission to request resources."}`)
		return
	}
	if jobs {
		ids := r.URL.Query().Get("request_ids")
		if ids == "" {
			ids = r.URL.Query().Get("request_id")
		}
		g.mu.Lock()
		g.calls = append(g.calls, ids)
		bad := g.poison != "" && strings.Contains(ids, g.poison)
		g.mu.Unlock()
		if bad {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error_code":"CPS.0004","error_msg":"Parameter: request_id is invalid."}`)
			return
		}
	}
	if submit {
		g.mu.Lock()
		first := g.poisonOn && g.poison == ""
		g.mu.Unlock()
		if first {
			rec := httptest.NewRecorder()
			g.sim.ServeHTTP(rec, r)
			var body struct {
				RequestID string `json:"request_id"`
			}
			json.Unmarshal(rec.Body.Bytes(), &body)
			g.mu.Lock()
			if g.poison == "" {
				g.poison = body.RequestID
			}
			g.mu.Unlock()
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
			return
		}
	}
	g.sim.ServeHTTP(w, r)
}

func (g *gate) listJobsCalls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}

type nopLimiter struct{}

func (nopLimiter) Wait(context.Context, string) error { return nil }
func (nopLimiter) Throttled(context.Context, string, time.Duration, float64) error {
	return nil
}
func (nopLimiter) Rate(string) float64 { return math.Inf(1) }

// quickConfig is a handler's Config for rotations that end in seconds on
// the simulator.
func quickConfig(opts TaskOptions) Config {
	return Config{FirstPoll: 300 * time.Millisecond, PollCap: 300 * time.Millisecond, RetryBase: 50 * time.Millisecond,
		RetryCap: 200 * time.Millisecond, Linger: 50 * time.Millisecond, VerifyLinger: 100 * time.Millisecond,
		JobTimeout: time.Minute, CallTimeout: 5 * time.Second, Tasks: opts}
}

// gated is a rotation environment: miniredis, the simulator behind a gate,
// and a running in-process worker.
type gated struct {
	rdb   *goredis.Client
	store *Store
	enq   *asynq.Client
	gate  *gate
	url   string // the gate's
	opts  TaskOptions
}

func newGated(t *testing.T, servers int) *gated {
	t.Helper()
	r := testredis.Mini(t)
	rdb := r.Client(t)
	sim := cphsim.New(cphsim.Options{ProjectID: gateProject, AccessKey: gateAK, SecretKey: gateSK, Servers: servers,
		JobLatency: 100 * time.Millisecond, Seed: 7})
	g := &gate{sim: sim}
	g.deny.Store("")
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	api, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: gateProject,
		Credentials: cph.Credentials{AccessKey: gateAK, SecretKey: gateSK}})
	if err != nil {
		t.Fatal(err)
	}
	e := &gated{rdb: rdb, store: NewStore(rdb, ""), enq: asynq.NewClientFromRedisClient(rdb), gate: g, url: srv.URL,
		opts: TaskOptions{Timeout: 30 * time.Second}}
	t.Cleanup(func() { e.enq.Close() })
	h := NewHandler(HandlerOptions{Store: e.store, API: api, Limiter: nopLimiter{}, Enqueuer: e.enq,
		Config: quickConfig(e.opts)})
	mux := asynq.NewServeMux()
	h.Register(mux)
	w := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 8, Queues: Queues(), IsFailure: IsFailure,
		RetryDelayFunc: RetryDelay, ShutdownTimeout: 2 * time.Second, DelayedTaskCheckInterval: 50 * time.Millisecond,
		LogLevel: asynq.FatalLevel})
	if err := w.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return e
}

func (e *gated) start(t *testing.T, chunk int) (string, []string) {
	t.Helper()
	var ids []string
	var ts []Target
	for _, s := range e.gate.sim.Servers() {
		ids = append(ids, s.ServerID)
		ts = append(ts, Target{ServerID: s.ServerID})
	}
	ctx := context.Background()
	plan, err := MakePlan(ctx, Spec{ID: "r1", Keypair: "kp-new", Targets: ts, ChunkSize: chunk, MaxAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.store, e.enq, plan, e.opts, time.Now()); err != nil {
		t.Fatal(err)
	}
	return "r1", ids
}

// until waits for cond on the rotation, up to d.
func (e *gated) until(t *testing.T, id string, d time.Duration, what string, cond func(*Rotation) bool) *Rotation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		rot, err := e.store.Rotation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(rot) {
			return rot
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation not %s after %s: state %s (%s), counts %+v", what, d, rot.State, rot.Reason, rot.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resumed lifts the denial, resumes rotation id, and checks it then
// succeeds (within d) with all 10 servers, each submitted once.
func (e *gated) resumed(t *testing.T, id string, ids []string, d time.Duration) {
	t.Helper()
	e.gate.deny.Store("")
	if _, _, err := Resume(context.Background(), e.store, e.enq, id, nil, "test", e.opts); err != nil {
		t.Fatal(err)
	}
	rot := e.until(t, id, d, "finished", func(r *Rotation) bool { return r.Finished() })
	if rot.State != StateSucceeded || rot.Counts.Succeeded != 10 || rot.Counts.Resubmitted != 0 {
		t.Fatalf("after resume: state %s, counts %+v; want succeeded, 10 succeeded, nothing resubmitted", rot.State, rot.Counts)
	}
	e.submittedOnce(t, ids)
}

func (e *gated) submittedOnce(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if n := e.gate.sim.SubmitCount(id); n != 1 {
			t.Errorf("server %s submitted %d times, want once", id, n)
		}
	}
}

// TestListJobsDeniedHaltsAndResumes: a 403 on ListJobs halts the rotation
// with a reason naming the IAM action; nothing is recorded failed, no
// batch is submitted twice, and no more ListJobs calls are made while it
// is halted. Resumed once the policy is fixed, it finishes with every
// server succeeded.
func TestListJobsDeniedHaltsAndResumes(t *testing.T) {
	e := newGated(t, 10)
	e.gate.deny.Store("jobs")
	id, ids := e.start(t, 5)
	rot := e.until(t, id, 10*time.Second, "halted", func(r *Rotation) bool { return r.State == StateFailed })
	for _, want := range []string{"ListJobs answered 403 CPS.0001 (No permission to request resources.)", "cph:jobs:list", "resume once it is fixed"} {
		if !strings.Contains(rot.Reason, want) {
			t.Errorf("reason %q does not say %q", rot.Reason, want)
		}
	}
	time.Sleep(time.Second) // submits and ticks settle
	calls := e.gate.listJobsCalls()
	time.Sleep(1500 * time.Millisecond)
	if later := e.gate.listJobsCalls(); len(later) != len(calls) {
		t.Errorf("%d ListJobs calls while halted, want none: the tick chain must end", len(later)-len(calls))
	}
	rot = e.until(t, id, time.Second, "halted", func(r *Rotation) bool { return r.State == StateFailed })
	if rot.Counts.Failed != 0 || rot.Counts.Running != 10 || rot.Counts.Succeeded != 0 {
		t.Fatalf("counts %+v while halted: want all 10 running, none failed", rot.Counts)
	}
	e.submittedOnce(t, ids)

	e.resumed(t, id, ids, 15*time.Second)
}

// TestUpdateKeypairDeniedHaltsBeforeSubmitting: a 403 on UpdateKeypair
// halts the rotation before anything is submitted, withdraws the intents,
// and resume submits each batch once.
func TestUpdateKeypairDeniedHaltsBeforeSubmitting(t *testing.T) {
	e := newGated(t, 10)
	e.gate.deny.Store("submit")
	id, ids := e.start(t, 5)
	rot := e.until(t, id, 10*time.Second, "halted", func(r *Rotation) bool { return r.State == StateFailed })
	if want := "UpdateKeypair answered 403 CPS.0001"; !strings.Contains(rot.Reason, want) || !strings.Contains(rot.Reason, "cph:servers:updateKeypair") {
		t.Errorf("reason %q: want %q and the IAM action cph:servers:updateKeypair", rot.Reason, want)
	}
	time.Sleep(500 * time.Millisecond)
	ctx := context.Background()
	for n := 1; n <= 2; n++ {
		b, err := e.store.Batch(ctx, id, n)
		if err != nil {
			t.Fatal(err)
		}
		if b.Checkpointed || b.Intents != 0 {
			t.Errorf("batch %d: checkpointed %v, intents %d; want unsubmitted with no intent", n, b.Checkpointed, b.Intents)
		}
	}
	rot = e.until(t, id, time.Second, "halted", func(r *Rotation) bool { return r.State == StateFailed })
	if rot.Counts.Pending != 10 || rot.Counts.Failed != 0 || rot.Counts.Submitted != 0 {
		t.Fatalf("counts %+v while halted: want all 10 pending", rot.Counts)
	}
	for _, sid := range ids {
		if n := e.gate.sim.SubmitCount(sid); n != 0 {
			t.Fatalf("server %s submitted %d times while denied", sid, n)
		}
	}

	e.resumed(t, id, ids, 20*time.Second)
}

// TestHaltStore: Halt halts a running or paused rotation and adds its
// reason to a halted one once; a cancelled rotation is not halted; resume
// clears the halt.
func TestHaltStore(t *testing.T) {
	rdb := testredis.Mini(t).Client(t)
	s := NewStore(rdb, "")
	ctx := context.Background()
	controlled(t, s, "h", []int{2}, nil, -1, false)
	if ok, err := s.Halt(ctx, "h", "A denied", true); err != nil || !ok {
		t.Fatalf("Halt = %v, %v", ok, err)
	}
	s.Halt(ctx, "h", "A denied", true)
	s.Halt(ctx, "h", "B denied", false)
	rot := mustRotation(t, s, "h")
	if rot.State != StateFailed || rot.Reason != "A denied; B denied" {
		t.Fatalf("state %s, reason %q", rot.State, rot.Reason)
	}
	if _, err := s.Resume(ctx, "h", -1, "test", -1); err != nil {
		t.Fatal(err)
	}
	if rot := mustRotation(t, s, "h"); rot.State != StateRunning || rot.Reason != "" {
		t.Fatalf("after resume: state %s, reason %q", rot.State, rot.Reason)
	}
	if _, _, err := s.Cancel(ctx, "h", "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Halt(ctx, "h", "C denied", true); err != nil || ok {
		t.Fatalf("Halt of a cancelled rotation = %v, %v; want false", ok, err)
	}
}

// TestDeniedReason: a 403 names the IAM action, a 401 the credentials.
func TestDeniedReason(t *testing.T) {
	got := deniedReason(APIListJobs, &cph.Error{StatusCode: 403, Code: "CPS.0001", Message: "No permission to request resources."})
	if want := "ListJobs answered 403 CPS.0001 (No permission to request resources.): the credentials' IAM policy needs cph:jobs:list; resume once it is fixed"; got != want {
		t.Errorf("403 reason\n%q, want\n%q", got, want)
	}
	got = deniedReason(APIShowServer, &cph.Error{StatusCode: 401, Code: "APIGW.0301", Message: "Incorrect IAM authentication information: token expires"})
	if !strings.HasPrefix(got, "ShowCloudPhoneServerDetail answered 401 APIGW.0301") || !strings.Contains(got, "credentials were refused") {
		t.Errorf("401 reason %q", got)
	}
}

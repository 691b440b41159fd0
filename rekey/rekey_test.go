package rekey_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// offline is a client that reads no fleet, on r.
func offline(t *testing.T, r *testredis.Redis) *rekey.Client {
	t.Helper()
	c, err := rekey.NewClient(r.Client(t), rekey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestErrNotFound(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		c := offline(t, r)
		ctx := context.Background()
		calls := []struct {
			name string
			call func() error
		}{
			{"Rotation", func() error { _, err := c.Rotation(ctx, "r-missing"); return err }},
			{"Wait", func() error { _, err := c.Wait(ctx, "r-missing", rekey.WaitOptions{}); return err }},
			{"Report", func() error { return c.Report(ctx, "r-missing", func(rekey.Row) error { return nil }) }},
			{"WriteReport", func() error { return c.WriteReport(ctx, "r-missing", &strings.Builder{}, rekey.ReportCSV) }},
			{"Pause", func() error { return c.Pause(ctx, "r-missing") }},
			{"Resume", func() error { _, err := c.Resume(ctx, "r-missing", rekey.ResumeOptions{}); return err }},
			{"Cancel", func() error { _, err := c.Cancel(ctx, "r-missing"); return err }},
			{"RollbackRequest", func() error { _, err := c.RollbackRequest(ctx, "r-missing", rekey.Request{}); return err }},
		}
		for _, tt := range calls {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.call(); !errors.Is(err, rekey.ErrNotFound) {
					t.Fatalf("err = %v, want ErrNotFound", err)
				}
			})
		}
	})
}

func TestErrConflict(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		c := offline(t, r)
		ctx := context.Background()
		req := rekey.Request{ID: "prod", Keypair: "kp-new", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a"}, {ServerID: "b"}}}
		first, err := c.Start(ctx, req)
		if err != nil || !first.Created || first.Enqueued != 1 {
			t.Fatalf("Start = %+v, %v", first, err)
		}
		again, err := c.Start(ctx, req) // the same request: no conflict, nothing enqueued
		if err != nil || again.Created || again.Enqueued != 0 {
			t.Fatalf("re-run Start = %+v, %v; want the same rotation, nothing enqueued", again, err)
		}
		req.Targets = []rekey.Target{{ServerID: "c"}}
		if _, err := c.Start(ctx, req); !errors.Is(err, rekey.ErrConflict) {
			t.Fatalf("other targets under the same id: err = %v, want ErrConflict", err)
		}
	})
}

func TestInputError(t *testing.T) {
	r := testredis.Mini(t)
	c := offline(t, r)
	ctx := context.Background()
	parse := func(in string, f rekey.Format) func() error {
		return func() error { _, err := rekey.ParseTargets(strings.NewReader(in), f); return err }
	}
	start := func(req rekey.Request) func() error {
		return func() error { _, err := c.Start(ctx, req); return err }
	}
	one := []rekey.Target{{ServerID: "a"}}
	tests := []struct {
		name          string
		call          func() error
		line, element int
		more          int
		want          string
	}{
		{"bad line", parse("aaa\nx y\n", rekey.FormatLines), 2, 0, 0, "contains a space"},
		{"two bad lines", parse("x y\naaa\naaa\n", rekey.FormatLines), 1, 0, 1, "duplicate"},
		{"bad CSV row", parse("server_id\na\nb,c\n", rekey.FormatCSV), 3, 0, 0, ""},
		{"bad JSON element", parse(`["a", 7]`, rekey.FormatJSON), 0, 2, 0, "element 2"},
		{"unknown format", parse("a", "xml"), 0, 0, 0, "xml"},
		{"bad target", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a"}, {ServerID: "b c"}}}), 0, 2, 0, "element 2"},
		{"duplicate target", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a"}, {ServerID: "a"}}}), 0, 2, 0, "first at element 1"},
		{"bad target keypair", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a", Keypair: "k p"}}}), 0, 1, 0, ""},
		{"no keypair", start(rekey.Request{NoSkipMatching: true, Targets: one}), 0, 0, 0, "keypair"},
		{"no targets", start(rekey.Request{Keypair: "kp", NoSkipMatching: true}), 0, 0, 0, "no target"},
		{"chunk size", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: one, ChunkSize: 101}), 0, 0, 0, "chunk size"},
		{"bad id", start(rekey.Request{ID: "a{b}", Keypair: "kp", NoSkipMatching: true, Targets: one}), 0, 0, 0, "rotation id"},
		{"wave of 0%", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: one, Waves: []rekey.Size{rekey.Percent(0)}}), 0, 0, 0, "wave 1"},
		{"fleet needed", start(rekey.Request{Keypair: "kp", Targets: one}), 0, 0, 0, "Options.CPH"},
		{"discovery needs the fleet", start(rekey.Request{Keypair: "kp", NoSkipMatching: true, Discover: &rekey.Discover{}}), 0, 0, 0, "Options.CPH"},
		{"bad size", func() error { _, err := rekey.ParseSize("lots"); return err }, 0, 0, 0, ""},
		{"bad rate", func() error { _, err := rekey.ParseRate("fast"); return err }, 0, 0, 0, ""},
		{"bad rotation id", func() error { _, err := c.Rotation(ctx, "a b"); return err }, 0, 0, 0, "rotation id"},
		{"bad namespace", func() error { _, err := rekey.NewClient(r.Client(t), rekey.Options{Namespace: "a{b}"}); return err }, 0, 0, 0, "namespace"},
		{"negative task timeout", func() error {
			_, err := rekey.NewClient(r.Client(t), rekey.Options{TaskTimeout: -time.Second})
			return err
		}, 0, 0, 0, "task timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ie *rekey.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v (%T), want an *InputError", err, err)
			}
			if ie.Line != tt.line || ie.Element != tt.element || len(ie.More) != tt.more {
				t.Fatalf("InputError{Line: %d, Element: %d, More: %d}, want %d, %d, %d: %v", ie.Line, ie.Element, len(ie.More),
					tt.line, tt.element, tt.more, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%q does not say %q", err, tt.want)
			}
		})
	}
	if keys := r.Mini.Keys(); len(keys) != 0 {
		t.Fatalf("Redis holds %v after bad input", keys)
	}
}

func TestErrRedisUnavailable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	c, err := rekey.NewClient(rdb, rekey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Rotation(ctx, "r-1"); !errors.Is(err, rekey.ErrRedisUnavailable) {
		t.Fatalf("Rotation: err = %v, want ErrRedisUnavailable", err)
	}
	if _, err := c.Start(ctx, rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a"}}}); !errors.Is(err, rekey.ErrRedisUnavailable) {
		t.Fatalf("Start: err = %v, want ErrRedisUnavailable", err)
	}
	_, err = c.Wait(ctx, "r-1", rekey.WaitOptions{MaxOutage: 300 * time.Millisecond})
	if !errors.Is(err, rekey.ErrRedisUnavailable) || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("Wait: err = %v, want ErrRedisUnavailable after giving up", err)
	}
}

// TestWaitRidesThroughRedisRestart: Wait keeps reading across an outage
// and says when Redis is gone and back.
func TestWaitRidesThroughRedisRestart(t *testing.T) {
	r := testredis.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	c, err := rekey.NewClient(rdb, rekey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := c.Start(ctx, rekey.Request{Keypair: "kp", NoSkipMatching: true, Targets: []rekey.Target{{ServerID: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	downs, reads, backs := 0, 0, 0
	restarted := make(chan error, 1)
	stop := errors.New("seen enough")
	_, err = c.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond,
		RedisDown: func(err error, retryIn time.Duration) {
			if !errors.Is(err, rekey.ErrRedisUnavailable) || retryIn <= 0 {
				t.Errorf("RedisDown(%v, %s)", err, retryIn)
			}
			if downs++; downs == 3 {
				restarted <- r.Mini.Restart()
			}
		},
		RedisBack: func(time.Duration) { backs++ },
		Progress: func(*rekey.Rotation) error {
			switch reads++; {
			case reads == 2:
				r.Mini.Close()
			case backs > 0:
				return stop
			}
			return nil
		}})
	if !errors.Is(err, stop) {
		t.Fatalf("Wait: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if downs < 3 || backs != 1 {
		t.Fatalf("%d failed reads reported, back %d times", downs, backs)
	}
}

func TestAPIError(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 10, NoWorker: true})
	wrong := *env.CPH
	wrong.SecretKey = "not-the-secret"
	c, err := rekey.NewClient(env.Redis, rekey.Options{CPH: &wrong})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Plan(context.Background(), rekey.Request{Keypair: "kp", Targets: env.Targets()})
	var ae *rekey.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want an *APIError", err, err)
	}
	if ae.Class != rekey.ClassPermanent || ae.StatusCode != 401 || !strings.HasPrefix(ae.Code, "APIGW.030") || ae.Op == "" {
		t.Fatalf("APIError %+v: want a permanent 401 APIGW.030x", ae)
	}
	if strings.Contains(err.Error(), "not-the-secret") || strings.Contains(wrong.String(), "not-the-secret") {
		t.Fatal("the secret key shows in an error or in CPH's String")
	}
	if _, err := rekey.NewClient(env.Redis, rekey.Options{CPH: &rekey.CPH{Endpoint: env.CPH.Endpoint}}); err == nil {
		t.Fatal("NewClient accepted a CPH without project or credentials")
	}
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		wantErr error
	}{
		{"v1", `{"version":1,"rotation":"r-1","state":"succeeded","keypair":"kp","counts":{"total":1,"succeeded":1}}`, nil},
		{"before the contract (no version)", `{"rotation":"r-1","state":"cancelled","keypair":"kp","counts":{}}`, nil},
		{"unknown fields are ignored", `{"version":1,"rotation":"r-1","state":"succeeded","keypair":"kp","new":true}`, nil},
		{"a later version", `{"version":2,"rotation":"r-1","state":"succeeded"}`, rekey.ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := rekey.DecodeEvent([]byte(tt.payload))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && e.Rotation != "r-1" {
				t.Fatalf("event %+v", e)
			}
		})
	}
	for _, bad := range []string{`{`, `{"version":1}`, `[]`} {
		if _, err := rekey.DecodeEvent([]byte(bad)); err == nil {
			t.Errorf("DecodeEvent(%s) accepted it", bad)
		}
	}
}

func TestEventHandler(t *testing.T) {
	var got *rekey.Event
	h := rekey.EventHandler(func(ctx context.Context, e *rekey.Event) error { got = e; return nil })
	ctx := context.Background()
	if err := h.ProcessTask(ctx, asynq.NewTask(rekey.EventTaskType, []byte(`{"version":1,"rotation":"r-9","state":"failed"}`))); err != nil || got.Rotation != "r-9" {
		t.Fatalf("ProcessTask: %v, event %+v", err, got)
	}
	for _, task := range []*asynq.Task{asynq.NewTask(rekey.EventTaskType, []byte(`nope`)), asynq.NewTask("other", []byte(`{}`))} {
		if err := h.ProcessTask(ctx, task); !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("task %s %q: err = %v, want SkipRetry (it never decodes)", task.Type(), task.Payload(), err)
		}
	}
	boom := errors.New("tool failed")
	h = rekey.EventHandler(func(context.Context, *rekey.Event) error { return boom })
	if err := h.ProcessTask(ctx, asynq.NewTask(rekey.EventTaskType, []byte(`{"rotation":"r-1"}`))); !errors.Is(err, boom) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("err = %v: want the tool's error, retried", err)
	}
}

// TestRotationLifecycle drives the whole API against the simulator: a dry
// run, discovery, a start with waves that pauses after the first, resume,
// wait, the report, the completion event, then a rollback that puts every
// server back.
func TestRotationLifecycle(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 150})
	c := env.Client
	ctx := context.Background()
	fast := rekey.WaitOptions{Interval: 20 * time.Millisecond}

	req := rekey.Request{Keypair: "kp-new", Discover: &rekey.Discover{}, Waves: []rekey.Size{rekey.Servers(20)}, PauseAfterWave: true}
	plan, err := c.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Targets != 150 || len(plan.ToChange) != 150 || plan.Chunks != 3 || len(plan.Waves) != 2 || plan.Waves[0] != 20 || !plan.Read {
		t.Fatalf("plan %+v", plan)
	}
	if calls := env.Calls(); calls["UpdateKeypair"] != 0 {
		t.Fatalf("the dry run called UpdateKeypair: %v", calls)
	}
	if eta := plan.ETA(rekey.Rate{Events: 1, Per: time.Second}, time.Second); eta != 5*time.Second {
		t.Fatalf("ETA %s, want 3 chunks at 1/s + 2 waves of 1 s", eta)
	}

	st, err := c.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotation.ID != plan.Rotation {
		t.Fatalf("started %s, the dry run named %s", st.Rotation.ID, plan.Rotation)
	}
	rot, err := c.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond,
		Progress: func(r *rekey.Rotation) error {
			if r.State == rekey.StatePaused {
				return errPaused
			}
			return nil
		}})
	if !errors.Is(err, errPaused) || rot.Counts.Succeeded != 20 || rot.Wave != 2 {
		t.Fatalf("after wave 1: %v, %+v; want paused with 20 succeeded", err, rot)
	}
	res, err := c.Resume(ctx, rot.ID, rekey.ResumeOptions{MaxErrors: &rekey.Size{N: 3}})
	if err != nil || res.Enqueued == 0 || res.Rotation.MaxErrors != 3 {
		t.Fatalf("Resume = %+v, %v", res, err)
	}
	if rot, err = c.Wait(ctx, rot.ID, fast); err != nil || rot.State != rekey.StateSucceeded || rot.Counts.Succeeded != 150 {
		t.Fatalf("Wait = %+v, %v", rot, err)
	}
	for _, tg := range env.Targets() {
		if kp, _ := env.Keypair(tg.ServerID); kp != "kp-new" {
			t.Fatalf("server %s is on %q", tg.ServerID, kp)
		}
	}
	rows := 0
	if err := c.Report(ctx, rot.ID, func(r rekey.Row) error {
		rows++
		if r.Outcome != rekey.OutcomeSucceeded || r.OldKeypair != rekeytest.FleetKeypair || r.JobID == "" {
			t.Errorf("row %+v", r)
		}
		return nil
	}); err != nil || rows != 150 {
		t.Fatalf("Report: %d rows, %v", rows, err)
	}
	e, err := env.Event(ctx, rot.ID)
	if err != nil || e.State != rekey.StateSucceeded || e.Counts.Succeeded != 150 {
		t.Fatalf("Event = %+v, %v", e, err)
	}
	if list, err := c.Rotations(ctx, 10); err != nil || len(list) != 1 || list[0].ID != rot.ID {
		t.Fatalf("Rotations = %v, %v", list, err)
	}

	back, err := c.Rollback(ctx, rot.ID, rekey.Request{})
	if err != nil || back.Rotation.ID != rot.ID+"-rollback" {
		t.Fatalf("Rollback = %+v, %v", back, err)
	}
	if rb, err := c.Wait(ctx, back.Rotation.ID, fast); err != nil || rb.State != rekey.StateSucceeded {
		t.Fatalf("rollback: %+v, %v", rb, err)
	}
	for _, tg := range env.Targets() {
		if kp, _ := env.Keypair(tg.ServerID); kp != rekeytest.FleetKeypair {
			t.Fatalf("after the rollback server %s is on %q", tg.ServerID, kp)
		}
	}
}

var errPaused = errors.New("paused")

func TestPauseAndCancel(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 30, NoWorker: true})
	c := env.Client
	ctx := context.Background()
	st, err := c.Start(ctx, rekey.Request{ID: "stop-me", Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx, st.Rotation.ID); err != nil {
		t.Fatal(err)
	}
	if rot, _ := c.Rotation(ctx, st.Rotation.ID); rot.State != rekey.StatePaused {
		t.Fatalf("state %s after Pause", rot.State)
	}
	if _, err := c.RollbackRequest(ctx, st.Rotation.ID, rekey.Request{}); err == nil {
		t.Fatal("a rollback of an unfinished rotation was accepted")
	}
	res, err := c.Cancel(ctx, st.Rotation.ID)
	if err != nil || res.Closed != 30 || res.Rotation.State != rekey.StateCancelled || !res.Rotation.Finished() {
		t.Fatalf("Cancel = %+v, %v; want every server cancelled at once", res, err)
	}
	// Cancelling again is no error: it finishes what a cancel cut short
	// left, here nothing.
	if res, err := c.Cancel(ctx, st.Rotation.ID); err != nil || res.Closed != 0 || res.Rotation.State != rekey.StateCancelled {
		t.Fatalf("second Cancel = %+v, %v; want nothing more closed, no error", res, err)
	}
	var ie *rekey.InputError
	if _, err := c.RollbackRequest(ctx, st.Rotation.ID, rekey.Request{}); !errors.As(err, &ie) || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Fatalf("rollback of a rotation that changed nothing: %v", err)
	}
	if e, err := env.Event(ctx, st.Rotation.ID); err != nil || e.State != rekey.StateCancelled {
		t.Fatalf("Event = %+v, %v", e, err)
	}
}

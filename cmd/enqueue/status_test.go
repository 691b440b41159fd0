package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStatusWatchRidesThroughRedisRestart stops Redis under `status
// --watch` and starts it again: the command says so on stderr, keeps
// going and reports again once Redis is back.
func TestStatusWatchRidesThroughRedisRestart(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	code, id, stderr := runCmd(t, envs, "aaa\nbbb\n", "start", "--keypair", "kp", "--skip-matching=false", "-")
	if code != exitOK {
		t.Fatalf("start: exit %d: %s", code, stderr)
	}
	id = strings.TrimSpace(id)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return envs[k] }}
	done := make(chan int)
	go func() { done <- run(ctx, []string{"status", "--watch", "--interval", "100ms", id}, e) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s after a minute; stdout:\n%s\nstderr:\n%s", what, out.String(), errb.String())
			}
		}
	}
	waitFor("status line", func() bool { return strings.Contains(out.String(), id+" running") })
	r.Mini.Close()
	waitFor("retry message", func() bool { return strings.Contains(errb.String(), "Redis unavailable") })
	lines := strings.Count(out.String(), "\n")
	if err := r.Mini.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor("recovery message", func() bool { return strings.Contains(errb.String(), "Redis is back after") })
	waitFor("status line after the restart", func() bool { return strings.Count(out.String(), "\n") > lines })
	cancel()
	if code := <-done; code != exitFailure { // cancelled: context canceled
		t.Logf("status exited %d after cancel", code)
	}
	t.Logf("stderr:\n%s", errb.String())
}

// TestStatusFailsAtOnceWithoutWatch: a one-shot status does not wait for
// Redis.
func TestStatusFailsAtOnceWithoutWatch(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	r.Mini.Close()
	code, _, stderr := runCmd(t, envs, "", "status", "r-x")
	if code != exitFailure || strings.Contains(stderr, "retrying") {
		t.Fatalf("exit %d, stderr %q: want a runtime failure without retries", code, stderr)
	}
}

// TestRedisFlagsInHelp: every command documents the Redis flags and their
// environment variables, and takes a cluster URL.
func TestRedisFlagsInHelp(t *testing.T) {
	for _, cmd := range []string{"start", "status", "report", "list", "pause", "rollback"} {
		_, _, stderr := runCmd(t, nil, "", cmd, "--help")
		for _, want := range []string{"--redis-ca", "REKEY_REDIS_CA", "--redis-cert", "--redis-key", "--redis-username", "REKEY_REDIS_PASSWORD", "redis-cluster://"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s --help does not mention %s", cmd, want)
			}
		}
	}
	code, _, stderr := runCmd(t, map[string]string{"REDIS_URL": "redis-cluster://127.0.0.1:1/2"}, "", "list")
	if code != exitUsage || !strings.Contains(stderr, "only database 0") || !strings.Contains(stderr, "REDIS_URL") {
		t.Fatalf("cluster URL with a database: exit %d, stderr %q", code, stderr)
	}
}

// TestStatusLineNamesTheWholeBudget: a rotation across regions with a
// budget as a whole says it beside its parts' summed.
func TestStatusLineNamesTheWholeBudget(t *testing.T) {
	total := 5
	for _, tc := range []struct {
		st   status
		want string
	}{
		{status{Rotation: "r", State: rekey.StateRunning, MaxErrors: 20}, "failed (max 20)"},
		{status{Rotation: "g", State: rekey.StateRunning, MaxErrors: 20, MaxErrorsTotal: &total}, "failed (max 5 across its parts, theirs summed 20)"},
	} {
		if got := tc.st.line(); !strings.Contains(got, tc.want) {
			t.Errorf("line %q, want %q in it", got, tc.want)
		}
	}
}

// TestResumedLine: a rotation across places says each part's budget and
// the whole's, never their sum.
func TestResumedLine(t *testing.T) {
	tests := []struct {
		name string
		rot  *rekey.Rotation
		want string
	}{
		{"one place", &rekey.Rotation{Wave: 2, Waves: 4, MaxErrors: 100},
			"r-1 running: wave 2/4, max errors 100, 3 chunks enqueued"},
		{"across places", &rekey.Rotation{MaxErrors: 80, MaxErrorsTotal: 60, Parts: []*rekey.Rotation{
			{ID: "r-1.1", Region: "cn-north-4", MaxErrors: 40}, {ID: "r-1.2", Region: "cn-north-4", MaxErrors: 40}}},
			"r-1 running: max errors by part r-1.1 40, r-1.2 40, rotation-wide 60, 3 chunks enqueued"},
		{"across places, no budget of the whole", &rekey.Rotation{MaxErrorsTotal: -1, Parts: []*rekey.Rotation{
			{ID: "r-1.1", MaxErrors: 5}}},
			"r-1 running: max errors by part r-1.1 5, rotation-wide none, 3 chunks enqueued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resumedLine("r-1", &rekey.Resumed{Rotation: tt.rot, Enqueued: 3}); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

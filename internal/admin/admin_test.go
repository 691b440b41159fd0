package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cph-rekey/cph-rekey/internal/metrics"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

const testToken = "t0ken-for-tests"

func TestNewChecksOptions(t *testing.T) {
	r := testredis.Mini(t)
	tests := []struct {
		addr, token string
		wantErr     string // "" for success
	}{
		{"127.0.0.1:8080", "", ""},
		{"127.0.0.2:8080", "", ""},
		{"localhost:8080", "", ""},
		{"[::1]:8080", "", ""},
		{"0.0.0.0:8080", "", "token is required"},
		{":8080", "", "token is required"},
		{"[::]:8080", "", "token is required"},
		{"10.1.2.3:8080", "", "token is required"},
		{"admin.example:8080", "", "token is required"},
		{"0.0.0.0:8080", testToken, ""},
		{":8080", testToken, ""},
		{"127.0.0.1:8080", testToken, ""},
		{"", testToken, "listen address is empty"},
		{"8080", testToken, "not host:port"},
	}
	for _, tt := range tests {
		s, err := New(Options{Addr: tt.addr, Token: tt.token, RedisConnOpt: r.ConnOpt()})
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("New(addr %q, token %q): %v", tt.addr, tt.token, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("New(addr %q, token %q) error = %v, want one containing %q", tt.addr, tt.token, err, tt.wantErr)
		}
		if s != nil {
			s.Shutdown(context.Background())
		}
	}
	if _, err := New(Options{Addr: "127.0.0.1:8080"}); err == nil || !strings.Contains(err.Error(), "Redis") {
		t.Errorf("New without Redis options: error = %v, want one naming Redis", err)
	}
}

// start serves an admin server on a loopback port for the test.
func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

type header struct{ name, value string }

func basic(user, pass string) header {
	return header{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

func do(t *testing.T, method, url string, hs ...header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		req.Header.Set(h.name, h.value)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(body)
}

func TestAuth(t *testing.T) {
	r := testredis.Mini(t)
	_, base := start(t, Options{Token: testToken, RedisConnOpt: r.ConnOpt(), Gatherer: prometheus.NewRegistry()})
	creds := []struct {
		name string
		h    []header
		want int
	}{
		{"none", nil, http.StatusUnauthorized},
		{"basic", []header{basic("alice", testToken)}, http.StatusOK},
		{"basic empty user", []header{basic("", testToken)}, http.StatusOK},
		{"basic wrong token", []header{basic("alice", testToken+"x")}, http.StatusUnauthorized},
		{"basic token as user", []header{basic(testToken, "")}, http.StatusUnauthorized},
		{"bearer", []header{{"Authorization", "Bearer " + testToken}}, http.StatusOK},
		{"bearer lower case", []header{{"Authorization", "bearer " + testToken}}, http.StatusOK},
		{"bearer wrong token", []header{{"Authorization", "Bearer " + testToken[:len(testToken)-1]}}, http.StatusUnauthorized},
		{"bearer empty", []header{{"Authorization", "Bearer "}}, http.StatusUnauthorized},
		{"other scheme", []header{{"Authorization", "Token " + testToken}}, http.StatusUnauthorized},
	}
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/metrics"} {
		for _, c := range creds {
			resp, _ := do(t, "GET", base+path, c.h...)
			if resp.StatusCode != c.want {
				t.Errorf("GET %s with %s credentials: status %d, want %d", path, c.name, resp.StatusCode, c.want)
			}
			if resp.StatusCode == http.StatusUnauthorized {
				if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="cph-rekey"`) {
					t.Errorf("GET %s with %s credentials: WWW-Authenticate = %q", path, c.name, got)
				}
			}
		}
	}
}

func TestNoTokenOnLoopback(t *testing.T) {
	r := testredis.Mini(t)
	_, base := start(t, Options{RedisConnOpt: r.ConnOpt(), Gatherer: prometheus.NewRegistry()})
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues", "/metrics"} {
		if resp, _ := do(t, "GET", base+path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: status %d, want 200", path, resp.StatusCode)
		}
	}
}

func TestProbesAreOpen(t *testing.T) {
	r := testredis.Mini(t)
	readyErr := errors.New("redis: dial tcp 10.9.8.7:6379: connection refused")
	var failing atomic.Bool
	_, base := start(t, Options{Token: testToken, RedisConnOpt: r.ConnOpt(), Ready: func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("Ready called without a deadline")
		}
		if failing.Load() {
			return readyErr
		}
		return nil
	}})
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, method := range []string{"GET", "HEAD"} {
			if resp, _ := do(t, method, base+path); resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s: status %d, want 200", method, path, resp.StatusCode)
			}
		}
	}
	failing.Store(true)
	resp, body := do(t, "GET", base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz while not ready: status %d, want 503", resp.StatusCode)
	}
	if strings.Contains(body, "10.9.8.7") {
		t.Errorf("GET /readyz shows the failure's details to anyone: %q", body)
	}
	if resp, _ := do(t, "GET", base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz while not ready: status %d, want 200", resp.StatusCode)
	}
}

func TestRootRedirectsToUI(t *testing.T) {
	r := testredis.Mini(t)
	_, base := start(t, Options{RedisConnOpt: r.ConnOpt()})
	resp, _ := do(t, "GET", base+"/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/monitoring/" {
		t.Errorf("GET /: status %d, Location %q; want 302 to /monitoring/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := do(t, "GET", base+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics without a Gatherer: status %d, want 404", resp.StatusCode)
	}
}

// pausePath is a mutating request of the UI's API.
const pausePath = "/monitoring/api/queues/rekey-submit:pause"

func enqueue(t *testing.T, r *testredis.Redis, queue, taskType, payload string) {
	t.Helper()
	c := asynq.NewClient(r.ConnOpt())
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask(taskType, []byte(payload)), asynq.Queue(queue)); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
}

func paused(t *testing.T, r *testredis.Redis, queue string) bool {
	t.Helper()
	insp := asynq.NewInspector(r.ConnOpt())
	defer insp.Close()
	qi, err := insp.GetQueueInfo(queue)
	if err != nil {
		t.Fatalf("queue info: %v", err)
	}
	return qi.Paused
}

func TestUIWrites(t *testing.T) {
	tests := []struct {
		name     string
		readOnly bool
		extra    []header
		want     int
		paused   bool
	}{
		{"read-only", true, nil, http.StatusMethodNotAllowed, false},
		{"read-write", false, nil, http.StatusNoContent, true},
		{"read-write same origin", false, []header{{"Sec-Fetch-Site", "same-origin"}}, http.StatusNoContent, true},
		{"read-write cross-site", false, []header{{"Sec-Fetch-Site", "cross-site"}}, http.StatusForbidden, false},
		{"read-write foreign origin", false, []header{{"Origin", "https://evil.example"}}, http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testredis.Mini(t)
			enqueue(t, r, "rekey-submit", "rotation:submit", `{"rotation":"r-1","chunk":1,"attempt":1,"servers":50}`)
			_, base := start(t, Options{Token: testToken, ReadOnly: tt.readOnly, RedisConnOpt: r.ConnOpt()})
			resp, body := do(t, "POST", base+pausePath, append(tt.extra, basic("op", testToken))...)
			if resp.StatusCode != tt.want {
				t.Errorf("POST %s: status %d (%q), want %d", pausePath, resp.StatusCode, body, tt.want)
			}
			if got := paused(t, r, "rekey-submit"); got != tt.paused {
				t.Errorf("queue paused = %v, want %v", got, tt.paused)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	r := testredis.Mini(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ServerOutcome("succeeded", 50)
	m.APIRequest("cn-north-4", "UpdateKeypair", "429", time.Second)
	m.Throttled("cn-north-4", "UpdateKeypair")
	m.LimiterWait("cn-north-4", "ListJobs", time.Second)
	m.LimiterRate("cn-north-4", "ListJobs", 10)
	m.PollRound("ListJobs")
	m.Submitted(50)
	enqueue(t, r, "rekey-submit", "rotation:submit", `{}`)
	reg.MustRegister(metrics.NewQueueCollector(asynq.NewInspector(r.ConnOpt()), []string{"rekey-submit", "rekey-poll"}, time.Minute))
	_, base := start(t, Options{Token: testToken, RedisConnOpt: r.ConnOpt(), Gatherer: reg})

	resp, body := do(t, "GET", base+"/metrics", header{"Authorization", "Bearer " + testToken})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	for _, want := range []string{
		`cph_rekey_servers_total{outcome="succeeded"} 50`,
		`cph_rekey_api_requests_total{api="UpdateKeypair",code="429",region="cn-north-4"} 1`,
		`cph_rekey_api_request_duration_seconds_count{api="UpdateKeypair",region="cn-north-4"} 1`,
		`cph_rekey_api_throttled_total{api="UpdateKeypair",region="cn-north-4"} 1`,
		`cph_rekey_limiter_wait_seconds_count{api="ListJobs",region="cn-north-4"} 1`,
		`cph_rekey_limiter_rate{api="ListJobs",region="cn-north-4"} 10`,
		`cph_rekey_poll_rounds_total{api="ListJobs"} 1`,
		`cph_rekey_chunks_submitted_total 1`,
		`cph_rekey_servers_submitted_total 50`,
		`asynq_queue_size{queue="rekey-submit",state="pending"} 1`,
		`asynq_queue_size{queue="rekey-poll",state="pending"} 0`,
		`cph_rekey_collector_up{collector="queues"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestMetricsSurviveAFailingCollector(t *testing.T) {
	r := testredis.Mini(t)
	reg := prometheus.NewRegistry()
	metrics.New(reg).Submitted(7)
	reg.MustRegister(metrics.NewProgressCollector(func(context.Context) ([]metrics.RotationProgress, error) {
		return nil, errors.New("redis down")
	}, time.Minute))
	_, base := start(t, Options{RedisConnOpt: r.ConnOpt(), Gatherer: reg})
	resp, body := do(t, "GET", base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	for _, want := range []string{"cph_rekey_servers_submitted_total 7", `cph_rekey_collector_up{collector="progress"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestUIShowsRedactedPayloads(t *testing.T) {
	r := testredis.Mini(t)
	enqueue(t, r, "rekey-submit", "rotation:submit", `{"rotation":"r-7","chunk":3,"attempt":1,"servers":50,"sk":"SUPERSECRETVALUE"}`)
	_, base := start(t, Options{Token: testToken, RedisConnOpt: r.ConnOpt()})
	resp, body := do(t, "GET", base+"/monitoring/api/queues/rekey-submit/pending_tasks", basic("op", testToken))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list pending tasks: status %d", resp.StatusCode)
	}
	if strings.Contains(body, "SUPERSECRETVALUE") {
		t.Errorf("the UI's API shows a secret: %s", body)
	}
	for _, want := range []string{"r-7", Redacted} {
		if !strings.Contains(body, want) {
			t.Errorf("the UI's API lacks %q: %s", want, body)
		}
	}
}

func TestServeRefusesOpenListenerWithoutToken(t *testing.T) {
	r := testredis.Mini(t)
	s, err := New(Options{Addr: "127.0.0.1:0", RedisConnOpt: r.ConnOpt()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot listen on every interface here: %v", err)
	}
	if err := s.Serve(ln); err == nil || !strings.Contains(err.Error(), "token is required") {
		t.Errorf("Serve on %s without a token: %v, want a refusal", ln.Addr(), err)
	}
}

func TestHandlerServesWithoutListening(t *testing.T) {
	r := testredis.Mini(t)
	s, err := New(Options{Addr: "127.0.0.1:8080", RedisConnOpt: r.ConnOpt()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /healthz through Handler: status %d", rec.Code)
	}
}

// TestNoTokenRefusesRebindingHosts: without a token the admin port answers
// only requests addressed to a loopback name, so a page that rebinds its
// own name to 127.0.0.1 cannot read or steer rotations from the
// operator's browser.
func TestNoTokenRefusesRebindingHosts(t *testing.T) {
	r := testredis.Mini(t)
	_, base := start(t, Options{RedisConnOpt: r.ConnOpt(), Gatherer: prometheus.NewRegistry()})
	for _, c := range []struct {
		host string
		want int
	}{
		{"rebind.example.com", http.StatusForbidden}, {"rebind.example.com:8080", http.StatusForbidden},
		{"10.0.0.7:8080", http.StatusForbidden}, {"localhost:8080", http.StatusOK}, {"LOCALHOST", http.StatusOK},
		{"127.0.0.1:9", http.StatusOK}, {"[::1]:8080", http.StatusOK},
	} {
		// The console and its API are behind the same protect.
		for _, path := range []string{"/monitoring/", "/metrics"} {
			req, err := http.NewRequest("GET", base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = c.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("GET %s with Host %q: status %d, want %d", path, c.host, resp.StatusCode, c.want)
			}
		}
	}
}

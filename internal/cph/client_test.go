package cph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

const (
	testAK      = "AKTESTACCESSKEY00001"
	testSK      = "SKtestSecretKey0000000000000000000000042"
	testToken   = "TOKENsecurityToken000000000000000000007"
	testIAM     = "IAMauthToken0000000000000000000000000099"
	testProject = "0123456789abcdef0123456789abcdef"
)

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// seen is a request as the test server received it.
type seen struct {
	method, path, rawQuery string
	header                 http.Header
	body                   string
	req                    *http.Request
}

// recorder is an httptest handler that records requests and answers with
// the next reply.
type recorder struct {
	mu    sync.Mutex
	reqs  []seen
	reply func(w http.ResponseWriter, r *http.Request, n int)
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	n := len(rec.reqs)
	rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(body), r})
	rec.mu.Unlock()
	rec.reply(w, r, n)
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

// jsonReply answers every request with status and body.
func jsonReply(status int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "hdr-request-id")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func testConfig(endpoint string) Config {
	return Config{
		Endpoint:    endpoint,
		ProjectID:   testProject,
		Credentials: Credentials{AccessKey: testAK, SecretKey: testSK},
		UserAgent:   "cph-rekey/test",
		Now:         func() time.Time { return testNow },
	}
}

// newTestClient starts a server with h and returns a client pointed at it.
func newTestClient(t *testing.T, h http.Handler, mods ...func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	for _, m := range mods {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifySignature recomputes the signature of a received request the way
// the API gateway does.
func verifySignature(t *testing.T, s seen) {
	t.Helper()
	auth, err := ParseAuthorization(s.header.Get("Authorization"))
	if err != nil {
		t.Fatalf("authorization %q: %v", s.header.Get("Authorization"), err)
	}
	if auth.Access != testAK {
		t.Errorf("Access = %q, want %q", auth.Access, testAK)
	}
	r := s.req.Clone(context.Background())
	r.Header = s.header
	creq := CanonicalRequest(r, auth.SignedHeaders, PayloadHash(s.header, []byte(s.body)))
	if want := Signature([]byte(testSK), StringToSign(s.header.Get(HeaderSdkDate), creq)); auth.Signature != want {
		t.Errorf("signature %s does not verify (want %s) over\n%s", auth.Signature, want, creq)
	}
}

func TestRequestShape(t *testing.T) {
	five := 5
	tests := []struct {
		name      string
		call      func(ctx context.Context, c *Client) error
		reply     string
		method    string
		path      string
		rawQuery  string
		body      string
		wantCheck func(t *testing.T, got any)
	}{
		{
			name: "UpdateKeypair",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.UpdateKeypair(ctx, []ServerKeypair{{"s1", "kp<&>"}, {"s2", "kp-2"}})
				return err
			},
			reply:  `{"request_id":"r1","jobs":[{"server_id":"s1","job_id":"j1"},{"server_id":"s2","job_id":"j2"}]}`,
			method: "PUT", path: "/v1/" + testProject + "/cloud-phone/servers/open-access",
			// HTML characters are not escaped, and the encoder's newline is sent.
			body: `{"servers":[{"server_id":"s1","keypair_name":"kp<&>"},{"server_id":"s2","keypair_name":"kp-2"}]}` + "\n",
		},
		{
			name:   "ListJobs one id",
			call:   func(ctx context.Context, c *Client) error { _, err := c.ListJobs(ctx, "r1"); return err },
			reply:  `{"jobs":[]}`,
			method: "GET", path: "/v1/" + testProject + "/cloud-phone/jobs",
			rawQuery: "limit=100&offset=0&request_id=r1",
		},
		{
			name:   "ListJobs two ids",
			call:   func(ctx context.Context, c *Client) error { _, err := c.ListJobs(ctx, "r1", "r2"); return err },
			reply:  `{"jobs":[]}`,
			method: "GET", path: "/v1/" + testProject + "/cloud-phone/jobs",
			rawQuery: "limit=100&offset=0&request_ids=r1%2Cr2",
		},
		{
			name:   "ShowJob",
			call:   func(ctx context.Context, c *Client) error { _, err := c.ShowJob(ctx, "j1"); return err },
			reply:  `{"job_id":"j1","status":1}`,
			method: "GET", path: "/v1/" + testProject + "/cloud-phone/jobs/j1",
		},
		{
			name: "ListServers with every filter",
			call: func(ctx context.Context, c *Client) error {
				f := ServerFilter{ServerName: "cph server", ServerID: "s1", NetworkVersion: "v2", PhoneModelName: "kc1.large",
					Status: &five, CreateSince: 1700000000, CreateUntil: 1800000000, PageSize: 10}
				return c.ListServers(ctx, f, func([]Server) error { return nil })
			},
			reply:  `{"count":0,"servers":[]}`,
			method: "GET", path: "/v1/" + testProject + "/cloud-phone/servers",
			rawQuery: "create_since=1700000000&create_until=1800000000&limit=10&network_version=v2&offset=0" +
				"&phone_model_name=kc1.large&server_id=s1&server_name=cph%20server&status=5",
		},
		{
			name: "ShowServer",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.ShowServer(ctx, "6edb89150bc742aa81fc8ac4ff047297")
				return err
			},
			reply:  `{"server_id":"6edb89150bc742aa81fc8ac4ff047297","keypair_name":"kp"}`,
			method: "GET", path: "/v1/" + testProject + "/cloud-phone/servers/6edb89150bc742aa81fc8ac4ff047297",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{reply: jsonReply(200, tt.reply)}
			c := newTestClient(t, rec)
			if err := tt.call(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			reqs := rec.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			s := reqs[0]
			if s.method != tt.method || s.path != tt.path || s.rawQuery != tt.rawQuery {
				t.Errorf("request %s %s?%s, want %s %s?%s", s.method, s.path, s.rawQuery, tt.method, tt.path, tt.rawQuery)
			}
			if s.body != tt.body {
				t.Errorf("body %q, want %q", s.body, tt.body)
			}
			wantHeaders := map[string]string{
				"Content-Type":     "application/json",
				"User-Agent":       "cph-rekey/test",
				"X-Project-Id":     testProject,
				"X-Sdk-Date":       "20260102T030405Z",
				"X-Auth-Token":     "",
				"X-Security-Token": "",
			}
			for name, want := range wantHeaders {
				if got := s.header.Get(name); got != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			auth, _ := ParseAuthorization(s.header.Get("Authorization"))
			if got := strings.Join(auth.SignedHeaders, ";"); got != "user-agent;x-project-id;x-sdk-date" {
				t.Errorf("SignedHeaders = %s, want the SDK's user-agent;x-project-id;x-sdk-date", got)
			}
			verifySignature(t, s)
		})
	}
}

func TestTemporaryCredentialsSignSecurityToken(t *testing.T) {
	rec := &recorder{reply: jsonReply(200, `{"jobs":[]}`)}
	c := newTestClient(t, rec, func(cfg *Config) { cfg.Credentials.SecurityToken = testToken })
	if _, err := c.ListJobs(context.Background(), "r1"); err != nil {
		t.Fatal(err)
	}
	s := rec.requests()[0]
	if got := s.header.Get(HeaderSecurityToken); got != testToken {
		t.Errorf("X-Security-Token = %q", got)
	}
	auth, _ := ParseAuthorization(s.header.Get("Authorization"))
	if got := strings.Join(auth.SignedHeaders, ";"); got != "user-agent;x-project-id;x-sdk-date;x-security-token" {
		t.Errorf("SignedHeaders = %s", got)
	}
	verifySignature(t, s)
}

func TestIAMTokenModeDoesNotSign(t *testing.T) {
	rec := &recorder{reply: jsonReply(200, `{"job_id":"j1","status":2}`)}
	c := newTestClient(t, rec, func(cfg *Config) { cfg.Credentials = Credentials{AuthToken: testIAM} })
	if _, err := c.ShowJob(context.Background(), "j1"); err != nil {
		t.Fatal(err)
	}
	s := rec.requests()[0]
	if got := s.header.Get(HeaderAuthToken); got != testIAM {
		t.Errorf("X-Auth-Token = %q, want the token", got)
	}
	for _, h := range []string{"Authorization", HeaderSdkDate} {
		if got := s.header.Get(h); got != "" {
			t.Errorf("%s = %q in token mode, want none", h, got)
		}
	}
	if got := s.header.Get(HeaderProjectID); got != testProject {
		t.Errorf("X-Project-Id = %q", got)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var followed atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Add(1) }))
	t.Cleanup(elsewhere.Close)
	rec := &recorder{reply: func(w http.ResponseWriter, r *http.Request, _ int) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
	}}
	c := newTestClient(t, rec, func(cfg *Config) { cfg.Credentials = Credentials{AuthToken: testIAM} })
	_, err := c.ShowJob(context.Background(), "j1")
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusFound || e.Kind != KindPermanent {
		t.Fatalf("err = %v, want a permanent HTTP 302 error", err)
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("redirect followed %d times: the token went to another host", n)
	}
}

func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       Kind
		code       string
		requestID  string
		retryAfter time.Duration
		msg        string // substring of Message
	}{
		{name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "7"},
			body: `{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 minute","request_id":"req-429"}`,
			kind: KindThrottled, code: CodeThrottled, requestID: "req-429", retryAfter: 7 * time.Second, msg: "throttling threshold"},
		{name: "429 with Retry-After date", status: 429, header: map[string]string{"Retry-After": testNow.Add(30 * time.Second).Format(http.TimeFormat)},
			body: `{"error_code":"APIGW.0308","error_msg":"throttled"}`,
			kind: KindThrottled, code: CodeThrottled, requestID: "hdr-request-id", retryAfter: 30 * time.Second},
		{name: "429 without Retry-After", status: 429, body: `{"error_code":"APIGW.0308","error_msg":"throttled"}`,
			kind: KindThrottled, code: CodeThrottled, requestID: "hdr-request-id"},
		{name: "429 old gateway code", status: 429, body: `{"error_code":"APIG.0308","error_msg":"throttled"}`,
			kind: KindThrottled, code: CodeThrottledLegacy, requestID: "hdr-request-id"},
		{name: "throttling code on another status", status: 403, body: `{"error_code":"APIG.0308","error_msg":"throttled"}`,
			kind: KindThrottled, code: CodeThrottledLegacy, requestID: "hdr-request-id"},
		{name: "429 without body", status: 429, kind: KindThrottled, requestID: "hdr-request-id", msg: "Too Many Requests"},
		{name: "500", status: 500, body: `{"error_code":"CPS.9999","error_msg":"internal error"}`,
			kind: KindTransient, code: "CPS.9999", requestID: "hdr-request-id", msg: "internal error"},
		{name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "120"},
			body: `{"error_code":"APIGW.0202","error_msg":"service unavailable"}`,
			kind: KindTransient, code: "APIGW.0202", requestID: "hdr-request-id", retryAfter: 2 * time.Minute},
		{name: "504 backend timeout", status: 504, body: `{"error_code":"APIGW.0201","error_msg":"Backend timeout"}`,
			kind: KindTransient, code: "APIGW.0201", requestID: "hdr-request-id"},
		{name: "502 HTML from a proxy", status: 502, body: "<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
			kind: KindTransient, requestID: "hdr-request-id", msg: "non-JSON answer: <html> <head><title>502 Bad Gateway"},
		{name: "408", status: 408, body: "", kind: KindTransient, requestID: "hdr-request-id", msg: "Request Timeout"},
		{name: "401 signature", status: 401,
			body: `{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail","request_id":"req-401"}`,
			kind: KindPermanent, code: CodeAuthFailed, requestID: "req-401", msg: "verify aksk signature fail"},
		{name: "401 echoing credentials", status: 401,
			body: `{"error_code":"APIGW.0301","error_msg":"bad signature from ` + testAK + ` with ` + testSK + `"}`,
			kind: KindPermanent, code: CodeAuthFailed, requestID: "hdr-request-id", msg: "bad signature from [redacted] with [redacted]"},
		{name: "403 permission", status: 403, body: `{"error_code":"CPS.0001","error_msg":"No permission to request resources."}`,
			kind: KindPermanent, code: CodeNoPermission, requestID: "hdr-request-id"},
		{name: "400 validation", status: 400, body: `{"error_code":"CPS.0004","error_msg":"Invalid phone id.","request_id":"req-400"}`,
			kind: KindPermanent, code: CodeInvalidParameter, requestID: "req-400", msg: "Invalid phone id."},
		{name: "404 job not found", status: 404, body: `{"error_code":"CPS.0011","error_msg":"Job not found."}`,
			kind: KindPermanent, code: CodeJobNotFound, requestID: "hdr-request-id", msg: "Job not found."},
		{name: "code and message fallback", status: 400, body: `{"code":"X.1","message":"other style"}`,
			kind: KindPermanent, code: "X.1", requestID: "hdr-request-id", msg: "other style"},
		{name: "control characters dropped", status: 400, body: `{"error_code":"CPS.0004","error_msg":"line\nforged\u0000"}`,
			kind: KindPermanent, code: CodeInvalidParameter, requestID: "hdr-request-id", msg: "line forged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{reply: func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("X-Request-Id", "hdr-request-id")
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}}
			c := newTestClient(t, rec)
			_, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.Op != "UpdateKeypair" || e.StatusCode != tt.status || e.Kind != tt.kind || e.Code != tt.code ||
				e.RequestID != tt.requestID || e.RetryAfter != tt.retryAfter || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("got %+v\nwant status %d kind %s code %q request_id %q retry after %s message containing %q",
					*e, tt.status, tt.kind, tt.code, tt.requestID, tt.retryAfter, tt.msg)
			}
			if KindOf(err) != tt.kind || IsThrottled(err) != (tt.kind == KindThrottled) ||
				IsTransient(err) != (tt.kind == KindTransient) || RetryAfter(err) != tt.retryAfter {
				t.Errorf("KindOf %s IsThrottled %v IsTransient %v RetryAfter %s disagree with kind %s",
					KindOf(err), IsThrottled(err), IsTransient(err), RetryAfter(err), tt.kind)
			}
			assertNoSecrets(t, err)
			if !strings.HasPrefix(err.Error(), "cph: UpdateKeypair: HTTP ") {
				t.Errorf("error %q does not name the operation and status", err)
			}
		})
	}
}

// assertNoSecrets fails if err's text contains any test credential.
func assertNoSecrets(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{testAK, testSK, testToken, testIAM} {
		for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(text, s) {
				t.Errorf("error text contains a credential: %s", text)
			}
		}
	}
}

func TestUndecodableSuccessIsTransient(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"HTML", "<html>maintenance</html>"},
		{"empty", ""},
		{"truncated JSON", `{"request_id":"r1","jobs":[`},
		{"array", `[{"job_id":"j1"}]`},
		{"wrong type", `{"jobs":"none"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, &recorder{reply: jsonReply(200, tt.body)})
			_, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindTransient || e.StatusCode != 200 || e.Err == nil {
				t.Fatalf("err = %#v, want a transient error with status 200 and a cause", err)
			}
			if e.RequestID != "hdr-request-id" {
				t.Errorf("RequestID = %q, want the X-Request-Id header", e.RequestID)
			}
		})
	}
}

func TestOversizedAnswerIsRejected(t *testing.T) {
	c := newTestClient(t, &recorder{reply: func(w http.ResponseWriter, _ *http.Request, _ int) {
		io.WriteString(w, `{"jobs":[`)
		chunk := strings.Repeat(`{"job_id":"j"},`, 1<<12)
		for written := 0; written <= MaxResponseBytes; written += len(chunk) {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}})
	_, err := c.ListJobs(context.Background(), "r1")
	if !IsTransient(err) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a transient too-large error", err)
	}
}

// hijack takes over the connection and writes raw bytes before closing it.
func hijack(t *testing.T, raw string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		buf.WriteString(raw)
		buf.Flush()
		conn.Close()
	}
}

func TestDroppedConnectionIsTransient(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"before any answer", ""},
		{"mid headers", "HTTP/1.1 200 OK\r\nContent-Ty"},
		{"mid body", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"request_id\":\"r1\",\"jobs\":["},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			rec.reply = hijack(t, tt.raw)
			c := newTestClient(t, rec)
			_, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindTransient || e.StatusCode != 0 {
				t.Fatalf("err = %v, want transient with no status", err)
			}
			if n := len(rec.requests()); n != 1 {
				t.Errorf("UpdateKeypair was sent %d times; a PUT must not be replayed by the transport", n)
			}
			assertNoSecrets(t, err)
		})
	}
}

// holdUntilGone is a reply that keeps every request until the client goes
// away, and reports each arrival on the returned channel.
func holdUntilGone() (func(http.ResponseWriter, *http.Request, int), <-chan struct{}) {
	arrived := make(chan struct{}, 1)
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}, arrived
}

func TestTimeoutAndCancel(t *testing.T) {
	t.Run("per-request timeout", func(t *testing.T) {
		hold, _ := holdUntilGone()
		c := newTestClient(t, &recorder{reply: hold}, func(cfg *Config) { cfg.Timeout = 20 * time.Millisecond })
		_, err := c.ShowJob(context.Background(), "j1")
		if !IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a transient deadline error", err)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		hold, arrived := holdUntilGone()
		c := newTestClient(t, &recorder{reply: hold})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-arrived
			cancel()
		}()
		_, err := c.ShowJob(ctx, "j1")
		if KindOf(err) != KindPermanent || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v (kind %s), want context.Canceled classified permanent", err, KindOf(err))
		}
	})
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := NewClient(testConfig(url))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ShowServer(context.Background(), "s1")
	if !IsTransient(err) {
		t.Fatalf("err = %v, want transient", err)
	}
}

func TestUntrustedCertificateIsPermanent(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := NewClient(testConfig(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ShowServer(context.Background(), "s1")
	if KindOf(err) != KindPermanent || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v (kind %s), want a permanent certificate error", err, KindOf(err))
	}
}

func TestClientValidatesArguments(t *testing.T) {
	rec := &recorder{reply: jsonReply(200, `{}`)}
	c := newTestClient(t, rec)
	ctx := context.Background()
	ids := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("r%d", i)
		}
		return s
	}
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"no servers", func() error { _, err := c.UpdateKeypair(ctx, nil); return err }, "no servers"},
		{"empty server id", func() error { _, err := c.UpdateKeypair(ctx, []ServerKeypair{{"s1", "kp"}, {"", "kp"}}); return err }, "servers[1]: empty server_id"},
		{"empty keypair", func() error { _, err := c.UpdateKeypair(ctx, []ServerKeypair{{"s1", ""}}); return err }, "servers[0] (s1): empty keypair_name"},
		{"no request ids", func() error { _, err := c.ListJobs(ctx); return err }, "0 request ids given, want 1 to 20"},
		{"21 request ids", func() error { _, err := c.ListJobs(ctx, ids(21)...); return err }, "21 request ids given, want 1 to 20"},
		{"comma in request id", func() error { _, err := c.ListJobs(ctx, "a,b"); return err }, `bad request id 0 "a,b"`},
		{"empty job id", func() error { _, err := c.ShowJob(ctx, ""); return err }, "empty job id"},
		{"slash in job id", func() error { _, err := c.ShowJob(ctx, "../servers"); return err }, `bad job id "../servers"`},
		{"empty server id to show", func() error { _, err := c.ShowServer(ctx, ""); return err }, "empty server id"},
		{"page size too large", func() error {
			return c.ListServers(ctx, ServerFilter{PageSize: 101}, func([]Server) error { return nil })
		}, "PageSize 101 is not in 2..100"},
		{"negative page size", func() error {
			return c.ListServers(ctx, ServerFilter{PageSize: -1}, func([]Server) error { return nil })
		}, "PageSize -1 is not in 2..100"},
		{"page of one", func() error {
			return c.ListServers(ctx, ServerFilter{PageSize: 1}, func([]Server) error { return nil })
		}, "PageSize 1 is not in 2..100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if KindOf(err) != KindPermanent || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a permanent error containing %q", err, tt.want)
			}
		})
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid arguments, want none", n)
	}
	if _, err := c.ListJobs(ctx, ids(20)...); err != nil {
		t.Errorf("20 request ids: %v", err)
	}
}

func TestListJobsPaginates(t *testing.T) {
	tests := []struct {
		name      string
		total     int
		wantCalls int
	}{
		{"empty", 0, 1},
		{"one short page", 42, 1},
		{"exactly one page", 100, 2},
		{"250 jobs", 250, 3},
		{"exactly two pages", 200, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			rec.reply = func(w http.ResponseWriter, r *http.Request, _ int) {
				q := r.URL.Query()
				var offset, limit int
				fmt.Sscan(q.Get("offset"), &offset)
				fmt.Sscan(q.Get("limit"), &limit)
				var jobs []string
				for i := offset; i < min(offset+limit, tt.total); i++ {
					jobs = append(jobs, fmt.Sprintf(`{"job_id":"j%d","server_id":"s%d","status":2}`, i, i))
				}
				fmt.Fprintf(w, `{"request_id":"q","jobs":[%s]}`, strings.Join(jobs, ","))
			}
			c := newTestClient(t, rec)
			jobs, err := c.ListJobs(context.Background(), "r1")
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs) != tt.total {
				t.Fatalf("%d jobs, want %d", len(jobs), tt.total)
			}
			for i, j := range jobs {
				if j.JobID != fmt.Sprintf("j%d", i) {
					t.Fatalf("jobs[%d] = %s, out of order", i, j.JobID)
				}
			}
			reqs := rec.requests()
			if len(reqs) != tt.wantCalls {
				t.Fatalf("%d calls, want %d", len(reqs), tt.wantCalls)
			}
			for i, s := range reqs {
				if want := fmt.Sprintf("limit=100&offset=%d&request_id=r1", i*100); s.rawQuery != want {
					t.Errorf("call %d query %s, want %s", i, s.rawQuery, want)
				}
			}
		})
	}
}

func TestListJobsStopsWhenOffsetIsIgnored(t *testing.T) {
	var jobs []string
	for i := range 100 {
		jobs = append(jobs, fmt.Sprintf(`{"job_id":"j%d"}`, i))
	}
	rec := &recorder{reply: jsonReply(200, `{"jobs":[`+strings.Join(jobs, ",")+`]}`)}
	c := newTestClient(t, rec)
	_, err := c.ListJobs(context.Background(), "r1")
	if !IsTransient(err) || !strings.Contains(err.Error(), "ignores offset") {
		t.Fatalf("err = %v, want a transient error about offset", err)
	}
	if n := len(rec.requests()); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

func TestListServersPaginates(t *testing.T) {
	tests := []struct {
		name      string
		total     int
		noCount   bool
		pageSize  int
		wantPages []int
		wantCalls int
	}{
		// Pages of 100 overlap by 2 servers; fn gets each server once.
		{name: "250 servers", total: 250, wantPages: []int{100, 98, 52}, wantCalls: 3},
		{name: "count reached on a full page", total: 196, wantPages: []int{100, 96}, wantCalls: 2},
		{name: "count absent", total: 198, noCount: true, wantPages: []int{100, 98}, wantCalls: 3},
		{name: "small pages", total: 7, pageSize: 3, wantPages: []int{3, 2, 2}, wantCalls: 3},
		{name: "no servers", total: 0, wantPages: nil, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			rec.reply = func(w http.ResponseWriter, r *http.Request, _ int) {
				q := r.URL.Query()
				var offset, limit int
				fmt.Sscan(q.Get("offset"), &offset)
				fmt.Sscan(q.Get("limit"), &limit)
				var servers []string
				for i := offset; i < min(offset+limit, tt.total); i++ {
					servers = append(servers, fmt.Sprintf(`{"server_id":"s%d","keypair_name":"kp","status":5}`, i))
				}
				count := fmt.Sprintf(`"count":%d,`, tt.total)
				if tt.noCount {
					count = ""
				}
				fmt.Fprintf(w, `{%s"servers":[%s]}`, count, strings.Join(servers, ","))
			}
			c := newTestClient(t, rec)
			var pages []int
			next := 0
			err := c.ListServers(context.Background(), ServerFilter{PageSize: tt.pageSize}, func(page []Server) error {
				pages = append(pages, len(page))
				for _, s := range page {
					if s.ServerID != fmt.Sprintf("s%d", next) {
						return fmt.Errorf("got %s, want s%d", s.ServerID, next)
					}
					next++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(pages) != fmt.Sprint(tt.wantPages) {
				t.Errorf("pages %v, want %v", pages, tt.wantPages)
			}
			if n := len(rec.requests()); n != tt.wantCalls {
				t.Errorf("%d calls, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestListServersStopsOnCallbackError(t *testing.T) {
	rec := &recorder{reply: func(w http.ResponseWriter, r *http.Request, _ int) {
		var servers []string
		for i := range 100 {
			servers = append(servers, fmt.Sprintf(`{"server_id":"s%d"}`, i))
		}
		fmt.Fprintf(w, `{"count":1000,"servers":[%s]}`, strings.Join(servers, ","))
	}}
	c := newTestClient(t, rec)
	stop := errors.New("enough")
	err := c.ListServers(context.Background(), ServerFilter{}, func([]Server) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the callback's error", err)
	}
	if n := len(rec.requests()); n != 1 {
		t.Errorf("%d calls after the callback failed, want 1", n)
	}
}

func TestListServersReturnsPageErrors(t *testing.T) {
	rec := &recorder{}
	rec.reply = func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(429)
			io.WriteString(w, `{"error_code":"APIGW.0308","error_msg":"throttled"}`)
			return
		}
		var servers []string
		for i := range 100 {
			servers = append(servers, fmt.Sprintf(`{"server_id":"s%d"}`, i))
		}
		fmt.Fprintf(w, `{"count":1000,"servers":[%s]}`, strings.Join(servers, ","))
	}
	c := newTestClient(t, rec)
	pages := 0
	err := c.ListServers(context.Background(), ServerFilter{}, func([]Server) error { pages++; return nil })
	if !IsThrottled(err) || pages != 1 {
		t.Fatalf("err = %v after %d pages, want throttled after 1", err, pages)
	}
}

// TestReadsInFlightKeepTheRateBusy: a walk keeps rate × round trip reads
// in flight (and some to spare), so the read rate, not the latency, bounds
// it at round trips up to a second.
func TestReadsInFlightKeepTheRateBusy(t *testing.T) {
	tests := []struct {
		name string
		rate float64 // reads a second; 0: unpaced
		rtt  time.Duration
		want int
	}{
		{"20/s at 1 s", 20, time.Second, 26},
		{"20/s at 300 ms", 20, 300 * time.Millisecond, 9},
		{"20/s, no round trip yet", 20, 0, movinglist.MaxInFlight},
		{"unpaced", 0, time.Second, movinglist.MaxInFlight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{}
			if tt.rate > 0 {
				c.reads = rate.NewLimiter(rate.Limit(tt.rate), 1)
			}
			obs := &observer{}
			obs.rtt.Store(int64(tt.rtt))
			got := min(movinglist.MaxInFlight, c.readsInFlight(obs))
			if got != tt.want {
				t.Fatalf("%d reads in flight, want %d", got, tt.want)
			}
			if need := int(math.Ceil(tt.rate * tt.rtt.Seconds())); got < need {
				t.Fatalf("%d reads in flight cannot keep %g/s busy at %s (needs %d)", got, tt.rate, tt.rtt, need)
			}
		})
	}
}

package cphsim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

const (
	testAK      = "TESTACCESSKEY0000000"
	testSK      = "test-secret-key"
	testProject = "0123456789abcdef0123456789abcdef"
	base        = "/v1/" + testProject + "/cloud-phone"
)

// fakeClock is a settable clock for Options.Clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// env is a simulator behind an httptest server, with a fake clock.
type env struct {
	sim   *cphsim.Sim
	srv   *httptest.Server
	clock *fakeClock
}

// newEnv starts a simulator with the test credentials, project and clock
// filled in where opts leaves them empty.
func newEnv(t *testing.T, opts cphsim.Options) *env {
	t.Helper()
	clock := newClock()
	if opts.AccessKey == "" {
		opts.AccessKey, opts.SecretKey = testAK, testSK
	}
	if opts.ProjectID == "" {
		opts.ProjectID = testProject
	}
	if opts.Clock == nil {
		opts.Clock = clock.Now
	}
	sim := cphsim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &env{sim: sim, srv: srv, clock: clock}
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errBody decodes a gateway or CPH error body.
func (a answer) errBody(t *testing.T) cph.ErrorBody {
	t.Helper()
	var e cph.ErrorBody
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d, body %s", a.status, a.body)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
}

// request builds a request for path (relative to the server) carrying the
// X-Project-Id header the SDK sends.
func (e *env) request(t *testing.T, method, path string, body []byte) *http.Request {
	t.Helper()
	req, err := e.newRequest(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (e *env) newRequest(method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(cph.HeaderProjectID, testProject)
	return req, nil
}

// send sends req with body (already attached) and reads the answer.
func (e *env) send(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// do sends a request signed with the test credentials at the sim's time.
func (e *env) do(t *testing.T, method, path string, body []byte) answer {
	t.Helper()
	a, err := e.try(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// try is do for goroutines other than the test's: it reports instead of
// failing the test.
func (e *env) try(method, path string, body []byte) (answer, error) {
	req, err := e.newRequest(method, path, body)
	if err != nil {
		return answer{}, err
	}
	cph.NewSigner(testAK, testSK).Sign(req, body, e.clock.Now())
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (e *env) get(t *testing.T, path string) answer {
	t.Helper()
	return e.do(t, http.MethodGet, path, nil)
}

// keypairBody is an UpdateKeypair body as the SDK encodes it (trailing
// newline included).
func keypairBody(t *testing.T, keypair string, ids ...string) []byte {
	t.Helper()
	var in struct {
		Servers []cph.ServerKeypair `json:"servers"`
	}
	for _, id := range ids {
		in.Servers = append(in.Servers, cph.ServerKeypair{ServerID: id, KeypairName: keypair})
	}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(in); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// submit calls UpdateKeypair and decodes its 200 answer.
func (e *env) submit(t *testing.T, keypair string, ids ...string) cph.UpdateKeypairResponse {
	t.Helper()
	var out cph.UpdateKeypairResponse
	e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, keypair, ids...)).decode(t, &out)
	return out
}

// ids returns the ids of the first n servers in list order.
func (e *env) ids(t *testing.T, n int) []string {
	t.Helper()
	servers := e.sim.Servers()
	if len(servers) < n {
		t.Fatalf("fleet has %d servers, want at least %d", len(servers), n)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = servers[i].ServerID
	}
	return out
}

// wantError checks a non-2xx answer's status and error code.
func wantError(t *testing.T, a answer, status int, code string) cph.ErrorBody {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	e := a.errBody(t)
	if e.ErrorCode != code {
		t.Fatalf("error_code %q, want %q; body %s", e.ErrorCode, code, a.body)
	}
	if e.RequestID == "" || e.RequestID != a.header.Get("X-Request-Id") {
		t.Fatalf("request_id %q, X-Request-Id %q", e.RequestID, a.header.Get("X-Request-Id"))
	}
	return e
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

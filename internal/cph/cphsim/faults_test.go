package cphsim_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

func TestThrottling(t *testing.T) {
	tests := []struct {
		name    string
		opts    cphsim.Options
		calls   []string // paths, "PUT" for UpdateKeypair; the last one is throttled
		code    string
		message string
		retry   string
	}{
		{"update", cphsim.Options{UpdateKeypairQuota: 2}, []string{"PUT", "PUT", "PUT"}, "APIGW.0308",
			"The throttling threshold has been reached: policy user over ratelimit,limit:2,time:1 second", ""},
		{"list jobs", cphsim.Options{ListJobsQuota: 1}, []string{"/jobs?request_id=a", "/jobs?request_id=a"}, "APIGW.0308",
			"The throttling threshold has been reached: policy user over ratelimit,limit:1,time:1 second", ""},
		{"each read API has its own quota", cphsim.Options{ReadQuota: 1}, []string{"/servers", "/jobs/x", "/servers/x", "/servers"}, "APIGW.0308",
			"The throttling threshold has been reached: policy user over ratelimit,limit:1,time:1 second", ""},
		{"legacy code and Retry-After", cphsim.Options{ListJobsQuota: 0.5, LegacyThrottleCode: true, RetryAfter: true},
			[]string{"/jobs?request_id=a", "/jobs?request_id=a"}, "APIG.0308",
			"The throttling threshold has been reached: policy user over ratelimit,limit:30,time:1 minute", "2"},
		{"quota hidden", cphsim.Options{UpdateKeypairQuota: 1, HideQuota: true}, []string{"PUT", "PUT"}, "APIGW.0308",
			"The throttling threshold has been reached: policy user over ratelimit", ""},
		{"burst", cphsim.Options{ListJobsQuota: 1, QuotaBurst: 3},
			[]string{"/jobs?request_id=a", "/jobs?request_id=a", "/jobs?request_id=a", "/jobs?request_id=a"}, "APIGW.0308",
			"The throttling threshold has been reached: policy user over ratelimit,limit:1,time:1 second", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Servers = 1
			e := newEnv(t, tt.opts)
			id := e.ids(t, 1)[0]
			call := func(path string) answer {
				if path == "PUT" {
					return e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, "kp", id))
				}
				return e.get(t, base+path)
			}
			last := len(tt.calls) - 1
			for _, p := range tt.calls[:last] {
				if a := call(p); a.status == http.StatusTooManyRequests {
					t.Fatalf("%s throttled too early", p)
				}
			}
			a := call(tt.calls[last])
			got := wantError(t, a, http.StatusTooManyRequests, tt.code)
			if got.ErrorMsg != tt.message {
				t.Errorf("error_msg %q, want %q", got.ErrorMsg, tt.message)
			}
			if ra := a.header.Get("Retry-After"); ra != tt.retry {
				t.Errorf("Retry-After %q, want %q", ra, tt.retry)
			}
			// Tokens come back with time, not with retries.
			e.clock.Add(2 * time.Second)
			if a := call(tt.calls[last]); a.status == http.StatusTooManyRequests {
				t.Errorf("still throttled after 2s: %s", a.body)
			}
			if st := e.sim.Stats(); sum(st.Throttled) != 1 {
				t.Errorf("throttled %v", st.Throttled)
			}
		})
	}
}

func sum(m map[cphsim.API]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Authentication comes before throttling: a bad request does not spend a
// token and is told it is unauthenticated, not throttled.
func TestAuthBeforeThrottling(t *testing.T) {
	e := newEnv(t, cphsim.Options{ReadQuota: 1})
	req := e.request(t, http.MethodGet, base+"/servers", nil)
	cph.NewSigner(testAK, "wrong").Sign(req, nil, e.clock.Now())
	wantError(t, e.send(t, req), http.StatusUnauthorized, "APIGW.0301")
	if a := e.get(t, base+"/servers"); a.status != http.StatusOK {
		t.Fatalf("status %d: the refused request spent the token", a.status)
	}
	wantError(t, e.get(t, base+"/servers"), http.StatusTooManyRequests, "APIGW.0308")
}

func TestSetQuota(t *testing.T) {
	e := newEnv(t, cphsim.Options{})
	list := func() int { return e.get(t, base+"/jobs?request_id=a").status }
	steps := []struct {
		rate float64
		want []int // statuses of consecutive calls at one instant
	}{
		{0, []int{200, 200, 200, 200}},
		{2, []int{200, 200, 429}},
		{1, []int{200, 429}}, // halved mid-run, after a second's refill
		{0, []int{200, 200, 200}},
		{3, []int{200, 200, 200, 429}},
	}
	for i, s := range steps {
		if err := e.sim.SetQuota(cphsim.APIListJobs, s.rate); err != nil {
			t.Fatal(err)
		}
		var got []int
		for range s.want {
			got = append(got, list())
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("step %d (rate %v): %v, want %v", i, s.rate, got, s.want)
		}
		e.clock.Add(time.Second)
	}
	if err := e.sim.SetQuota("Nope", 1); err == nil {
		t.Error("unknown API accepted")
	}
	// A read API's quota is its own: the others stay unlimited.
	if err := e.sim.SetQuota(cphsim.APIListServers, 1); err != nil {
		t.Fatal(err)
	}
	e.get(t, base+"/servers")
	wantError(t, e.get(t, base+"/servers"), http.StatusTooManyRequests, "APIGW.0308")
	if a := e.get(t, base+"/jobs/x"); a.status == http.StatusTooManyRequests {
		t.Errorf("ShowJob throttled by ListServers' quota: %s", a.body)
	}
}

func TestInjected5xx(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, Error5xxRate: 1})
	seen := map[int]bool{}
	for range 30 {
		a := e.get(t, base+"/servers")
		switch a.status {
		case 500:
			wantError(t, a, 500, "CPS.9999")
		case 503, 504:
			wantError(t, a, a.status, "APIGW.0201")
		default:
			t.Fatalf("status %d", a.status)
		}
		seen[a.status] = true
	}
	if len(seen) != 3 {
		t.Errorf("statuses seen %v, want 500, 503 and 504", seen)
	}
	a := e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, "kp-new", e.ids(t, 1)[0]))
	if a.status < 500 {
		t.Fatalf("status %d", a.status)
	}
	if st := e.sim.Stats(); st.JobsCreated != 0 || st.Injected5xx[cphsim.APIListServers] != 30 || st.Injected5xx[cphsim.APIUpdateKeypair] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDrop(t *testing.T) {
	tests := []struct {
		name        string
		before      bool
		wantJobs    int
		wantKeypair string
	}{
		{"after commit", false, 1, "kp-new"},
		{"before commit", true, 0, "kp-old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 1, DropRate: 1, DropBeforeCommit: tt.before})
			id := e.ids(t, 1)[0]
			body := keypairBody(t, "kp-new", id)
			req := e.request(t, http.MethodPut, base+"/servers/open-access", body)
			cph.NewSigner(testAK, testSK).Sign(req, body, e.clock.Now())
			if resp, err := e.srv.Client().Do(req); err == nil {
				resp.Body.Close()
				t.Fatalf("dropped request answered %d", resp.StatusCode)
			}
			st := e.sim.Stats()
			if st.JobsCreated != tt.wantJobs || st.Dropped[cphsim.APIUpdateKeypair] != 1 {
				t.Errorf("stats %+v", st)
			}
			if kp, _ := e.sim.Keypair(id); kp != tt.wantKeypair {
				t.Errorf("keypair %s, want %s", kp, tt.wantKeypair)
			}
		})
	}
	t.Run("read", func(t *testing.T) {
		e := newEnv(t, cphsim.Options{DropRate: 1})
		req := e.request(t, http.MethodGet, base+"/servers", nil)
		cph.NewSigner(testAK, testSK).Sign(req, nil, e.clock.Now())
		if resp, err := e.srv.Client().Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("dropped read answered %d", resp.StatusCode)
		}
		if st := e.sim.Stats(); st.Dropped[cphsim.APIListServers] != 1 {
			t.Errorf("dropped %v", st.Dropped)
		}
	})
}

func TestSlow(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, SlowRate: 1, SlowDelay: time.Millisecond})
	if a := e.get(t, base+"/servers"); a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
	if st := e.sim.Stats(); st.Slowed[cphsim.APIListServers] != 1 {
		t.Errorf("slowed %v", st.Slowed)
	}
}

// The same seed and the same requests give the same answers, ids and
// faults included.
func TestDeterministicFaults(t *testing.T) {
	run := func() []string {
		e := newEnv(t, cphsim.Options{Servers: 20, Error5xxRate: 0.3, JobFailRate: 0.5, Seed: 42})
		var out []string
		for _, id := range e.ids(t, 20) {
			a := e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, "kp-new", id))
			out = append(out, fmt.Sprint(a.status, a.header.Get("X-Request-Id")))
		}
		return append(out, fmt.Sprint(e.sim.Stats().JobsFailed))
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Errorf("runs differ: %v vs %v", a, b)
	}
	if !slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, "200") }) ||
		!slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, "5") }) {
		t.Errorf("want both answered and failed calls: %v", a)
	}
}

// Handlers, inspection and SetQuota used at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 40, JobLatency: time.Second, ListJobsQuota: 1000})
	ids := e.ids(t, 40)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 10 {
				id := ids[g*10+i]
				a, err := e.try(http.MethodPut, base+"/servers/open-access", []byte(`{"servers":[{"server_id":"`+id+`","keypair_name":"kp-new"}]}`))
				if err != nil || a.status != http.StatusOK {
					t.Errorf("submit %s: %v %d %s", id, err, a.status, a.body)
					return
				}
				if a, err := e.try(http.MethodGet, base+"/jobs?request_id="+a.header.Get("X-Request-Id"), nil); err != nil || a.status != http.StatusOK {
					t.Errorf("list jobs: %v %d %s", err, a.status, a.body)
				}
				e.sim.Keypair(id)
				e.sim.Stats()
				if err := e.sim.SetQuota(cphsim.APIListJobs, float64(1000+i)); err != nil {
					t.Error(err)
				}
				e.clock.Add(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	e.clock.Add(time.Second)
	if st := e.sim.Stats(); st.JobsSucceeded != 40 || st.Calls[cphsim.APIUpdateKeypair] != 40 {
		t.Errorf("stats %+v", st)
	}
}

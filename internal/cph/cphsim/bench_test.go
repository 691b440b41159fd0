package cphsim_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// BenchmarkFleetMemory reports the heap a generated fleet of a million
// servers takes, per server.
func BenchmarkFleetMemory(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sim := cphsim.New(cphsim.Options{Servers: n})
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/server")
		runtime.KeepAlive(sim)
	}
}

// BenchmarkListJobsInFlight measures one ListJobs page and one UpdateKeypair
// of 100 servers against a million-server fleet with 20,000 jobs running,
// through the handler (token auth, no network).
func BenchmarkListJobsInFlight(b *testing.B) {
	clock := newClock()
	sim := cphsim.New(cphsim.Options{ProjectID: testProject, AuthToken: "tok", Servers: 1_000_000,
		JobLatency: time.Hour, JobJitter: 30 * time.Minute, Clock: clock.Now})
	servers := sim.Servers()
	call := func(method, target string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, bytes.NewReader(body))
		req.Header.Set(cph.HeaderAuthToken, "tok")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
		return rec
	}
	submit := func(from int) string {
		var body bytes.Buffer
		body.WriteString(`{"servers":[`)
		for i := range 100 {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"server_id":%q,"keypair_name":"kp-new"}`, servers[(from+i)%len(servers)].ServerID)
		}
		body.WriteString(`]}`)
		return call(http.MethodPut, base+"/servers/open-access", body.Bytes()).Header().Get("X-Request-Id")
	}
	var reqs []string
	for i := range 200 {
		reqs = append(reqs, submit(i*100))
	}
	b.Run("ListJobs", func(b *testing.B) {
		i := 0
		for b.Loop() {
			call(http.MethodGet, base+"/jobs?request_id="+reqs[i%len(reqs)], nil)
			i++
		}
	})
	b.Run("UpdateKeypair", func(b *testing.B) {
		i := 20_000
		for b.Loop() {
			submit(i)
			i += 100
		}
	})
}

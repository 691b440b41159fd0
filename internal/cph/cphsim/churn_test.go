package cphsim_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// listAll reads every page of ListServers and returns the ids in list
// order and the count the first page gave.
func (e *env) listAll(t *testing.T) (ids []string, count int) {
	t.Helper()
	for offset := 0; ; offset += 100 {
		var page cph.ListServersResponse
		e.get(t, fmt.Sprintf("%s/servers?offset=%d&limit=100", base, offset)).decode(t, &page)
		if offset == 0 {
			count = page.Count
		}
		for _, s := range page.Servers {
			ids = append(ids, s.ServerID)
		}
		if len(page.Servers) < 100 {
			return ids, count
		}
	}
}

// A server at list position p is at p+k after k creations, the created
// ones on top, newest first, as the generated ones look.
func TestChurnCreatesOnTop(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 10, CreateRate: 2})
	start := e.clock.Now()
	before := e.ids(t, 10)
	steps := []struct {
		advance time.Duration
		created int // floor(2/s × elapsed)
	}{
		{0, 0},
		{499 * time.Millisecond, 0},
		{time.Millisecond, 1},
		{1200 * time.Millisecond, 3},
		{1800 * time.Millisecond, 7},
	}
	for _, s := range steps {
		e.clock.Add(s.advance)
		ids, count := e.listAll(t)
		if count != 10+s.created || len(ids) != count {
			t.Fatalf("after %s: count %d, %d listed, want %d", e.clock.Now().Sub(start), count, len(ids), 10+s.created)
		}
		for p, id := range before {
			if ids[p+s.created] != id {
				t.Fatalf("after %d creations: position %d holds %s, want the server from position %d", s.created, p+s.created, ids[p+s.created], p)
			}
		}
		if st := e.sim.Stats(); st.ServersCreated != s.created || st.ServersDeleted != 0 {
			t.Fatalf("stats created %d deleted %d, want %d", st.ServersCreated, st.ServersDeleted, s.created)
		}
	}
	servers := e.sim.Servers()
	for k := range 7 { // the k-th created server is at position 6-k
		s := servers[6-k]
		created := start.Add(time.Duration(k+1) * 500 * time.Millisecond).Format("2006-01-02T15:04:05Z")
		want := fmt.Sprintf("cph-server-%06d", 10+k)
		if s.ServerName != want || s.Status != 5 || s.KeypairName != "kp-old" || s.CreateTime != created || len(s.ServerID) != 32 {
			t.Errorf("created server %d: %+v, want name %s created %s", k, s, want, created)
		}
		var shown cph.Server
		e.get(t, base+"/servers/"+s.ServerID).decode(t, &shown)
		if shown.ServerID != s.ServerID {
			t.Errorf("ShowServer of a created server: %+v", shown)
		}
	}
	// A created server can be rotated like any other.
	e.submit(t, "kp-new", servers[0].ServerID)
	if kp, _ := e.sim.Keypair(servers[0].ServerID); kp != "kp-new" {
		t.Errorf("created server on %s after its job", kp)
	}
}

// A deleted server is gone from every API call but keeps its state for
// inspection.
func TestChurnDeletes(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 20, DeleteRate: 1})
	before := e.ids(t, 20)
	e.submit(t, "kp-new", before...) // JobLatency 0: done by the next look
	e.clock.Add(5 * time.Second)

	deleted := e.sim.DeletedServers()
	if len(deleted) != 5 {
		t.Fatalf("%d deleted, want 5", len(deleted))
	}
	ids, count := e.listAll(t)
	if count != 15 || len(ids) != 15 {
		t.Fatalf("count %d, %d listed", count, len(ids))
	}
	var live []string
	for _, id := range before {
		if !slices.Contains(deleted, id) {
			live = append(live, id)
		}
	}
	if !slices.Equal(ids, live) {
		t.Errorf("the live servers moved: %v, want %v", ids, live)
	}
	for _, id := range deleted {
		if !e.sim.Deleted(id) {
			t.Errorf("Deleted(%s) false", id)
		}
		wantError(t, e.get(t, base+"/servers/"+id), http.StatusBadRequest, "CPS.0016")
		var page cph.ListServersResponse
		e.get(t, base+"/servers?server_id="+id).decode(t, &page)
		if page.Count != 0 || len(page.Servers) != 0 {
			t.Errorf("ListServers?server_id of a deleted server: %+v", page)
		}
		got := e.submit(t, "kp-newer", id)
		if len(got.Jobs) != 1 || got.Jobs[0].JobID != "" || got.Jobs[0].ErrorCode != "CPS.0016" || got.Jobs[0].ErrorMsg != "server_id is invalid." {
			t.Errorf("UpdateKeypair of a deleted server: %+v", got.Jobs)
		}
		if kp, ok := e.sim.Keypair(id); !ok || kp != "kp-new" {
			t.Errorf("Keypair of a deleted server: %q %v, want its last, kp-new", kp, ok)
		}
	}
	if e.sim.Deleted(live[0]) || e.sim.Deleted("nope") {
		t.Error("Deleted true for a live or unknown server")
	}
	if st := e.sim.Stats(); st.ServersDeleted != 5 || st.ServersCreated != 0 || st.ServersRejected != 5 {
		t.Errorf("stats %+v", st)
	}
	if n := len(e.sim.Servers()); n != 15 {
		t.Errorf("Servers() has %d", n)
	}
}

// A job still running when its server is deleted fails at its end time with
// JobCodeServerDeleted; one that ended by then (or ends at that instant)
// keeps its outcome.
func TestChurnJobOfDeletedServer(t *testing.T) {
	tests := []struct {
		name    string
		latency time.Duration // the server is deleted 1s after the submit
		status  cph.JobStatus
		code    string
		keypair string
	}{
		{"running when deleted", 10 * time.Second, cph.JobFailed, cphsim.JobCodeServerDeleted, "kp-old"},
		{"ended before", 500 * time.Millisecond, cph.JobSucceeded, "", "kp-new"},
		{"ends at the instant", time.Second, cph.JobSucceeded, "", "kp-new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 1, JobLatency: tt.latency})
			id := e.ids(t, 1)[0]
			begin := e.clock.Now()
			resp := e.submit(t, "kp-new", id)
			if err := e.sim.SetChurn(0, 1); err != nil {
				t.Fatal(err)
			}
			e.clock.Add(time.Second)
			if !e.sim.Deleted(id) {
				t.Fatal("not deleted after a second")
			}
			e.clock.Add(20 * time.Second)
			jobs := e.listJobs(t, "request_id="+resp.RequestID)
			end := begin.Add(tt.latency).Format("2006-01-02T15:04:05Z")
			if len(jobs) != 1 || jobs[0].Status != tt.status || jobs[0].ErrorCode != tt.code || jobs[0].EndTime != end {
				t.Fatalf("job %+v, want status %d code %q ended %s", jobs, tt.status, tt.code, end)
			}
			if tt.code != "" && jobs[0].ErrorMsg != "server has been deleted" {
				t.Errorf("error_msg %q", jobs[0].ErrorMsg)
			}
			if j := e.showJob(t, jobs[0].JobID); j.Status != int(tt.status) || j.ErrorCode != nil && *j.ErrorCode != tt.code {
				t.Errorf("ShowJob %+v", j)
			}
			if kp, _ := e.sim.Keypair(id); kp != tt.keypair {
				t.Errorf("last keypair %s, want %s", kp, tt.keypair)
			}
		})
	}
}

// SetChurn changes the rates at run time, counting from then.
func TestSetChurn(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 100, CreateRate: 1})
	steps := []struct {
		set                      bool
		create, delete           float64
		advance                  time.Duration
		wantCreated, wantDeleted int
	}{
		{advance: 2500 * time.Millisecond, wantCreated: 2},
		// The half second left over under the old rate is not carried.
		{set: true, create: 4, delete: 0.5, advance: time.Second, wantCreated: 6},
		{advance: time.Second, wantCreated: 10, wantDeleted: 1},
		{set: true, advance: time.Hour, wantCreated: 10, wantDeleted: 1},
		{set: true, delete: 3, advance: 1500 * time.Millisecond, wantCreated: 10, wantDeleted: 5},
	}
	for i, s := range steps {
		if s.set {
			if err := e.sim.SetChurn(s.create, s.delete); err != nil {
				t.Fatal(err)
			}
		}
		e.clock.Add(s.advance)
		st := e.sim.Stats()
		if st.ServersCreated != s.wantCreated || st.ServersDeleted != s.wantDeleted {
			t.Fatalf("step %d: created %d deleted %d, want %d and %d", i, st.ServersCreated, st.ServersDeleted, s.wantCreated, s.wantDeleted)
		}
		if _, count := e.listAll(t); count != 100+s.wantCreated-s.wantDeleted {
			t.Fatalf("step %d: count %d", i, count)
		}
	}
	for _, bad := range [][2]float64{{-1, 0}, {0, math.NaN()}, {math.Inf(1), 0}} {
		if err := e.sim.SetChurn(bad[0], bad[1]); err == nil {
			t.Errorf("SetChurn(%v, %v) accepted", bad[0], bad[1])
		}
	}
}

// The same seed gives the same churn, and churn leaves the generated fleet
// as it is without it.
func TestChurnDeterministic(t *testing.T) {
	run := func(seed uint64, create, del float64) []string {
		e := newEnv(t, cphsim.Options{Servers: 50, Seed: seed, CreateRate: create, DeleteRate: del})
		initial := e.ids(t, 50)
		for range 10 {
			e.clock.Add(700 * time.Millisecond)
		}
		ids, _ := e.listAll(t)
		return append(append(initial, "|"), append(ids, e.sim.DeletedServers()...)...)
	}
	a, b := run(7, 3, 2), run(7, 3, 2)
	if !slices.Equal(a, b) {
		t.Error("the same seed gave different churn")
	}
	if c := run(8, 3, 2); slices.Equal(a[51:], c[51:]) {
		t.Error("another seed gave the same churn")
	}
	if still := run(7, 0, 0); !slices.Equal(a[:50], still[:50]) {
		t.Error("churn changed the generated fleet")
	}
}

// Churn works on a loaded fleet too: its list order is kept, and created
// servers come on top.
func TestChurnLoadedFleet(t *testing.T) {
	fleet := []cph.Server{
		{ServerID: "old", CreateTime: "2024-01-01T00:00:00Z"},
		{ServerID: "new", CreateTime: "2025-01-01T00:00:00Z"},
		{ServerID: "mid", CreateTime: "2024-06-01T00:00:00Z"},
	}
	e := newEnv(t, cphsim.Options{Fleet: fleet, CreateRate: 1})
	e.clock.Add(time.Second)
	ids, _ := e.listAll(t)
	if len(ids) != 4 || !slices.Equal(ids[1:], []string{"new", "mid", "old"}) {
		t.Fatalf("list %v", ids)
	}
	if s := e.sim.Servers()[0]; s.ServerName != "cph-server-000003" || s.KeypairName != "kp-old" {
		t.Errorf("created server %+v", s)
	}
}

// The test aids: POST /_sim/churn sets the rates, GET /_sim/deleted lists
// the deleted servers, GET /_sim/servers?server_id= flags a deleted one.
func TestChurnEndpoints(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 10})
	post := func(query string) (int, cphsim.Stats) {
		t.Helper()
		resp, err := http.Post(e.srv.URL+"/_sim/churn?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st cphsim.Stats
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, st
	}
	for _, bad := range []string{"create=x", "delete=-1", "create=NaN"} {
		if code, _ := post(bad); code != http.StatusBadRequest {
			t.Errorf("%s: status %d", bad, code)
		}
	}
	if code, _ := post("create=5&delete=1"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	e.clock.Add(2 * time.Second)
	if code, st := post("delete=0"); code != http.StatusOK || st.ServersCreated != 10 || st.ServersDeleted != 2 {
		t.Fatalf("status %d, stats %+v", code, st)
	}
	var deleted struct {
		Count     int      `json:"count"`
		ServerIDs []string `json:"server_ids"`
	}
	resp, err := http.Get(e.srv.URL + "/_sim/deleted")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&deleted); err != nil {
		t.Fatal(err)
	}
	if deleted.Count != 2 || !slices.Equal(deleted.ServerIDs, e.sim.DeletedServers()) {
		t.Fatalf("deleted %+v", deleted)
	}
	var page struct {
		Count   int                  `json:"count"`
		Servers []cphsim.ServerState `json:"servers"`
	}
	resp, err = http.Get(e.srv.URL + "/_sim/servers?server_id=" + deleted.ServerIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	if page.Count != 1 || !page.Servers[0].Deleted {
		t.Errorf("a deleted server by id: %+v", page)
	}
	resp, err = http.Get(e.srv.URL + "/_sim/servers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	if page.Count != 18 || len(page.Servers) != 18 {
		t.Errorf("live servers: count %d, %d listed", page.Count, len(page.Servers))
	}
}

// A million-server fleet takes a thousand creations, then a thousand
// deletions, in place: positions still follow the rule.
func TestChurnMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("a million servers")
	}
	e := newEnv(t, cphsim.Options{Servers: 1_000_000, CreateRate: 1000})
	at := func(pos int) string {
		t.Helper()
		var page cph.ListServersResponse
		e.get(t, fmt.Sprintf("%s/servers?offset=%d&limit=1", base, pos)).decode(t, &page)
		if len(page.Servers) != 1 {
			t.Fatalf("no server at %d (count %d)", pos, page.Count)
		}
		return page.Servers[0].ServerID
	}
	probe := at(500_000)
	e.clock.Add(time.Second)
	if got := at(501_000); got != probe {
		t.Fatalf("the server from 500,000 is not at 501,000 after 1000 creations")
	}
	if err := e.sim.SetChurn(0, 1000); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Second)
	if st := e.sim.Stats(); st.ServersCreated != 1000 || st.ServersDeleted != 1000 {
		t.Fatalf("stats %+v", st)
	}
	var page cph.ListServersResponse
	e.get(t, base+"/servers?limit=1").decode(t, &page)
	if page.Count != 1_000_000 {
		t.Errorf("count %d", page.Count)
	}
}

// BenchmarkChurnMillion measures one churn event (a creation or a
// deletion) on a million-server fleet.
func BenchmarkChurnMillion(b *testing.B) {
	clock := newClock()
	sim := cphsim.New(cphsim.Options{Servers: 1_000_000, CreateRate: 1000, DeleteRate: 1000, Clock: clock.Now})
	for b.Loop() {
		clock.Add(time.Millisecond) // one creation and one deletion
		sim.Stats()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/event")
}

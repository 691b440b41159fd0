package cphsim_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRoutes(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 3})
	id := e.ids(t, 1)[0]
	job := e.submit(t, "kp-new", id).Jobs[0].JobID
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", base + "/servers", 200, ""},
		{"GET", base + "/servers/", 200, ""},
		{"GET", base + "/servers/" + id, 200, ""},
		{"GET", base + "/servers/" + id + "/", 200, ""},
		{"GET", base + "/jobs/" + job, 200, ""},
		{"GET", base + "/jobs?request_id=x", 200, ""},
		{"GET", base + "/jobs/?request_id=x", 200, ""},
		{"PUT", base + "/servers/open-access/", 400, "CPS.0003"}, // routed; the empty body is refused
		{"GET", base + "/phones", 404, "APIGW.0101"},
		{"DELETE", base + "/servers/" + id, 404, "APIGW.0101"},
		{"POST", base + "/servers/open-access", 404, "APIGW.0101"},
		{"GET", "/v2/" + testProject + "/cloud-phone/servers", 404, "APIGW.0101"},
		{"GET", "/", 404, "APIGW.0101"},
		{"GET", "/_sim/nothing", 404, "APIGW.0101"},
		{"GET", "/v1/ffffffffffffffffffffffffffffffff/cloud-phone/servers", 403, "CPS.0001"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			a := e.do(t, tt.method, tt.path, nil)
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if !hex32.MatchString(a.header.Get("X-Request-Id")) {
				t.Errorf("X-Request-Id %q", a.header.Get("X-Request-Id"))
			}
			if tt.status == 200 {
				if a.status != 200 {
					t.Fatalf("status %d, body %s", a.status, a.body)
				}
				return
			}
			wantError(t, a, tt.status, tt.code)
		})
	}
}

// An unknown route is answered before authentication, as the gateway
// matches the API first.
func TestUnknownRouteNeedsNoAuth(t *testing.T) {
	e := newEnv(t, cphsim.Options{})
	resp, err := http.Get(e.srv.URL + base + "/phones")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestProjectHeaderMismatch(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1})
	req := e.request(t, http.MethodGet, base+"/servers", nil)
	req.Header.Set(cph.HeaderProjectID, "ffffffffffffffffffffffffffffffff")
	cph.NewSigner(testAK, testSK).Sign(req, nil, e.clock.Now())
	wantError(t, e.send(t, req), http.StatusForbidden, "CPS.0001")
}

func TestUpdateKeypair(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 3})
	ids := e.ids(t, 2)
	unknown := "ffffffffffffffffffffffffffffffff"
	a := e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, "kp-new", ids[0], unknown, ids[1]))
	var out cph.UpdateKeypairResponse
	a.decode(t, &out)
	if out.RequestID != a.header.Get("X-Request-Id") || !hex32.MatchString(out.RequestID) {
		t.Errorf("request_id %q, X-Request-Id %q", out.RequestID, a.header.Get("X-Request-Id"))
	}
	if len(out.Jobs) != 3 {
		t.Fatalf("jobs %+v", out.Jobs)
	}
	for i, want := range []string{ids[0], unknown, ids[1]} {
		if out.Jobs[i].ServerID != want {
			t.Errorf("jobs[%d].server_id %s, want %s", i, out.Jobs[i].ServerID, want)
		}
	}
	if !hex32.MatchString(out.Jobs[0].JobID) || out.Jobs[0].ErrorCode != "" || !hex32.MatchString(out.Jobs[2].JobID) {
		t.Errorf("created jobs %+v", out.Jobs)
	}
	bad := out.Jobs[1]
	if bad.JobID != "" || bad.ErrorCode != "CPS.0016" || bad.ErrorMsg != "server_id is invalid." {
		t.Errorf("unknown server answered %+v", bad)
	}
	// Rejected entries carry no job_id key at all, created ones no error keys.
	var raw struct {
		Jobs []map[string]any `json:"jobs"`
	}
	a.decode(t, &raw)
	if _, ok := raw.Jobs[1]["job_id"]; ok {
		t.Errorf("rejected entry has job_id: %s", a.body)
	}
	if _, ok := raw.Jobs[0]["error_code"]; ok {
		t.Errorf("created entry has error_code: %s", a.body)
	}
	if n := e.sim.SubmitCount(ids[0]); n != 1 {
		t.Errorf("SubmitCount %d", n)
	}
	if st := e.sim.Stats(); st.JobsCreated != 2 || st.ServersRejected != 1 || st.Writes() != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUpdateKeypairInvalid(t *testing.T) {
	long := strings.Repeat("a", 33)
	tests := []struct {
		name, body string
		code       string
	}{
		{"not JSON", `{"servers":`, "CPS.0003"},
		{"wrong type", `{"servers":"abc"}`, "CPS.0003"},
		{"no servers", `{}`, "CPS.0003"},
		{"empty servers", `{"servers":[]}`, "CPS.0003"},
		{"empty server_id", `{"servers":[{"server_id":"","keypair_name":"k"}]}`, "CPS.0016"},
		{"long server_id", `{"servers":[{"server_id":"` + long + `","keypair_name":"k"}]}`, "CPS.0016"},
		{"empty keypair", `{"servers":[{"server_id":"a","keypair_name":""}]}`, "CPS.0003"},
		{"long keypair", `{"servers":[{"server_id":"a","keypair_name":"` + strings.Repeat("k", 65) + `"}]}`, "CPS.0003"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 1})
			wantError(t, e.do(t, http.MethodPut, base+"/servers/open-access", []byte(tt.body)), http.StatusBadRequest, tt.code)
			if st := e.sim.Stats(); st.JobsCreated != 0 {
				t.Errorf("a refused request created %d jobs", st.JobsCreated)
			}
		})
	}
}

func TestLimitsAtTheBoundary(t *testing.T) {
	e := newEnv(t, cphsim.Options{Fleet: []cph.Server{{ServerID: strings.Repeat("a", 32), Status: 5}}})
	out := e.submit(t, strings.Repeat("k", 64), strings.Repeat("a", 32))
	if out.Jobs[0].JobID == "" {
		t.Fatalf("32-byte id with 64-byte keypair refused: %+v", out)
	}
}

// showJob is ShowJob's answer with pointers, to tell null from "".
type showJob struct {
	RequestID *string `json:"request_id"`
	JobID     *string `json:"job_id"`
	Status    int     `json:"status"`
	BeginTime *string `json:"begin_time"`
	EndTime   *string `json:"end_time"`
	ServerID  *string `json:"server_id"`
	ErrorCode *string `json:"error_code"`
	ErrorMsg  *string `json:"error_msg"`
}

func (e *env) showJob(t *testing.T, id string) showJob {
	t.Helper()
	var j showJob
	e.get(t, base+"/jobs/"+id).decode(t, &j)
	return j
}

func (e *env) listJobs(t *testing.T, query string) []cph.Job {
	t.Helper()
	var out cph.ListJobsResponse
	e.get(t, base+"/jobs?"+query).decode(t, &out)
	return out.Jobs
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

func TestJobSucceeds(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, JobLatency: 10 * time.Second})
	id := e.ids(t, 1)[0]
	begin := e.clock.Now()
	resp := e.submit(t, "kp-new", id)
	jobID := resp.Jobs[0].JobID

	j := e.showJob(t, jobID)
	if j.Status != 1 || str(j.BeginTime) != begin.Format("2006-01-02T15:04:05Z") || j.EndTime != nil ||
		j.ErrorCode != nil || j.ErrorMsg != nil || str(j.ServerID) != id || str(j.JobID) != jobID {
		t.Fatalf("running job %+v", j)
	}
	listed := e.listJobs(t, "request_id="+resp.RequestID)
	if len(listed) != 1 || listed[0].Status != cph.JobRunning || listed[0].EndTime != "" || listed[0].JobID != jobID {
		t.Fatalf("running job listed as %+v", listed)
	}
	e.clock.Add(10*time.Second - time.Nanosecond)
	if kp, _ := e.sim.Keypair(id); kp != "kp-old" || e.showJob(t, jobID).Status != 1 {
		t.Fatalf("job ended early: keypair %s", kp)
	}
	e.clock.Add(time.Nanosecond)
	j = e.showJob(t, jobID)
	if j.Status != 2 || str(j.EndTime) != begin.Add(10*time.Second).Format("2006-01-02T15:04:05Z") || j.ErrorCode != nil {
		t.Fatalf("finished job %+v", j)
	}
	if kp, _ := e.sim.Keypair(id); kp != "kp-new" {
		t.Fatalf("keypair %s after success", kp)
	}
	var srv cph.Server
	e.get(t, base+"/servers/"+id).decode(t, &srv)
	if srv.KeypairName != "kp-new" || srv.UpdateTime != begin.Add(10*time.Second).Format("2006-01-02T15:04:05Z") {
		t.Fatalf("server after success %+v", srv)
	}
	if st := e.sim.Stats(); st.JobsSucceeded != 1 || st.JobsRunning != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestJobFails(t *testing.T) {
	tests := []struct {
		name          string
		opts          cphsim.Options
		keypair, code string
		status        cph.JobStatus
		wantKeypair   string
	}{
		{"transient", cphsim.Options{JobFailRate: 1}, "kp-new", cphsim.JobCodeTransient, cph.JobFailed, "kp-old"},
		{"abnormal server", cphsim.Options{BadServerRate: 1, BadServerKind: cphsim.BadAbnormal}, "kp-new", cphsim.JobCodeServerAbnormal, cph.JobFailed, "kp-old"},
		{"unknown keypair", cphsim.Options{Keypairs: []string{"kp-new"}}, "kp-typo", cphsim.JobCodeKeypairNotFound, cph.JobFailed, "kp-old"},
		{"known keypair", cphsim.Options{Keypairs: []string{"kp-new"}}, "kp-new", "", cph.JobSucceeded, "kp-new"},
		{"lie on success", cphsim.Options{LieOnSuccess: true}, "kp-new", "", cph.JobSucceeded, "kp-old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Servers, tt.opts.JobLatency = 1, time.Second
			e := newEnv(t, tt.opts)
			id := e.ids(t, 1)[0]
			resp := e.submit(t, tt.keypair, id)
			if e.listJobs(t, "request_id="+resp.RequestID)[0].Status != cph.JobRunning {
				t.Fatal("job not running at first")
			}
			e.clock.Add(time.Second)
			j := e.listJobs(t, "request_id="+resp.RequestID)[0]
			if j.Status != tt.status || j.ErrorCode != tt.code || (tt.code != "") != (j.ErrorMsg != "") {
				t.Fatalf("job %+v, want status %d code %q", j, tt.status, tt.code)
			}
			if kp, _ := e.sim.Keypair(id); kp != tt.wantKeypair {
				t.Errorf("keypair %s, want %s", kp, tt.wantKeypair)
			}
		})
	}
}

func TestBadServers(t *testing.T) {
	tests := []struct {
		kind                cphsim.BadKind
		wantStatus          int
		wantJob, wantReject bool
	}{
		{cphsim.BadAbnormal, cph.ServerStatusAbnormal, true, false},
		{cphsim.BadRejected, cph.ServerStatusNormal, false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.kind), func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 4, BadServerRate: 1, BadServerKind: tt.kind})
			bad := e.sim.BadServers()
			if len(bad) != 4 {
				t.Fatalf("BadServers %+v", bad)
			}
			for _, s := range e.sim.Servers() {
				if s.Status != tt.wantStatus {
					t.Errorf("server %s status %d, want %d", s.ServerID, s.Status, tt.wantStatus)
				}
			}
			resp := e.submit(t, "kp-new", bad[0].ServerID)
			if got := resp.Jobs[0]; (got.JobID != "") != tt.wantJob || (got.ErrorCode == "CPS.0016") != tt.wantReject {
				t.Errorf("answer %+v", got)
			}
			if bad[0].InJob != tt.wantJob {
				t.Errorf("BadServer %+v", bad[0])
			}
		})
	}
	// Mixed, the default, has both kinds.
	e := newEnv(t, cphsim.Options{Servers: 50, BadServerRate: 0.5, Seed: 3})
	kinds := map[string]int{}
	for _, b := range e.sim.BadServers() {
		kinds[b.ErrorCode]++
	}
	if kinds["CPS.0016"] == 0 || kinds[cphsim.JobCodeServerAbnormal] == 0 {
		t.Errorf("mixed bad servers %v", kinds)
	}
}

// Two jobs on one server end in due order: the server ends on the later
// job's keypair.
func TestLaterJobWins(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, JobLatency: 5 * time.Second})
	id := e.ids(t, 1)[0]
	e.submit(t, "kp-a", id)
	e.clock.Add(time.Second)
	e.submit(t, "kp-b", id)
	e.clock.Add(time.Minute)
	if kp, _ := e.sim.Keypair(id); kp != "kp-b" {
		t.Errorf("keypair %s, want kp-b", kp)
	}
	if n := e.sim.SubmitCount(id); n != 2 {
		t.Errorf("SubmitCount %d", n)
	}
}

func TestJobJitter(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 200, JobLatency: 10 * time.Second, JobJitter: 5 * time.Second, Seed: 9})
	ids := e.ids(t, 101)
	e.submit(t, "kp-new", ids[:100]...)
	e.submit(t, "kp-new", ids[100])
	steps := []struct {
		after    time.Duration
		min, max int // jobs succeeded by then
	}{
		{5*time.Second - 1, 0, 0},
		{10 * time.Second, 1, 100},
		{15 * time.Second, 101, 101},
	}
	start := e.clock.Now()
	for _, s := range steps {
		e.clock.Set(start.Add(s.after))
		if n := e.sim.Stats().JobsSucceeded; n < s.min || n > s.max {
			t.Errorf("after %s: %d succeeded, want %d–%d", s.after, n, s.min, s.max)
		}
	}
}

func TestShowJobNotFound(t *testing.T) {
	e := newEnv(t, cphsim.Options{})
	got := wantError(t, e.get(t, base+"/jobs/ffffffffffffffffffffffffffffffff"), http.StatusNotFound, "CPS.0011")
	if got.ErrorMsg != "Job not found." {
		t.Errorf("error_msg %q", got.ErrorMsg)
	}
}

// ShowJob shows unset strings as null, ListJobs as "", as the docs do.
func TestNullVersusEmpty(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, JobLatency: time.Second})
	resp := e.submit(t, "kp-new", e.ids(t, 1)[0])
	show := string(e.get(t, base+"/jobs/"+resp.Jobs[0].JobID).body)
	for _, k := range []string{`"end_time":null`, `"error_code":null`, `"error_msg":null`, `"phone_id":null`, `"execute_msg":null`} {
		mustContain(t, show, k)
	}
	list := string(e.get(t, base+"/jobs?request_id="+resp.RequestID).body)
	for _, k := range []string{`"end_time":""`, `"error_code":""`, `"error_msg":""`, `"phone_id":""`} {
		mustContain(t, list, k)
	}
	if strings.Contains(list, `"count"`) {
		t.Errorf("ListJobs has a count: %s", list)
	}
}

func TestListJobs(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 130})
	all := e.ids(t, 130)
	r1 := e.submit(t, "kp-new", all[:5]...)
	r2 := e.submit(t, "kp-new", all[5:]...)
	jobIDs := func(jobs []cph.Job) []string {
		var out []string
		for _, j := range jobs {
			out = append(out, j.ServerID)
		}
		return out
	}
	tests := []struct {
		query string
		want  []string // server ids in order
	}{
		{"request_id=" + r1.RequestID, all[:5]},
		{"request_id=" + r1.RequestID + "&limit=2", all[:2]},
		{"request_id=" + r1.RequestID + "&limit=2&offset=2", all[2:4]},
		{"request_id=" + r1.RequestID + "&limit=2&offset=4", all[4:5]},
		{"request_id=" + r1.RequestID + "&offset=5", nil},
		{"request_id=" + r2.RequestID, all[5:105]}, // default limit 100
		{"request_id=" + r2.RequestID + "&offset=100", all[105:]},
		{"request_ids=" + r2.RequestID + "," + r1.RequestID + "&offset=120&limit=10", append(slices.Clone(all[125:]), all[:5]...)},
		{"request_ids=" + r1.RequestID + "&request_id=" + r2.RequestID, all[:5]}, // request_ids wins
		{"request_ids=" + r1.RequestID + "%2C" + r1.RequestID, all[:5]},          // repeated id counted once
		{"request_id=ffffffffffffffffffffffffffffffff", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if got := jobIDs(e.listJobs(t, tt.query)); !slices.Equal(got, tt.want) {
				t.Errorf("got %d jobs %v, want %d %v", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}

func TestListJobsInvalid(t *testing.T) {
	e := newEnv(t, cphsim.Options{})
	var ids []string
	for i := range 21 {
		ids = append(ids, fmt.Sprintf("r%d", i))
	}
	twentyOne := strings.Join(ids, ",")
	tests := []struct {
		query, code string
	}{
		{"", "CPS.0003"},
		{"request_ids=", "CPS.0003"},
		{"request_ids=" + twentyOne, "CPS.0003"},
		{"request_id=a&limit=0", "CPS.0002"},
		{"request_id=a&limit=101", "CPS.0002"},
		{"request_id=a&limit=x", "CPS.0002"},
		{"request_id=a&offset=-1", "CPS.0002"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			wantError(t, e.get(t, base+"/jobs?"+tt.query), http.StatusBadRequest, tt.code)
		})
	}
	if got := e.listJobs(t, "request_ids="+strings.Join(ids[:20], ",")); len(got) != 0 {
		t.Errorf("20 unknown ids gave %d jobs", len(got))
	}
}

func TestListServers(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 150})
	all := e.sim.Servers()
	for i := 1; i < len(all); i++ {
		if all[i-1].CreateTime < all[i].CreateTime {
			t.Fatalf("servers not by create_time desc at %d: %s < %s", i, all[i-1].CreateTime, all[i].CreateTime)
		}
	}
	names := func(ss []cph.Server) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.ServerName)
		}
		return out
	}
	allNames := names(all)
	tests := []struct {
		query string
		count int
		want  []string
	}{
		{"", 150, allNames[:100]},
		{"offset=100", 150, allNames[100:]},
		{"offset=10&limit=5", 150, allNames[10:15]},
		{"offset=150", 150, nil},
		{"server_name=SERVER-00001", 10, allNames[10:20]}, // fuzzy and case-insensitive
		{"server_name=server-00001&limit=3&offset=8", 10, allNames[18:20]},
		{"server_id=" + all[7].ServerID, 1, allNames[7:8]},
		{"server_id=" + all[7].ServerID + "&status=2", 0, nil},
		{"status=5&limit=1", 150, allNames[:1]},
		{"status=8", 0, nil},
		// Server i was created genNewest-i seconds (2025-06-01T00:00:00Z = 1748736000).
		{fmt.Sprintf("create_since=%d&create_until=%d", 1748736000-12, 1748736000-10), 3, allNames[10:13]},
		{fmt.Sprintf("create_since=%d", 1748736000-1), 2, allNames[:2]},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var out cph.ListServersResponse
			e.get(t, base+"/servers?"+tt.query).decode(t, &out)
			if out.Count != tt.count || !slices.Equal(names(out.Servers), tt.want) {
				t.Errorf("count %d servers %v, want %d %v", out.Count, names(out.Servers), tt.count, tt.want)
			}
			if out.RequestID == "" {
				t.Error("no request_id")
			}
		})
	}
	for _, q := range []string{"limit=0", "limit=101", "offset=-1", "offset=x"} {
		wantError(t, e.get(t, base+"/servers?"+q), http.StatusBadRequest, "CPS.0002")
	}
	wantError(t, e.get(t, base+"/servers?status=normal"), http.StatusBadRequest, "CPS.0010")
	wantError(t, e.get(t, base+"/servers?create_since=yesterday"), http.StatusBadRequest, "CPS.0003")
}

func TestEmptyListsAreArrays(t *testing.T) {
	e := newEnv(t, cphsim.Options{})
	mustContain(t, string(e.get(t, base+"/servers").body), `"servers":[]`)
	mustContain(t, string(e.get(t, base+"/jobs?request_id=a").body), `"jobs":[]`)
}

func TestShowServer(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 2})
	want := e.sim.Servers()[1]
	a := e.get(t, base+"/servers/"+want.ServerID)
	var got struct {
		cph.Server
		RequestID string `json:"request_id"`
	}
	a.decode(t, &got)
	if got.Server != want || got.RequestID != a.header.Get("X-Request-Id") {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if want.KeypairName != "kp-old" || want.Status != 5 || !hex32.MatchString(want.ServerID) {
		t.Errorf("generated server %+v", want)
	}
	wantError(t, e.get(t, base+"/servers/nope"), http.StatusBadRequest, "CPS.0016")
}

func TestLoadedFleet(t *testing.T) {
	fleet := []cph.Server{
		{ServerID: "old", ServerName: "a", KeypairName: "k1", Status: 5, CreateTime: "2024-01-01T00:00:00Z"},
		{ServerID: "new", ServerName: "b", KeypairName: "k2", Status: 10, CreateTime: "2025-01-01T00:00:00Z"},
		{ServerID: "mid", ServerName: "c", KeypairName: "k1", Status: 5, CreateTime: "2024-06-01T00:00:00Z"},
	}
	e := newEnv(t, cphsim.Options{Fleet: fleet})
	var out cph.ListServersResponse
	e.get(t, base+"/servers").decode(t, &out)
	var order []string
	for _, s := range out.Servers {
		order = append(order, s.ServerID)
	}
	if !slices.Equal(order, []string{"new", "mid", "old"}) || out.Servers[0] != fleet[1] {
		t.Errorf("order %v, first %+v", order, out.Servers[0])
	}
	// A server not in status 5 gets a job that fails.
	resp := e.submit(t, "k3", "new")
	if j := e.listJobs(t, "request_id="+resp.RequestID)[0]; j.Status != cph.JobFailed || j.ErrorCode != cphsim.JobCodeServerAbnormal {
		t.Errorf("job on a shut-down server %+v", j)
	}
}

func TestDeterministicFleet(t *testing.T) {
	ids := func(seed uint64) []string {
		var out []string
		s := cphsim.New(cphsim.Options{Servers: 20, Seed: seed, BadServerRate: 0.3})
		for _, srv := range s.Servers() {
			out = append(out, srv.ServerID)
		}
		for _, b := range s.BadServers() {
			out = append(out, "bad:"+b.ServerID)
		}
		return out
	}
	if a, b := ids(7), ids(7); !slices.Equal(a, b) {
		t.Error("same seed, different fleets")
	}
	if a, b := ids(7), ids(8); slices.Equal(a, b) {
		t.Error("different seeds, same fleet")
	}
}

func TestStatsEndpoints(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 3, BadServerRate: 1, BadServerKind: cphsim.BadRejected})
	ids := e.ids(t, 3)
	e.get(t, base+"/servers")
	e.get(t, base+"/servers/"+ids[0])
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var st cphsim.Stats
	get("/_sim/stats", &st)
	if st.Calls[cphsim.APIListServers] != 1 || st.Calls[cphsim.APIShowServer] != 1 || st.Writes() != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, ok := st.Calls[cphsim.APIUpdateKeypair]; !ok {
		t.Error("stats omit APIs that were not called")
	}

	e.submit(t, "kp-new", ids[1])
	var page struct {
		Count   int                  `json:"count"`
		Servers []cphsim.ServerState `json:"servers"`
	}
	get("/_sim/servers?server_id="+ids[1], &page)
	want := cphsim.ServerState{ServerID: ids[1], KeypairName: "kp-old", Status: 5, Submits: 1, BadCode: "CPS.0016"}
	if page.Count != 1 || len(page.Servers) != 1 || page.Servers[0] != want {
		t.Errorf("server state %+v, want %+v", page, want)
	}
	get("/_sim/servers?offset=1&limit=1", &page)
	if page.Count != 3 || len(page.Servers) != 1 || page.Servers[0].ServerID != ids[1] {
		t.Errorf("paged server state %+v", page)
	}
	get("/_sim/servers", &page)
	if len(page.Servers) != 3 {
		t.Errorf("all servers: %d", len(page.Servers))
	}

	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/_sim/quota?api=ListJobs&rate=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.get(t, base+"/jobs?request_id=a")
	wantError(t, e.get(t, base+"/jobs?request_id=a"), http.StatusTooManyRequests, "APIGW.0308")
	for _, bad := range []string{"api=Nope&rate=1", "api=ListJobs&rate=x"} {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/_sim/quota?"+bad, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", bad, resp.StatusCode)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		opts cphsim.Options
		want string // "" = valid
	}{
		{"zero", cphsim.Options{}, ""},
		{"rate above 1", cphsim.Options{DropRate: 1.5}, "DropRate"},
		{"negative rate", cphsim.Options{JobFailRate: -0.1}, "JobFailRate"},
		{"negative quota", cphsim.Options{ReadQuota: -1}, "ReadQuota"},
		{"negative servers", cphsim.Options{Servers: -1}, "Servers"},
		{"negative latency", cphsim.Options{JobLatency: -time.Second}, "JobLatency"},
		{"unknown kind", cphsim.Options{BadServerKind: 9}, "BadServerKind"},
		{"churn", cphsim.Options{CreateRate: 5, DeleteRate: 0.5}, ""},
		{"negative create rate", cphsim.Options{CreateRate: -1}, "CreateRate"},
		{"NaN delete rate", cphsim.Options{DeleteRate: math.NaN()}, "DeleteRate"},
		{"infinite create rate", cphsim.Options{CreateRate: math.Inf(1)}, "CreateRate"},
		{"deny", cphsim.Options{Deny: []cphsim.API{cphsim.APIListJobs}}, ""},
		{"deny unknown API", cphsim.Options{Deny: []cphsim.API{"ListPhones"}}, `unknown API "ListPhones"`},
		{"negative answer latency", cphsim.Options{LatencyJitter: -time.Millisecond}, "LatencyJitter"},
		{"duplicate", cphsim.Options{Fleet: []cph.Server{{ServerID: "a"}, {ServerID: "a"}}}, "fleet entry 1: server_id a repeats entry 0"},
		{"empty id", cphsim.Options{Fleet: []cph.Server{{ServerID: ""}}}, "fleet entry 0: empty server_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	// New corrects instead of refusing: the duplicate is dropped.
	s := cphsim.New(cphsim.Options{Fleet: []cph.Server{{ServerID: "a"}, {ServerID: "a"}, {ServerID: ""}}})
	if n := len(s.Servers()); n != 1 {
		t.Errorf("New kept %d servers", n)
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1})
	body := []byte(`{"servers":[` + strings.Repeat(" ", 8<<20) + `]}`)
	wantError(t, e.do(t, http.MethodPut, base+"/servers/open-access", body), http.StatusRequestEntityTooLarge, "APIGW.0201")
}

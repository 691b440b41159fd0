package admin

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// consoleRig is a miniredis with one started rotation of 250 servers
// (three batches) whose first batch has been submitted and partly failed,
// and an admin server with the console on it.
type consoleRig struct {
	r     *testredis.Redis
	store *tasks.Store
	base  string
	id    string
}

func newConsoleRig(t *testing.T, opts Options) *consoleRig {
	t.Helper()
	ctx := context.Background()
	r := testredis.Mini(t)
	rdb := r.Client(t)
	store := tasks.NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	spec := tasks.Spec{ID: "r-console", Keypair: "kp-new", ChunkSize: 100, MaxAttempts: 3}
	for i := range 250 {
		spec.Targets = append(spec.Targets, tasks.Target{ServerID: fmt.Sprintf("srv%03d", i)})
	}
	plan, err := tasks.MakePlan(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Started half a minute ago, so the last minute's rate is measured.
	if _, err := tasks.Start(ctx, store, enq, plan, tasks.TaskOptions{}, time.Now().Add(-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := store.Batch(ctx, spec.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[string]string{}
	for _, e := range b.Servers {
		jobs[e.ServerID] = "job-" + e.ServerID
	}
	if _, err := store.Checkpoint(ctx, spec.ID, 1, len(b.Servers), "req-1", jobs, nil, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	var rs []tasks.Resolution
	for i, e := range b.Servers[:10] {
		res := tasks.Resolution{ServerID: e.ServerID, Outcome: tasks.OutcomeSucceeded, Attempts: 1, JobID: jobs[e.ServerID], Entry: e}
		if i < 4 {
			res.Outcome, res.Code, res.Message = tasks.OutcomeFailed, "CPS.0016", "server_id is invalid."
		}
		rs = append(rs, res)
	}
	if _, err := store.Resolve(ctx, spec.ID, 1, 1, rs, time.Time{}, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	opts.RedisConnOpt, opts.Rotations = r.ConnOpt(), rekeyClient(t, rdb, "")
	_, base := start(t, opts)
	return &consoleRig{r: r, store: store, base: base, id: spec.ID}
}

// rekeyClient is the console's client of rotations in namespace ns.
func rekeyClient(t *testing.T, rdb redis.UniversalClient, ns string) *rekey.Client {
	t.Helper()
	c, err := rekey.NewClient(rdb, rekey.Options{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func getJSON(t *testing.T, url string, v any, hs ...header) int {
	t.Helper()
	resp, body := do(t, "GET", url, hs...)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q, want application/json; body %s", url, ct, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
	return resp.StatusCode
}

// post sends a same-origin POST, as the console's fetch does.
func post(t *testing.T, url, body string, hs ...header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for _, h := range hs {
		req.Header.Set(h.name, h.value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e apiError
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

func TestAPIListsAndShowsRotations(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	var list rotationList
	if code := getJSON(t, rig.base+APIPath, &list); code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	if list.Total != 1 || len(list.Rotations) != 1 || list.Limit != defaultPage {
		t.Fatalf("list = %+v", list)
	}
	r := list.Rotations[0]
	if r.ID != rig.id || r.State != rekey.StateRunning || r.Done != 10 || r.Counts.Total != 250 || r.Rate <= 0 || r.ETASeconds == nil {
		t.Fatalf("listed rotation = %+v (rate %v)", r, r.Rate)
	}

	var d struct {
		ID       string `json:"id"`
		Done     int64  `json:"done"`
		Waves    []waveView
		Budget   budgetView
		Failures []failureView
		History  []historyPoint
	}
	if code := getJSON(t, rig.base+APIPath+"/"+rig.id, &d); code != http.StatusOK {
		t.Fatalf("one rotation: %d", code)
	}
	if len(d.Waves) != 1 || d.Waves[0].State != "current" || d.Waves[0].Open != 240 || d.Waves[0].LastChunk != 3 {
		t.Errorf("waves = %+v", d.Waves)
	}
	if d.Budget.Failed != 4 || d.Budget.MaxErrors != 25 {
		t.Errorf("budget = %+v, want 4 failed of 25 (10%% of 250)", d.Budget)
	}
	if len(d.Failures) != 1 || d.Failures[0].Code != "CPS.0016" || d.Failures[0].Count != 4 || len(d.Failures[0].Examples) != 3 ||
		d.Failures[0].Examples[0].Message != "server_id is invalid." {
		t.Errorf("failures = %+v", d.Failures)
	}
	if n := len(d.History); n < 2 || d.History[0].Ended != 0 || d.History[n-1].Ended != 10 || d.History[n-1].Failed != 4 {
		t.Errorf("history = %+v", d.History)
	}

	var e apiError
	if code := getJSON(t, rig.base+APIPath+"/r-nope", &e); code != http.StatusNotFound || !strings.Contains(e.Error, "not found") {
		t.Errorf("unknown rotation: %d %q", code, e.Error)
	}
	for _, q := range []string{"?limit=0", "?limit=1000", "?offset=-1", "?limit=x"} {
		if code := getJSON(t, rig.base+APIPath+q, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "want an integer") {
			t.Errorf("list%s: %d %q", q, code, e.Error)
		}
	}
}

func TestAPIControls(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	url := rig.base + APIPath + "/" + rig.id
	steps := []struct {
		action, body string
		code         int
		state        tasks.State
		err          string
	}{
		{"pause", "", http.StatusOK, tasks.StatePaused, ""},
		{"resume", `{"max_errors":"40"}`, http.StatusOK, tasks.StateRunning, ""},
		{"resume", `{"max_errors":"lots"}`, http.StatusBadRequest, tasks.StateRunning, "max_errors"},
		{"resume", `{"budget":1}`, http.StatusBadRequest, tasks.StateRunning, "unknown field"},
		{"restart", "", http.StatusNotFound, tasks.StateRunning, "pause, resume or cancel"},
		{"cancel", "", http.StatusOK, tasks.StateCancelled, ""},
		{"cancel", "", http.StatusOK, tasks.StateCancelled, ""}, // idempotent: finishes a cancel cut short
		{"pause", "", http.StatusConflict, tasks.StateCancelled, "cancelled"},
		{"resume", "", http.StatusConflict, tasks.StateCancelled, "cancelled"},
	}
	for _, s := range steps {
		code, msg := post(t, url+"/"+s.action, s.body)
		if code != s.code || !strings.Contains(msg, s.err) {
			t.Fatalf("%s %s: %d %q; want %d and an error naming %q", s.action, s.body, code, msg, s.code, s.err)
		}
		rot, err := rig.store.Rotation(context.Background(), rig.id)
		if err != nil {
			t.Fatal(err)
		}
		if rot.State != s.state {
			t.Fatalf("after %s: state %s, want %s", s.action, rot.State, s.state)
		}
		if s.action == "resume" && s.code == http.StatusOK && rot.MaxErrors != 40 {
			t.Fatalf("resume with max_errors 40: budget %d", rot.MaxErrors)
		}
	}
	if code, msg := post(t, rig.base+APIPath+"/r-nope/pause", ""); code != http.StatusNotFound {
		t.Errorf("pause an unknown rotation: %d %q", code, msg)
	}
	// A cross-site form post is refused, whatever the credentials.
	req, _ := http.NewRequest("POST", url+"/pause", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}
}

func TestAPIReadOnlyAndAuth(t *testing.T) {
	rig := newConsoleRig(t, Options{Token: testToken, ReadOnly: true})
	auth := basic("ops", testToken)
	for _, path := range []string{ConsolePath + "/", ConsolePath + "/" + rig.id, APIPath, APIPath + "/" + rig.id, APIPath + "/" + rig.id + "/report"} {
		if resp, _ := do(t, "GET", rig.base+path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, resp.StatusCode)
		}
		if resp, _ := do(t, "GET", rig.base+path, auth); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200", path, resp.StatusCode)
		}
	}
	if code, msg := post(t, rig.base+APIPath+"/"+rig.id+"/pause", "", auth); code != http.StatusMethodNotAllowed || !strings.Contains(msg, "read-only") {
		t.Errorf("pause in read-only mode: %d %q", code, msg)
	}
	if rot, _ := rig.store.Rotation(context.Background(), rig.id); rot.State != tasks.StateRunning {
		t.Errorf("state after a refused pause: %s", rot.State)
	}
	_, page := do(t, "GET", rig.base+ConsolePath+"/"+rig.id, auth)
	if !strings.Contains(page, `data-readonly="true"`) || !strings.Contains(page, `data-rotation="`+rig.id+`"`) {
		t.Errorf("the page does not tell its script it is read-only:\n%s", page)
	}
}

func TestAPIReport(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	url := rig.base + APIPath + "/" + rig.id + "/report"
	resp, body := do(t, "GET", url+"?format=csv")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), rig.id+"-report.csv") {
		t.Fatalf("CSV report: %d %v", resp.StatusCode, resp.Header)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(rows) != 251 || strings.Join(rows[0], ",") != strings.Join(tasks.ReportColumns, ",") {
		t.Fatalf("CSV report: %d rows, %v", len(rows), err)
	}
	var jrows []tasks.ReportRow
	if code := getJSON(t, url, &jrows); code != http.StatusOK || len(jrows) != 250 {
		t.Fatalf("JSON report: %d, %d rows", code, len(jrows))
	}
	var e apiError
	if code := getJSON(t, url+"?format=xml", &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "csv or json") {
		t.Errorf("format=xml: %d %q", code, e.Error)
	}
	if code := getJSON(t, rig.base+APIPath+"/r-nope/report", &e); code != http.StatusNotFound {
		t.Errorf("report of an unknown rotation: %d %q", code, e.Error)
	}
}

func TestConsoleLinksBothWays(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	resp, _ := do(t, "GET", rig.base+"/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != ConsolePath+"/" {
		t.Errorf("GET /: %d to %q, want the console", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page := do(t, "GET", rig.base+ConsolePath+"/")
	if !strings.Contains(page, `href="`+UIPath+`/"`) {
		t.Errorf("the console does not link to the asynq UI:\n%s", page)
	}
	for _, path := range []string{UIPath + "/", UIPath + "/queues/rekey-submit"} {
		resp, page := do(t, "GET", rig.base+path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, `href="`+ConsolePath+`/"`) || !strings.Contains(page, `<div id="root">`) {
			t.Errorf("GET %s: %d, no link to the console:\n%.300s", path, resp.StatusCode, page)
		}
	}
	// The asynq UI's API and assets pass through untouched.
	resp, body := do(t, "GET", rig.base+UIPath+"/api/queues")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, ConsolePath) {
		t.Errorf("asynq UI API: %d %.200s", resp.StatusCode, body)
	}
	for _, asset := range []string{"console.js", "console.css"} {
		if resp, _ := do(t, "GET", rig.base+ConsolePath+"/assets/"+asset); resp.StatusCode != http.StatusOK {
			t.Errorf("asset %s: %d", asset, resp.StatusCode)
		}
	}
	if resp, _ := do(t, "GET", rig.base+ConsolePath+"/assets/index.html"); resp.StatusCode == http.StatusOK {
		t.Errorf("the page template is served as an asset: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", rig.base+ConsolePath+"/bad:id"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a page for an invalid id: %d", resp.StatusCode)
	}
}

func TestAPIPagesThroughManyRotations(t *testing.T) {
	ctx := context.Background()
	r := testredis.Mini(t)
	rdb := r.Client(t)
	store := tasks.NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	const n = 120
	for i := range n {
		spec := tasks.Spec{ID: fmt.Sprintf("r-%03d", i), Keypair: "kp", ChunkSize: 100, MaxAttempts: 3,
			Targets: []tasks.Target{{ServerID: fmt.Sprintf("srv%03d", i)}}}
		plan, err := tasks.MakePlan(ctx, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tasks.Start(ctx, store, enq, plan, tasks.TaskOptions{}, time.Unix(int64(1_800_000_000+i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	_, base := start(t, Options{RedisConnOpt: r.ConnOpt(), Rotations: rekeyClient(t, rdb, "")})
	var seen []string
	for offset := 0; offset < n; offset += defaultPage {
		var list rotationList
		if code := getJSON(t, fmt.Sprintf("%s%s?offset=%d", base, APIPath, offset), &list); code != http.StatusOK {
			t.Fatalf("offset %d: %d", offset, code)
		}
		if list.Total != n {
			t.Fatalf("total %d, want %d", list.Total, n)
		}
		for _, r := range list.Rotations {
			seen = append(seen, r.ID)
		}
	}
	if len(seen) != n || seen[0] != "r-119" || seen[n-1] != "r-000" {
		t.Fatalf("paged through %d rotations, first %s, last %s; want %d newest first", len(seen), seen[0], seen[len(seen)-1], n)
	}
}

// TestAPIRefusesBadIDsAndNonJSONWrites: a rotation id that is not one is
// refused before any read, and a write must be JSON (a cross-site form
// cannot send that content type without a preflight).
func TestAPIRefusesBadIDsAndNonJSONWrites(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	for _, path := range []string{APIPath + "/%7Bx%7D", APIPath + "/a%20b/report", APIPath + "/-leading"} {
		resp, err := http.Get(rig.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", rig.base+APIPath+"/r-1/pause", strings.NewReader("a=b"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form POST: %d, want 415", resp.StatusCode)
	}
}

// TestRebindingHostCannotSteerRotations: a page whose name was rebound to
// 127.0.0.1 sends its own name as Host. Without a token, neither the
// console, nor its API, nor a JSON cancel sent as the console sends it
// gets through, and the rotation keeps running. With a token the Host is
// not checked: the token is what keeps other pages out.
func TestRebindingHostCannotSteerRotations(t *testing.T) {
	send := func(t *testing.T, method, url, host, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	rig := newConsoleRig(t, Options{})
	reqs := []struct{ method, path string }{
		{"GET", ConsolePath + "/"},
		{"GET", APIPath},
		{"GET", APIPath + "/" + rig.id + "/report?format=csv"},
		{"POST", APIPath + "/" + rig.id + "/cancel"},
	}
	for _, c := range reqs {
		code, body := send(t, c.method, rig.base+c.path, "attacker.example:8080", "")
		if code != http.StatusForbidden || !strings.Contains(body, "not a loopback name") {
			t.Errorf("%s %s with a rebound Host: %d %q, want 403 naming the Host rule", c.method, c.path, code, body)
		}
	}
	rot, err := rig.store.Rotation(context.Background(), rig.id)
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != tasks.StateRunning {
		t.Fatalf("state %s after a rebound cancel, want running", rot.State)
	}
	for _, c := range reqs[:3] {
		if code, _ := send(t, c.method, rig.base+c.path, "localhost:8080", ""); code != http.StatusOK {
			t.Errorf("%s %s with Host localhost: %d, want 200", c.method, c.path, code)
		}
	}

	withToken := newConsoleRig(t, Options{Token: "s3cret"})
	if code, _ := send(t, "GET", withToken.base+APIPath, "worker.internal:8080", "s3cret"); code != http.StatusOK {
		t.Errorf("with a token, any Host and the token: %d, want 200", code)
	}
	if code, _ := send(t, "GET", withToken.base+APIPath, "localhost:8080", ""); code != http.StatusUnauthorized {
		t.Errorf("with a token, no token sent: %d, want 401", code)
	}
}

// TestAPIWriteContentTypes: every content type a page can send without a
// CORS preflight (a form's, text/plain) or none at all is refused with
// 415; JSON, with or without parameters, is taken. A bad rotation id is
// refused on writes too, before anything is read.
func TestAPIWriteContentTypes(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	for _, c := range []struct {
		path, contentType string
		want              int
	}{
		{"/r-console/pause", "", http.StatusUnsupportedMediaType},
		{"/r-console/pause", "text/plain", http.StatusUnsupportedMediaType},
		{"/r-console/pause", "multipart/form-data; boundary=x", http.StatusUnsupportedMediaType},
		{"/r-console/pause", "application/json-patch", http.StatusUnsupportedMediaType},
		{"/bad%0Aid/pause", "application/json", http.StatusBadRequest},
		{"/r-console/pause", "Application/JSON; charset=utf-8", http.StatusOK},
	} {
		code, body := post(t, rig.base+APIPath+c.path, "", header{"Content-Type", c.contentType})
		if code != c.want {
			t.Errorf("POST %s as %q: %d %s, want %d", c.path, c.contentType, code, body, c.want)
		}
	}
}

// TestConsoleCSVDownloadNeutralisesFormulas: the console's CSV download
// is the report an operator opens in a spreadsheet: a message from the
// API that would run as a formula arrives behind a quote.
func TestConsoleCSVDownloadNeutralisesFormulas(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	ctx := context.Background()
	b, err := rig.store.Batch(ctx, rig.id, 1)
	if err != nil {
		t.Fatal(err)
	}
	e := b.Servers[len(b.Servers)-1]
	formula := `=HYPERLINK("http://evil.example/","x")`
	res := tasks.Resolution{ServerID: e.ServerID, Outcome: tasks.OutcomeFailed, Attempts: 1, JobID: "job-" + e.ServerID,
		Code: "CPS.0004", Message: formula, Entry: e}
	if _, err := rig.store.Resolve(ctx, rig.id, 1, 1, []tasks.Resolution{res}, time.Time{}, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, "GET", rig.base+APIPath+"/"+rig.id+"/report?format=csv")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("report: %d %s", resp.StatusCode, body)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, row := range rows[1:] {
		if row[0] == e.ServerID {
			found = true
			if row[8] != "'"+formula {
				t.Errorf("error_msg cell %q, want the formula behind a quote", row[8])
			}
		}
	}
	if !found {
		t.Fatalf("server %s not in the report", e.ServerID)
	}
}

// TestRotationJSONIsTheRecord: the API shows a rotation with the fields and
// values of its record, as it did when it wrote the record itself; only the
// plan's internals (fingerprint, positions) are left out.
func TestRotationJSONIsTheRecord(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	ctx := context.Background()
	rot, err := rig.store.Rotation(ctx, rig.id)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := rekeyClient(t, rig.r.Client(t), "").Rotation(ctx, rig.id)
	if err != nil {
		t.Fatal(err)
	}
	fields := func(v any) map[string]json.RawMessage {
		t.Helper()
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]json.RawMessage{}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	record, view := fields(rot), fields(viewOf(pub))
	for k, v := range record {
		if k == "fingerprint" || k == "positions" {
			continue
		}
		if string(view[k]) != string(v) {
			t.Errorf("field %q: %s in the API, %s in the record", k, view[k], v)
		}
	}
}

// TestAPITimelineNamesTheConsoleUser: a control from the console is
// recorded in the rotation's history under the user name given with the
// token ("console" without one, or with one that is not a valid actor),
// and the rotation's page has the history, oldest first.
func TestAPITimelineNamesTheConsoleUser(t *testing.T) {
	rig := newConsoleRig(t, Options{Token: testToken})
	url := rig.base + APIPath + "/" + rig.id
	steps := []struct {
		action string
		auth   header
	}{
		{"pause", basic("alice", testToken)},
		{"resume", header{"Authorization", "Bearer " + testToken}},
		{"pause", basic("bob\x1b[2J", testToken)},
		{"cancel", basic("carol", testToken)},
	}
	for _, s := range steps {
		if code, msg := post(t, url+"/"+s.action, "", s.auth); code != http.StatusOK {
			t.Fatalf("%s: %d %q", s.action, code, msg)
		}
	}
	var d struct {
		Timeline []rekey.HistoryEntry `json:"timeline"`
	}
	if code := getJSON(t, url, &d, basic("ops", testToken)); code != http.StatusOK {
		t.Fatalf("GET %s: %d", url, code)
	}
	var got []string
	for _, e := range d.Timeline {
		got = append(got, string(e.Kind)+" by "+e.Actor)
	}
	want := []string{"created by ", "wave_started by cph-rekey", "paused by alice (console)", "resumed by console",
		"paused by console", "cancelled by carol (console)"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("timeline %q\nwant     %q", got, want)
	}
}

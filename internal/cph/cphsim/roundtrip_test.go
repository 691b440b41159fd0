package cphsim_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// client returns a cph.Client pointed at the env's simulator, signing
// with creds (the test AK/SK when zero) at the simulator's time.
func (e *env) client(t *testing.T, creds cph.Credentials) *cph.Client {
	t.Helper()
	if creds == (cph.Credentials{}) {
		creds = cph.Credentials{AccessKey: testAK, SecretKey: testSK}
	}
	c, err := cph.NewClient(cph.Config{Endpoint: e.srv.URL, ProjectID: testProject, Credentials: creds,
		HTTPClient: e.srv.Client(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cphError unwraps a *cph.Error and checks its kind and code.
func cphError(t *testing.T, err error, kind cph.Kind, code string) *cph.Error {
	t.Helper()
	var ce *cph.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *cph.Error", err, err)
	}
	if ce.Kind != kind || ce.Code != code {
		t.Fatalf("error %v: kind %s code %q, want %s %q", err, ce.Kind, ce.Code, kind, code)
	}
	return ce
}

// A whole rotation of a small fleet through the real client: discovery with
// paging, one submit per 100 servers, polling with paging, verification.
func TestRoundTripRotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cphsim.Options{Servers: 250, JobLatency: 10 * time.Second, JobJitter: 5 * time.Second, Seed: 5})
	c := e.client(t, cph.Credentials{})

	var ids []string
	pages := 0
	if err := c.ListServers(ctx, cph.ServerFilter{}, func(page []cph.Server) error {
		pages++
		for _, s := range page {
			ids = append(ids, s.ServerID) // each once: the overlap of pages is not handed over
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pages != 3 || len(ids) != 250 {
		t.Fatalf("%d pages, %d servers; want 3 and 250", pages, len(ids))
	}

	var requests []string
	for chunk := range slices.Chunk(ids, 150) { // 150 jobs: ListJobs needs two pages
		batch := make([]cph.ServerKeypair, len(chunk))
		for i, id := range chunk {
			batch[i] = cph.ServerKeypair{ServerID: id, KeypairName: "kp-new"}
		}
		resp, err := c.UpdateKeypair(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Jobs) != len(chunk) || slices.ContainsFunc(resp.Jobs, cph.ServerJob.Failed) {
			t.Fatalf("answer %+v", resp)
		}
		requests = append(requests, resp.RequestID)
	}

	jobs, err := c.ListJobs(ctx, requests...)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 250 || slices.ContainsFunc(jobs, func(j cph.Job) bool { return j.Status != cph.JobRunning }) {
		t.Fatalf("%d jobs right after submitting, want 250 running", len(jobs))
	}
	e.clock.Add(15 * time.Second)
	jobs, err = c.ListJobs(ctx, requests[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 150 || slices.ContainsFunc(jobs, func(j cph.Job) bool { return j.Status != cph.JobSucceeded }) {
		t.Fatalf("%d jobs of the first request, want 150 succeeded", len(jobs))
	}

	job, err := c.ShowJob(ctx, jobs[0].JobID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != cph.JobSucceeded || job.JobID != jobs[0].JobID || job.ServerID != ids[0] || job.EndTime == "" || job.ErrorCode != "" {
		t.Errorf("ShowJob %+v", job)
	}
	srv, err := c.ShowServer(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if srv.KeypairName != "kp-new" {
		t.Errorf("ShowServer keypair %s", srv.KeypairName)
	}
	if st := e.sim.Stats(); st.Calls[cphsim.APIUpdateKeypair] != 2 || st.Calls[cphsim.APIListJobs] != 5 || st.JobsSucceeded != 250 {
		t.Errorf("stats %+v", st)
	}
}

func TestRoundTripFilteredListing(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 30, BadServerRate: 0.3, BadServerKind: cphsim.BadAbnormal, Seed: 2})
	c := e.client(t, cph.Credentials{})
	abnormal := cph.ServerStatusAbnormal
	var got []string
	err := c.ListServers(context.Background(), cph.ServerFilter{Status: &abnormal, PageSize: 2}, func(page []cph.Server) error {
		for _, s := range page {
			got = append(got, s.ServerID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, b := range e.sim.BadServers() {
		want = append(want, b.ServerID)
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("abnormal servers %v, want %v", got, want)
	}
	got = nil
	if err := c.ListServers(context.Background(), cph.ServerFilter{ServerName: "server-00002"}, func(page []cph.Server) error {
		for _, s := range page {
			got = append(got, s.ServerName)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || !strings.HasPrefix(got[0], "cph-server-00002") {
		t.Errorf("fuzzy name match %v", got)
	}
}

func TestRoundTripPerServerErrorsAndJobCodes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cphsim.Options{Servers: 4, Keypairs: []string{"kp-new"}, BadServerRate: 0.5, Seed: 11})
	c := e.client(t, cph.Credentials{})
	bad := e.sim.BadServers()
	var rejected, abnormal, good string
	for _, b := range bad {
		if b.InJob {
			abnormal = b.ServerID
		} else {
			rejected = b.ServerID
		}
	}
	for _, s := range e.sim.Servers() {
		if !slices.ContainsFunc(bad, func(b cphsim.BadServer) bool { return b.ServerID == s.ServerID }) {
			good = s.ServerID
		}
	}
	if rejected == "" || abnormal == "" || good == "" {
		t.Fatalf("seed gives bad servers %+v; want one of each kind and a good one", bad)
	}
	resp, err := c.UpdateKeypair(ctx, []cph.ServerKeypair{
		{ServerID: good, KeypairName: "kp-new"},
		{ServerID: rejected, KeypairName: "kp-new"},
		{ServerID: abnormal, KeypairName: "kp-new"},
		{ServerID: "ffffffffffffffffffffffffffffffff", KeypairName: "kp-new"},
		{ServerID: good, KeypairName: "kp-missing"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantFailed := []bool{false, true, false, true, false}
	for i, j := range resp.Jobs {
		if j.Failed() != wantFailed[i] {
			t.Errorf("jobs[%d] %+v: Failed() %v", i, j, j.Failed())
		}
		if j.Failed() && (j.ErrorCode != cph.CodeInvalidServer || cph.ClassifyCode(j.ErrorCode) != cph.KindPermanent) {
			t.Errorf("jobs[%d] %+v: want a permanent %s", i, j, cph.CodeInvalidServer)
		}
	}
	jobs, err := c.ListJobs(ctx, resp.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	for _, j := range jobs {
		codes[j.ServerID] += j.ErrorCode + ";"
	}
	if codes[good] != ";"+cph.CodeKeypairNotFound+";" || codes[abnormal] != cph.CodeServerAbnormal+";" {
		t.Errorf("job codes %v", codes)
	}
	for _, code := range []string{cphsim.JobCodeServerAbnormal, cphsim.JobCodeKeypairNotFound} {
		if k := cph.ClassifyCode(code); k != cph.KindPermanent {
			t.Errorf("client classifies %s as %s, the simulator means permanent", code, k)
		}
	}
	if k := cph.ClassifyCode(cphsim.JobCodeTransient); k != cph.KindTransient {
		t.Errorf("client classifies %s as %s, the simulator means transient", cphsim.JobCodeTransient, k)
	}
}

func TestRoundTripErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		opts cphsim.Options
		call func(*cph.Client) error
		kind cph.Kind
		code string
	}{
		{"job not found", cphsim.Options{}, func(c *cph.Client) error {
			_, err := c.ShowJob(ctx, "ffffffffffffffffffffffffffffffff")
			return err
		}, cph.KindPermanent, cph.CodeJobNotFound},
		{"server not found", cphsim.Options{}, func(c *cph.Client) error {
			_, err := c.ShowServer(ctx, "ffffffffffffffffffffffffffffffff")
			return err
		}, cph.KindPermanent, cph.CodeInvalidServer},
		{"keypair too long", cphsim.Options{Servers: 1}, func(c *cph.Client) error {
			_, err := c.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: "a", KeypairName: strings.Repeat("k", 65)}})
			return err
		}, cph.KindPermanent, "CPS.0003"},
		{"throttled", cphsim.Options{ListJobsQuota: 1, QuotaBurst: 1, RetryAfter: true}, func(c *cph.Client) error {
			if _, err := c.ListJobs(ctx, "a"); err != nil {
				return err
			}
			_, err := c.ListJobs(ctx, "a")
			return err
		}, cph.KindThrottled, cph.CodeThrottled},
		{"legacy throttled", cphsim.Options{ReadQuota: 1, LegacyThrottleCode: true}, func(c *cph.Client) error {
			if _, err := c.ShowJob(ctx, "a"); !errors.As(err, new(*cph.Error)) {
				return err
			}
			_, err := c.ShowJob(ctx, "a")
			return err
		}, cph.KindThrottled, cph.CodeThrottledLegacy},
		{"5xx", cphsim.Options{Error5xxRate: 1}, func(c *cph.Client) error {
			_, err := c.ShowServer(ctx, "a")
			return err
		}, cph.KindTransient, ""}, // code depends on which 5xx
		{"dropped", cphsim.Options{DropRate: 1, Servers: 1}, func(c *cph.Client) error {
			_, err := c.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: "a", KeypairName: "k"}})
			return err
		}, cph.KindTransient, ""},
		{"wrong project", cphsim.Options{ProjectID: "ffffffffffffffffffffffffffffffff"}, func(c *cph.Client) error {
			_, err := c.ShowJob(ctx, "a")
			return err
		}, cph.KindPermanent, cph.CodeNoPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts)
			err := tt.call(e.client(t, cph.Credentials{}))
			var ce *cph.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *cph.Error", err, err)
			}
			if ce.Kind != tt.kind || tt.code != "" && ce.Code != tt.code {
				t.Fatalf("error %v: kind %s code %q, want %s %q", err, ce.Kind, ce.Code, tt.kind, tt.code)
			}
			if tt.name == "throttled" && ce.RetryAfter != time.Second {
				t.Errorf("RetryAfter %s, want 1s", ce.RetryAfter)
			}
			if tt.name == "dropped" && ce.StatusCode != 0 {
				t.Errorf("StatusCode %d for a dropped connection", ce.StatusCode)
			}
		})
	}
}

func TestRoundTripAuthentication(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		opts  cphsim.Options
		creds cph.Credentials
		code  string // "" = accepted
	}{
		{"AK/SK", cphsim.Options{}, cph.Credentials{}, ""},
		{"wrong SK", cphsim.Options{}, cph.Credentials{AccessKey: testAK, SecretKey: "nope"}, cph.CodeAuthFailed},
		{"IAM token", cphsim.Options{AuthToken: "iam-token"}, cph.Credentials{AuthToken: "iam-token"}, ""},
		{"wrong IAM token", cphsim.Options{AuthToken: "iam-token"}, cph.Credentials{AuthToken: "other"}, cph.CodeAuthFailed},
		{"temporary AK/SK", cphsim.Options{SecurityToken: "sts"},
			cph.Credentials{AccessKey: testAK, SecretKey: testSK, SecurityToken: "sts"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Servers = 1
			e := newEnv(t, tt.opts)
			err := e.client(t, tt.creds).ListServers(ctx, cph.ServerFilter{}, func([]cph.Server) error { return nil })
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			cphError(t, err, cph.KindPermanent, tt.code)
		})
	}
}

// A dry run (discovery and verification only) makes no write call; the
// simulator's counters can prove it.
func TestRoundTripReadsOnly(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 5})
	c := e.client(t, cph.Credentials{})
	if err := c.ListServers(context.Background(), cph.ServerFilter{}, func(page []cph.Server) error {
		for _, s := range page {
			if _, err := c.ShowServer(context.Background(), s.ServerID); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st := e.sim.Stats()
	if st.Writes() != 0 || st.Calls[cphsim.APIShowServer] != 5 {
		t.Errorf("stats %+v", st)
	}
}

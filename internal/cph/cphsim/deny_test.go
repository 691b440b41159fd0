package cphsim_test

import (
	"net/http"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// A call the IAM policy does not allow is answered 403 CPS.0001, counted
// as a call and as forbidden; the other APIs still answer.
func TestDeny(t *testing.T) {
	tests := []struct {
		name   string
		deny   []cphsim.API
		call   cphsim.API
		status int
	}{
		{"denied", []cphsim.API{cphsim.APIListJobs}, cphsim.APIListJobs, http.StatusForbidden},
		{"another API denied", []cphsim.API{cphsim.APIListJobs}, cphsim.APIShowServer, http.StatusOK},
		{"write denied", []cphsim.API{cphsim.APIShowServer, cphsim.APIUpdateKeypair}, cphsim.APIUpdateKeypair, http.StatusForbidden},
		{"none denied", nil, cphsim.APIUpdateKeypair, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 1, Deny: tt.deny})
			a := e.callAPI(t, tt.call)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tt.status, a.body)
			}
			forbidden := 0
			if tt.status == http.StatusForbidden {
				forbidden = 1
				if got := wantError(t, a, http.StatusForbidden, "CPS.0001"); got.ErrorMsg != "No permission to request resources." {
					t.Errorf("error_msg %q", got.ErrorMsg)
				}
			}
			st := e.sim.Stats()
			if st.Forbidden != forbidden || st.Calls[tt.call] != 1 {
				t.Errorf("forbidden %d calls %v", st.Forbidden, st.Calls)
			}
			if tt.call == cphsim.APIUpdateKeypair && tt.status == http.StatusForbidden && st.JobsCreated != 0 {
				t.Errorf("a denied UpdateKeypair created %d jobs", st.JobsCreated)
			}
		})
	}
}

// callAPI makes one valid call to api against the first server.
func (e *env) callAPI(t *testing.T, api cphsim.API) answer {
	t.Helper()
	id := e.ids(t, 1)[0]
	switch api {
	case cphsim.APIUpdateKeypair:
		return e.do(t, http.MethodPut, base+"/servers/open-access", keypairBody(t, "kp-new", id))
	case cphsim.APIShowJob:
		return e.get(t, base+"/jobs/x")
	case cphsim.APIListJobs:
		return e.get(t, base+"/jobs?request_id=x")
	case cphsim.APIListServers:
		return e.get(t, base+"/servers")
	}
	return e.get(t, base+"/servers/"+id)
}

// SetDeny and POST /_sim/deny take the action away and give it back at run
// time; authentication still comes first.
func TestSetDeny(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1})
	post := func(query string) int {
		t.Helper()
		resp, err := http.Post(e.srv.URL+"/_sim/deny?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	steps := []struct {
		set  func() error
		want int // ShowServer's status afterwards
	}{
		{func() error { return e.sim.SetDeny(cphsim.APIShowServer, true) }, http.StatusForbidden},
		{func() error { return e.sim.SetDeny(cphsim.APIShowServer, false) }, http.StatusOK},
		{func() error { return statusErr(post("api=ShowServer&denied=true")) }, http.StatusForbidden},
		{func() error { return statusErr(post("api=ShowServer&denied=false")) }, http.StatusOK},
	}
	for i, s := range steps {
		if err := s.set(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if a := e.callAPI(t, cphsim.APIShowServer); a.status != s.want {
			t.Fatalf("step %d: status %d, want %d", i, a.status, s.want)
		}
	}
	if err := e.sim.SetDeny("ListPhones", true); err == nil {
		t.Error("SetDeny of an unknown API accepted")
	}
	for _, bad := range []string{"api=Nope&denied=true", "api=ListJobs&denied=maybe", "api=ListJobs"} {
		if code := post(bad); code != http.StatusBadRequest {
			t.Errorf("%s: status %d", bad, code)
		}
	}

	if err := e.sim.SetDeny(cphsim.APIListServers, true); err != nil {
		t.Fatal(err)
	}
	req := e.request(t, http.MethodGet, base+"/servers", nil)
	cph.NewSigner(testAK, "wrong").Sign(req, nil, e.clock.Now())
	wantError(t, e.send(t, req), http.StatusUnauthorized, "APIGW.0301")
}

type statusError int

func (s statusError) Error() string { return http.StatusText(int(s)) }

func statusErr(code int) error {
	if code == http.StatusOK {
		return nil
	}
	return statusError(code)
}

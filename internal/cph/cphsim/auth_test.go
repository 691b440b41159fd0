package cphsim_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

func TestAuthentication(t *testing.T) {
	body := []byte(`{"servers":[]}` + "\n")
	tests := []struct {
		name string
		// before runs before signing, after between signing and sending.
		before, after func(req *http.Request)
		sk            string
		skew          time.Duration
		status        int
		code          string
	}{
		{name: "signed", status: http.StatusOK},
		{name: "host signed", before: func(r *http.Request) { r.Header.Set("Host", r.URL.Host) }, status: http.StatusOK},
		{name: "unsigned payload", before: func(r *http.Request) { r.Header.Set(cph.HeaderContentSha256, cph.UnsignedPayload) },
			after: func(r *http.Request) { setBody(r, []byte(`{"tampered":true}`)) }, status: http.StatusOK},
		{name: "14 minutes skew", skew: -14 * time.Minute, status: http.StatusOK},
		{name: "wrong SK", sk: "other-secret", status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "unknown AK", after: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), testAK, "OTHERAK", 1))
		}, status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "stale date", skew: -16 * time.Minute, status: http.StatusUnauthorized, code: "APIGW.0303"},
		{name: "future date", skew: 16 * time.Minute, status: http.StatusUnauthorized, code: "APIGW.0303"},
		{name: "date missing", after: func(r *http.Request) { r.Header.Del(cph.HeaderSdkDate) }, status: http.StatusUnauthorized, code: "APIGW.0303"},
		{name: "date malformed", after: func(r *http.Request) { r.Header.Set(cph.HeaderSdkDate, "2026-03-01T12:00:00Z") },
			status: http.StatusUnauthorized, code: "APIGW.0303"},
		{name: "tampered body", after: func(r *http.Request) { setBody(r, []byte(`{"servers":[{}]}`+"\n")) },
			status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "signed header changed", before: func(r *http.Request) { r.Header.Set("X-Trace", "a") },
			after: func(r *http.Request) { r.Header.Set("X-Trace", "b") }, status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "signed host changed", before: func(r *http.Request) { r.Header.Set("Host", r.URL.Host) },
			after: func(r *http.Request) { r.Host = "cph.cn-east-3.myhuaweicloud.com" }, status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "query changed", after: func(r *http.Request) { r.URL.RawQuery = "limit=1" }, status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "no authorization", after: func(r *http.Request) { r.Header.Del("Authorization") }, status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "malformed authorization", after: func(r *http.Request) { r.Header.Set("Authorization", "Basic abc") },
			status: http.StatusUnauthorized, code: "APIGW.0301"},
		{name: "token not configured", after: func(r *http.Request) {
			r.Header.Del("Authorization")
			r.Header.Set(cph.HeaderAuthToken, "some-token")
		}, status: http.StatusUnauthorized, code: "APIGW.0301"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, cphsim.Options{Servers: 1})
			// A ListServers GET with a query, plus a body, so every part of the
			// canonical request is covered; GET bodies are signed like any other.
			req := e.request(t, http.MethodGet, base+"/servers?limit=2&offset=0", body)
			if tt.before != nil {
				tt.before(req)
			}
			sk := testSK
			if tt.sk != "" {
				sk = tt.sk
			}
			cph.NewSigner(testAK, sk).Sign(req, body, e.clock.Now().Add(tt.skew))
			if tt.after != nil {
				tt.after(req)
			}
			a := e.send(t, req)
			if tt.status == http.StatusOK {
				if a.status != http.StatusOK {
					t.Fatalf("status %d, body %s", a.status, a.body)
				}
				return
			}
			wantError(t, a, tt.status, tt.code)
			if st := e.sim.Stats(); st.Unauthorized != 1 || st.Calls[cphsim.APIListServers] != 1 {
				t.Errorf("stats unauthorized %d calls %d, want 1 and 1", st.Unauthorized, st.Calls[cphsim.APIListServers])
			}
		})
	}
}

func setBody(r *http.Request, b []byte) {
	r.Body = readCloser(b)
	r.ContentLength = int64(len(b))
}

func TestSignatureMessages(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1})
	req := e.request(t, http.MethodGet, base+"/servers", nil)
	cph.NewSigner(testAK, "wrong").Sign(req, nil, e.clock.Now())
	got := wantError(t, e.send(t, req), http.StatusUnauthorized, "APIGW.0301")
	if got.ErrorMsg != "Incorrect IAM authentication information: verify aksk signature fail" {
		t.Errorf("error_msg %q", got.ErrorMsg)
	}
}

// A signature that does not cover X-Sdk-Date could be replayed under any
// date, so the gateway refuses it even when it is otherwise correct.
func TestDateMustBeSigned(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1})
	req := e.request(t, http.MethodGet, base+"/servers", nil)
	date := e.clock.Now().Format(cph.DateFormat)
	req.Header.Set(cph.HeaderSdkDate, date)
	signed := []string{"x-project-id"}
	sig := cph.Signature([]byte(testSK), cph.StringToSign(date, cph.CanonicalRequest(req, signed, cph.PayloadHash(req.Header, nil))))
	req.Header.Set("Authorization", fmt.Sprintf("%s Access=%s, SignedHeaders=x-project-id, Signature=%s", cph.Algorithm, testAK, sig))
	wantError(t, e.send(t, req), http.StatusUnauthorized, "APIGW.0301")
}

func TestTokenAndSecurityToken(t *testing.T) {
	tests := []struct {
		name   string
		opts   cphsim.Options
		prep   func(*env, *http.Request)
		status int
	}{
		{"token", cphsim.Options{AuthToken: "tok"}, func(_ *env, r *http.Request) { r.Header.Set(cph.HeaderAuthToken, "tok") }, http.StatusOK},
		{"wrong token", cphsim.Options{AuthToken: "tok"}, func(_ *env, r *http.Request) { r.Header.Set(cph.HeaderAuthToken, "tok2") }, http.StatusUnauthorized},
		{"security token", cphsim.Options{SecurityToken: "st"}, func(e *env, r *http.Request) {
			r.Header.Set(cph.HeaderSecurityToken, "st")
			cph.NewSigner(testAK, testSK).Sign(r, nil, e.clock.Now())
		}, http.StatusOK},
		{"security token missing", cphsim.Options{SecurityToken: "st"}, func(e *env, r *http.Request) {
			cph.NewSigner(testAK, testSK).Sign(r, nil, e.clock.Now())
		}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Servers = 1
			e := newEnv(t, tt.opts)
			req := e.request(t, http.MethodGet, base+"/servers", nil)
			tt.prep(e, req)
			a := e.send(t, req)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tt.status, a.body)
			}
		})
	}
}

package iam_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/iam"
)

// authProjects is an answer of GET /v3/auth/projects in IAM's documented
// shape (iam_06_0003): links, and projects with their links.
const authProjects = `{
  "links": {"self": "https://iam.myhuaweicloud.com/v3/auth/projects", "previous": null, "next": null},
  "projects": [
    {"is_domain": false, "description": "", "links": {"self": "https://iam.myhuaweicloud.com/v3/projects/0123456789abcdef0123456789abcdef"},
     "enabled": true, "id": "0123456789abcdef0123456789abcdef", "parent_id": "d78cbac186b744899480f25bd022f468",
     "domain_id": "d78cbac186b744899480f25bd022f468", "name": "cn-north-4"},
    {"is_domain": false, "description": "web fleet", "links": {"self": "https://iam.myhuaweicloud.com/v3/projects/11111111111111111111111111111111"},
     "enabled": true, "id": "11111111111111111111111111111111", "parent_id": "0123456789abcdef0123456789abcdef",
     "domain_id": "d78cbac186b744899480f25bd022f468", "name": "cn-north-4_web"},
    {"is_domain": false, "description": null, "links": {"self": "https://iam.myhuaweicloud.com/v3/projects/22222222222222222222222222222222"},
     "enabled": true, "id": "22222222222222222222222222222222", "parent_id": "d78cbac186b744899480f25bd022f468",
     "domain_id": "d78cbac186b744899480f25bd022f468", "name": "MOS"}
  ]
}`

func TestAuthProjects(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		want    []string // id/name/parent/enabled
		wantErr string
	}{
		{name: "documented shape", status: 200, body: authProjects, want: []string{
			"0123456789abcdef0123456789abcdef/cn-north-4/d78cbac186b744899480f25bd022f468/true",
			"11111111111111111111111111111111/cn-north-4_web/0123456789abcdef0123456789abcdef/true",
			"22222222222222222222222222222222/MOS/d78cbac186b744899480f25bd022f468/true",
		}},
		{name: "no projects", status: 200, body: `{"projects": [], "links": {}}`},
		{name: "disabled", status: 200, body: `{"projects": [{"id": "a", "name": "cn-east-3", "enabled": false}]}`,
			want: []string{"a/cn-east-3//false"}},
		{name: "project without a name", status: 200, body: `{"projects": [{"id": "a"}]}`, wantErr: "no id or no name"},
		{name: "not an object", status: 200, body: `[]`, wantErr: "not a JSON object"},
		{name: "unauthorized", status: 401, body: `{"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"}`,
			wantErr: "APIGW.0301"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.Path != "/v3/auth/projects" {
					t.Errorf("%s %s, want GET /v3/auth/projects", r.Method, r.URL.Path)
				}
				if r.Header.Get(cph.HeaderProjectID) != "" {
					t.Errorf("X-Project-Id %q sent to a global service", r.Header.Get(cph.HeaderProjectID))
				}
				if !strings.HasPrefix(r.Header.Get("Authorization"), "SDK-HMAC-SHA256 Access=AK,") {
					t.Errorf("Authorization %q: want an AK/SK signature", r.Header.Get("Authorization"))
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, err := iam.NewClient(iam.Config{Endpoint: srv.URL, Credentials: cph.Credentials{AccessKey: "AK", SecretKey: "SK"}})
			if err != nil {
				t.Fatal(err)
			}
			ps, err := c.AuthProjects(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("AuthProjects = %v, %v; want an error with %q", ps, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.ID+"/"+p.Name+"/"+p.ParentID+"/"+map[bool]string{true: "true", false: "false"}[p.Enabled])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("projects %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRegionOf(t *testing.T) {
	known := func(r string) bool { return r == "cn-north-4" || r == "cn-east-3" }
	tests := []struct {
		name, region string
		ok           bool
	}{
		{"cn-north-4", "cn-north-4", true},
		{"cn-north-4_web", "cn-north-4", true},
		{"cn-east-3_a_b", "cn-east-3", true},
		{"cn-north-4_", "", false},
		{"MOS", "", false},
		{"eu-west-101", "", false},
		{"eu-west-101_x", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		region, ok := iam.RegionOf(tt.name, known)
		if region != tt.region || ok != tt.ok {
			t.Errorf("RegionOf(%q) = %q, %v; want %q, %v", tt.name, region, ok, tt.region, tt.ok)
		}
	}
}

func TestNewClientErrors(t *testing.T) {
	for _, cfg := range []iam.Config{
		{Credentials: cph.Credentials{AccessKey: "AK", SecretKey: "SK"}},
		{Endpoint: "ftp://iam", Credentials: cph.Credentials{AccessKey: "AK", SecretKey: "SK"}},
		{Endpoint: "https://iam.myhuaweicloud.com"},
	} {
		if _, err := iam.NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v): no error", cfg)
		} else if strings.Contains(err.Error(), "SK\"") {
			t.Errorf("error %v shows a secret", err)
		}
	}
	if got := iam.EndpointFrom(func(string) string { return "" }); got != iam.DefaultEndpoint {
		t.Errorf("EndpointFrom without the variable = %q", got)
	}
	if got := iam.EndpointFrom(func(k string) string { return map[string]string{iam.EnvEndpoint: " http://x "}[k] }); got != "http://x" {
		t.Errorf("EndpointFrom = %q, want the variable's", got)
	}
}

package main

import (
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestDiscoverFlags: --regions, --projects and --all-projects choose the
// places --discover reads; bad input is refused whole (exit 2, a message
// naming what and why, nothing written), and a project in no region is
// skipped with a line on stderr.
func TestDiscoverFlags(t *testing.T) {
	const (
		ak, sk                  = "ENQUEUEAK", "enqueue-sk"
		north, web, east, other = "0123456789abcdef0123456789abcdef", "11111111111111111111111111111111",
			"22222222222222222222222222222222", "33333333333333333333333333333333"
	)
	sim := func(project string, n int) *cphsim.Sim {
		return cphsim.New(cphsim.Options{ProjectID: project, AccessKey: ak, SecretKey: sk, Servers: n, Seed: uint64(n)})
	}
	cloud, err := cphsim.NewCloud(
		cphsim.Place{Region: "cn-north-4", Sim: sim(north, 3)},
		cphsim.Place{Region: "cn-north-4", Name: "cn-north-4_web", Sim: sim(web, 4)},
		cphsim.Place{Region: "cn-east-3", Sim: sim(east, 5)},
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cloud)
	defer srv.Close()
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL(), "REKEY_REGION": "cn-north-4", "REKEY_ENDPOINT": srv.URL + ",cn-east-3=" + srv.URL,
		"HUAWEICLOUD_SDK_IAM_ENDPOINT": srv.URL, "HUAWEICLOUD_SDK_AK": ak, "HUAWEICLOUD_SDK_SK": sk, "HUAWEICLOUD_SDK_PROJECT_ID": north}
	start := []string{"start", "--keypair", "kp-new", "--skip-keypair-check", "--dry-run", "--json", "--quiet"}

	bad := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"regions without discover", []string{"--regions", "cn-east-3", "-"}, nil, "use them with --discover"},
		{"all projects without discover", []string{"--all-projects", "-"}, nil, "use them with --discover"},
		{"projects and all projects", []string{"--discover", "--projects", web, "--all-projects"}, nil, "not both"},
		{"projects and all projects, from the environment", []string{"--discover"},
			map[string]string{"REKEY_PROJECTS": web, "REKEY_ALL_PROJECTS": "true"}, "not both"},
		{"unknown region", []string{"--discover", "--all-projects", "--regions", "cn-east-3,cn-nowhere-1"}, nil,
			`unknown region "cn-nowhere-1" (known: af-north-1, ap-southeast-1,`},
		{"project id", []string{"--discover", "--projects", web + ",0123"}, nil, `project id "0123" is not 32 hex digits`},
		{"project not reached", []string{"--discover", "--projects", other}, nil, "is not among the 4 projects the credentials reach"},
		{"project outside the regions", []string{"--discover", "--projects", web, "--regions", "cn-east-3"}, nil, "is in cn-north-4, not in the regions given"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range envs {
				e[k] = v
			}
			for k, v := range tt.env {
				e[k] = v
			}
			code, stdout, stderr := runCmd(t, e, "", append(start, tt.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d saying %q", code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}

	type dry struct {
		Targets int `json:"targets"`
		Parts   []struct {
			Region    string `json:"region"`
			ProjectID string `json:"project_id"`
			Targets   int    `json:"targets"`
		} `json:"parts"`
		Skipped []struct {
			Name string `json:"name"`
		} `json:"skipped_projects"`
	}
	good := []struct {
		name    string
		args    []string
		targets int
		parts   []string // region/project/targets
		skipped bool
	}{
		{"all projects", []string{"--all-projects"}, 12, []string{"//3", "/" + web + "/4", "cn-east-3/" + east + "/5"}, true},
		{"all projects of a region", []string{"--all-projects", "--regions", "cn-east-3"}, 5, nil, true},
		{"projects", []string{"--projects", east + "," + web}, 9, []string{"cn-east-3/" + east + "/5", "/" + web + "/4"}, false},
		{"regions' own projects", []string{"--regions", "cn-north-4,cn-east-3"}, 8, []string{"//3", "cn-east-3/" + east + "/5"}, false},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, envs, "", append(append(start, "--discover"), tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d; stderr: %s", code, stderr)
			}
			var d dry
			if err := json.Unmarshal([]byte(stdout), &d); err != nil {
				t.Fatalf("dry run %q: %v", stdout, err)
			}
			var parts []string
			for _, p := range d.Parts {
				parts = append(parts, p.Region+"/"+p.ProjectID+"/"+strconv.Itoa(p.Targets))
			}
			if d.Targets != tt.targets || strings.Join(parts, " ") != strings.Join(tt.parts, " ") {
				t.Errorf("dry run of %d targets in parts %q, want %d in %q", d.Targets, parts, tt.targets, tt.parts)
			}
			said := strings.Contains(stderr, "discover: skipped project "+cphsim.GlobalProject+" (")
			if said != tt.skipped || tt.skipped && (len(d.Skipped) != 1 || d.Skipped[0].Name != cphsim.GlobalProject) {
				t.Errorf("skipped %+v, stderr %q: want MOS skipped and said so: %v", d.Skipped, stderr, tt.skipped)
			}
		})
	}
	if keys := r.Mini.Keys(); len(keys) != 0 {
		t.Fatalf("Redis holds %v after dry runs and bad input", keys)
	}
}

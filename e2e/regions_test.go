package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// region is one (region, project) of a multi-region test: a simulator of
// its own, with its own project and quota.
type region struct {
	name, project string
	fleet         *fleet
}

// regionsEnv is the environment of commands over three regions: north is
// the default place, south is reached by --endpoint's REGION=URL and east
// by the SDK's per-region variable.
func regionsEnv(redisURL string, north, east, south *region) []string {
	return append(os.Environ(),
		"REDIS_URL="+redisURL,
		"REKEY_REGION="+north.name,
		"REKEY_ENDPOINT="+north.fleet.url+","+south.name+"="+south.fleet.url,
		"HUAWEICLOUD_SDK_REGION_CPH_"+strings.ToUpper(strings.ReplaceAll(east.name, "-", "_"))+"="+east.fleet.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
}

// startRegion serves a fleet in project for region name.
func startRegion(t *testing.T, name, project string, opts cphsim.Options) *region {
	t.Helper()
	opts.ProjectID, opts.AccessKey, opts.SecretKey = project, testAK, testSK
	sim := cphsim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &region{name: name, project: project, fleet: &fleet{sim: sim, url: srv.URL}}
}

// TestRotationAcrossRegions: one rotation over three (region, project)
// pairs, each served by a simulator with its own quota, run by two real
// worker processes. The default pair is reached through --region and a
// plain endpoint, the others through the SDK's per-region variable and
// --endpoint REGION=URL; each region's submit rate is set under its own
// quota, so no region sees a 429; the report is checked against each
// simulator, pair by pair.
func TestRotationAcrossRegions(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		north := startRegion(t, "cn-north-4", testProject, cphsim.Options{Servers: 300, Seed: 21,
			JobLatency: 300 * time.Millisecond, UpdateKeypairQuota: 4, JobFailRate: 0.05})
		east := startRegion(t, "cn-east-3", "11111111111111111111111111111111", cphsim.Options{Servers: 200, Seed: 22,
			JobLatency: 300 * time.Millisecond, UpdateKeypairQuota: 6, BadServerRate: 0.02})
		south := startRegion(t, "ap-southeast-1", "22222222222222222222222222222222", cphsim.Options{Servers: 250, Seed: 23,
			JobLatency: 300 * time.Millisecond, UpdateKeypairQuota: 10})
		regions := []*region{north, east, south}

		env := regionsEnv(r.URL(), north, east, south)
		// The default pair's rows name neither region nor project.
		var b strings.Builder
		b.WriteString("server_id,region,project_id\n")
		for _, rg := range regions {
			for _, s := range rg.fleet.sim.Servers() {
				if rg == north {
					fmt.Fprintf(&b, "%s,,\n", s.ServerID)
				} else {
					fmt.Fprintf(&b, "%s,%s,%s\n", s.ServerID, rg.name, rg.project)
				}
			}
		}
		list := filepath.Join(t.TempDir(), "fleet.csv")
		if err := os.WriteFile(list, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		var dry struct {
			Targets int `json:"targets"`
			Parts   []struct {
				Region  string `json:"region"`
				Targets int    `json:"targets"`
				Chunks  int    `json:"chunks"`
			} `json:"parts"`
		}
		out := enqueue(t, env, "start", "--dry-run", "--json", "--keypair", newKeypair, "--chunk-size", "10", list)
		if err := json.Unmarshal([]byte(out), &dry); err != nil {
			t.Fatalf("dry run %q: %v", out, err)
		}
		if dry.Targets != 750 || len(dry.Parts) != 3 || dry.Parts[1].Region != east.name || dry.Parts[1].Chunks != 20 {
			t.Fatalf("dry run %s: want 750 targets in three parts, cn-east-3's in 20 chunks", out)
		}
		st := startRotation(t, env, "--max-attempts", "5", "--chunk-size", "10", list)
		if !st.Created || st.Servers != 750 {
			t.Fatalf("start = %+v, want 750 servers", st)
		}
		rates := []string{"--submit-rate", "cn-north-4=3/s:1,cn-east-3=5/s:1,ap-southeast-1=8/s:1,20/s:1"}
		startWorker(t, env, rates...)
		startWorker(t, env, rates...)

		var status struct {
			State string `json:"state"`
			Parts []struct {
				Rotation  string `json:"rotation"`
				Region    string `json:"region"`
				ProjectID string `json:"project_id"`
			} `json:"parts"`
		}
		// Exit 3: cn-east-3's bad servers complete the rotation with errors.
		out, code, stderr := enqueueCode(t, env, "status", "--wait", "--interval", "250ms", "--json", st.Rotation)
		if code != 3 {
			t.Fatalf("status --wait: exit %d (%s), want 3 (completed with errors)", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &status); err != nil {
			t.Fatalf("status --json %q: %v", out, err)
		}
		if len(status.Parts) != 3 {
			t.Fatalf("status has %d parts, want one a (region, project): %s", len(status.Parts), out)
		}
		rows := report(t, env, st.Rotation)
		if len(rows) != 750 {
			t.Fatalf("report has %d rows, want 750", len(rows))
		}
		store := tasks.NewStore(r.Client(t), "")
		for i, rg := range regions {
			part := status.Parts[i]
			wantRegion, wantProject := rg.name, rg.project
			if rg == north {
				wantRegion, wantProject = "", ""
			}
			if part.Region != wantRegion || part.ProjectID != wantProject {
				t.Errorf("part %d is in %q/%q, want %q/%q", i+1, part.Region, part.ProjectID, wantRegion, wantProject)
			}
			rot, err := store.Rotation(context.Background(), part.Rotation)
			if err != nil {
				t.Fatal(err)
			}
			var mine []tasks.ReportRow
			for _, row := range rows {
				if row.Region == wantRegion && row.ProjectID == wantProject {
					mine = append(mine, row)
				}
			}
			if len(mine) != len(rg.fleet.sim.Servers()) {
				t.Errorf("%s: %d report rows, want %d", rg.name, len(mine), len(rg.fleet.sim.Servers()))
			}
			checkReport(t, rg.fleet, mine, rot)
			stats := rg.fleet.sim.Stats()
			if n := stats.Throttled[cphsim.APIUpdateKeypair]; n > 0 {
				t.Errorf("%s: %d UpdateKeypair 429s at a submit rate under its quota: another region's rate was used", rg.name, n)
			}
			if stats.Calls[cphsim.APIUpdateKeypair] == 0 || stats.Calls[cphsim.APIListJobs] == 0 {
				t.Errorf("%s: calls %v: want its own submits and polls", rg.name, stats.Calls)
			}
			t.Logf("%s/%s: %s %+v; %d UpdateKeypair, %d ListJobs, %d list pages", rg.name, rg.project, rot.State, rot.Counts,
				stats.Calls[cphsim.APIUpdateKeypair], stats.Calls[cphsim.APIListJobs], stats.Calls[cphsim.APIListServers])
		}
		if status.State != string(tasks.StateCompletedWithErrors) || len(east.fleet.sim.BadServers()) == 0 {
			t.Errorf("state %s with %d bad servers in cn-east-3: want completed_with_errors", status.State, len(east.fleet.sim.BadServers()))
		}
	})
}

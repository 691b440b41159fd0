package e2e

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// cloudPlaces serves three places behind one endpoint, with IAM's project
// list: cn-north-4's own project (the workers' default), its sub-project
// cn-north-4_web and cn-east-3's own project, each a simulator with its
// own fleet and UpdateKeypair quota. IAM also lists the global MOS.
func cloudPlaces(t *testing.T) (url string, places []*region) {
	t.Helper()
	sim := func(project string, servers int, seed uint64) *cphsim.Sim {
		return cphsim.New(cphsim.Options{ProjectID: project, AccessKey: testAK, SecretKey: testSK, Servers: servers, Seed: seed,
			JobLatency: 300 * time.Millisecond, UpdateKeypairQuota: 8})
	}
	north := sim(testProject, 120, 31)
	web := sim("11111111111111111111111111111111", 80, 32)
	east := sim("22222222222222222222222222222222", 100, 33)
	cloud, err := cphsim.NewCloud(
		cphsim.Place{Region: "cn-north-4", Sim: north},
		cphsim.Place{Region: "cn-north-4", Name: "cn-north-4_web", Sim: web},
		cphsim.Place{Region: "cn-east-3", Sim: east},
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cloud)
	t.Cleanup(srv.Close)
	for _, p := range []struct {
		name, project string
		sim           *cphsim.Sim
	}{{"cn-north-4", testProject, north}, {"cn-north-4", "11111111111111111111111111111111", web}, {"cn-east-3", "22222222222222222222222222222222", east}} {
		places = append(places, &region{name: p.name, project: p.project, fleet: &fleet{sim: p.sim, url: srv.URL}})
	}
	return srv.URL, places
}

// cloudEnv is the environment of commands over the cloud: cn-north-4 is
// the default region, cn-east-3 is reached by --endpoint REGION=URL, IAM
// by the SDK's variable.
func cloudEnv(redisURL, url string) []string {
	return append(os.Environ(),
		"REDIS_URL="+redisURL,
		"REKEY_REGION=cn-north-4",
		"REKEY_ENDPOINT="+url+",cn-east-3="+url,
		"HUAWEICLOUD_SDK_IAM_ENDPOINT="+url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
}

// discovered is a rotation started by discovery, run to its end.
type discovered struct {
	id     string
	rows   []tasks.ReportRow
	parts  []string // each part's "region/project_id", as status shows them
	stderr string   // start's
}

// discoverAndWait starts a rotation by discovery with args and runs a
// worker process to its end, which must be success.
func discoverAndWait(t *testing.T, env []string, args ...string) discovered {
	t.Helper()
	out, code, stderr := enqueueCode(t, env, append([]string{"start", "--json", "--quiet", "--keypair", newKeypair,
		"--chunk-size", "10", "--discover"}, args...)...)
	if code != 0 {
		t.Fatalf("start %v: exit %d: %s", args, code, stderr)
	}
	var st started
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("start output %q: %v", out, err)
	}
	// Each project is granted the region's rate, under its own quota of 8.
	startWorker(t, env, "--submit-rate", "6/s:1")
	out, code, errOut := enqueueCode(t, env, "status", "--wait", "--interval", "250ms", "--json", st.Rotation)
	if code != 0 {
		t.Fatalf("status --wait: exit %d (%s), want 0 (succeeded): %s", code, errOut, tail(out, 2000))
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var status struct {
		Parts []struct {
			Region    string `json:"region"`
			ProjectID string `json:"project_id"`
		} `json:"parts"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &status); err != nil {
		t.Fatalf("status --json %q: %v", out, err)
	}
	d := discovered{id: st.Rotation, rows: report(t, env, st.Rotation), stderr: stderr}
	for _, p := range status.Parts {
		d.parts = append(d.parts, p.Region+"/"+p.ProjectID)
	}
	return d
}

// TestDiscoverAllProjects: --discover --all-projects finds the projects
// IAM lists, skips the one in no region saying so, and one rotation of a
// part a (region, project), run by a real worker process, puts every
// server of every place on the new keypair, each place under its own
// quota.
func TestDiscoverAllProjects(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		url, places := cloudPlaces(t)
		env := cloudEnv(r.URL(), url)
		d := discoverAndWait(t, env, "--all-projects")
		id, rows := d.id, d.rows
		if !strings.Contains(d.stderr, "discover: skipped project "+cphsim.GlobalProject+" (") {
			t.Errorf("stderr %q: want a line naming the skipped %s", d.stderr, cphsim.GlobalProject)
		}
		want := "/ /11111111111111111111111111111111 cn-east-3/22222222222222222222222222222222"
		if got := strings.Join(d.parts, " "); got != want {
			t.Fatalf("parts %q, want %q (the default place's fields empty)", got, want)
		}
		if len(rows) != 300 {
			t.Fatalf("report of %s has %d rows, want 300", id, len(rows))
		}
		store := tasks.NewStore(r.Client(t), "")
		for i, p := range places {
			wantRegion, wantProject := p.name, p.project
			if i == 0 {
				wantRegion, wantProject = "", ""
			} else if p.name == "cn-north-4" {
				wantRegion = ""
			}
			var mine []tasks.ReportRow
			for _, row := range rows {
				if row.Region == wantRegion && row.ProjectID == wantProject {
					mine = append(mine, row)
				}
			}
			rot, err := store.Rotation(context.Background(), tasks.PartID(id, i+1))
			if err != nil {
				t.Fatal(err)
			}
			if len(mine) != len(p.fleet.sim.Servers()) || rot.Counts.Succeeded != int64(len(mine)) {
				t.Errorf("%s/%s: %d report rows, %d succeeded; want all its %d servers", p.name, p.project, len(mine), rot.Counts.Succeeded, len(p.fleet.sim.Servers()))
			}
			checkReport(t, p.fleet, mine, rot)
			if n := p.fleet.sim.Stats().Throttled[cphsim.APIUpdateKeypair]; n > 0 {
				t.Errorf("%s/%s: %d UpdateKeypair 429s at its region's rate under its own quota", p.name, p.project, n)
			}
		}
	})
}

// TestDiscoverRegionsLimit: --regions with --all-projects reads only those
// regions' projects (a region's own and its sub-projects); the other
// region's servers are never submitted.
func TestDiscoverRegionsLimit(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		url, places := cloudPlaces(t)
		env := cloudEnv(r.URL(), url)
		d := discoverAndWait(t, env, "--all-projects", "--regions", "cn-north-4")
		rows := d.rows
		if got, want := strings.Join(d.parts, " "), "/ /11111111111111111111111111111111"; got != want {
			t.Fatalf("parts %q, want cn-north-4's two projects %q", got, want)
		}
		if len(rows) != 200 {
			t.Fatalf("report has %d rows, want cn-north-4's 200", len(rows))
		}
		for _, p := range places[:2] {
			for _, s := range p.fleet.sim.Servers() {
				if kp, _ := p.fleet.sim.Keypair(s.ServerID); kp != newKeypair {
					t.Fatalf("%s/%s: server %s on %q", p.name, p.project, s.ServerID, kp)
				}
			}
		}
		east := places[2].fleet.sim
		if st := east.Stats(); st.Calls[cphsim.APIUpdateKeypair] != 0 || st.Calls[cphsim.APIListServers] != 0 {
			t.Errorf("cn-east-3 outside --regions was called: %v", st.Calls)
		}
	})
}

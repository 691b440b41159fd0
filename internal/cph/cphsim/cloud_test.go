package cphsim_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/iam"
)

// TestCloud: a cloud of three places answers IAM's project list with its
// places, the region's own project it adds and the global MOS, and sends
// each CPH call to the Sim of the project in its path.
func TestCloud(t *testing.T) {
	const web, east = "11111111111111111111111111111111", "22222222222222222222222222222222"
	sim := func(project string, servers int) *cphsim.Sim {
		return cphsim.New(cphsim.Options{ProjectID: project, AccessKey: testAK, SecretKey: testSK, Servers: servers, Seed: uint64(servers)})
	}
	north, webSim, eastSim := sim(testProject, 3), sim(web, 4), sim(east, 5)
	cloud, err := cphsim.NewCloud(
		cphsim.Place{Region: "cn-north-4", Sim: north},
		cphsim.Place{Region: "cn-north-4", Name: "cn-north-4_web", Sim: webSim},
		cphsim.Place{Region: "cn-east-3", Name: "cn-east-3_db", Sim: eastSim},
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cloud)
	defer srv.Close()
	creds := cph.Credentials{AccessKey: testAK, SecretKey: testSK}
	ic, err := iam.NewClient(iam.Config{Endpoint: srv.URL, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := ic.AuthProjects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	places := cloud.Places()
	if len(places) != 4 || places[3].Region != "cn-east-3" || places[3].Name != "" {
		t.Fatalf("places %+v: want the three given and cn-east-3's own project", places)
	}
	eastOwn := places[3].Sim
	var got []string
	for _, p := range ps {
		got = append(got, p.Name)
		if !p.Enabled || p.DomainID == "" || len(p.ID) != 32 {
			t.Errorf("project %+v: want enabled, in a domain, with a 32-hex id", p)
		}
	}
	if strings.Join(got, " ") != "cn-north-4 cn-north-4_web cn-east-3_db cn-east-3 MOS" {
		t.Fatalf("projects %q", got)
	}
	if ps[1].ID != web || ps[1].ParentID != testProject || ps[0].ParentID != ps[0].DomainID {
		t.Errorf("cn-north-4_web = %+v: want its id and the region's project as parent", ps[1])
	}
	if ps[2].ParentID != ps[3].ID {
		t.Errorf("cn-east-3_db's parent %s, want cn-east-3's own project %s", ps[2].ParentID, ps[3].ID)
	}

	for _, tt := range []struct {
		project string
		sim     *cphsim.Sim
		servers int
	}{{testProject, north, 3}, {web, webSim, 4}, {east, eastSim, 5}, {ps[3].ID, eastOwn, 0}} {
		c, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: tt.project, Credentials: creds})
		if err != nil {
			t.Fatal(err)
		}
		page, err := c.ListServersPage(context.Background(), 0, 100)
		if err != nil {
			t.Fatalf("%s: %v", tt.project, err)
		}
		if page.Count != tt.servers || tt.sim.Stats().Calls[cphsim.APIListServers] != 1 {
			t.Errorf("project %s: %d servers, want its own Sim's %d", tt.project, page.Count, tt.servers)
		}
	}
	mos, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: ps[4].ID, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mos.ListServersPage(context.Background(), 0, 100); !strings.Contains(err.Error(), "CPS.0001") {
		t.Errorf("a project the cloud serves no CPH in: %v, want 403 CPS.0001", err)
	}

	bad, err := iam.NewClient(iam.Config{Endpoint: srv.URL, Credentials: cph.Credentials{AccessKey: testAK, SecretKey: "wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.AuthProjects(context.Background()); !strings.Contains(err.Error(), "APIGW.0301") {
		t.Errorf("IAM with a bad signature: %v, want 401 APIGW.0301", err)
	}
}

func TestNewCloudRefuses(t *testing.T) {
	s := cphsim.New(cphsim.Options{ProjectID: testProject})
	for name, places := range map[string][]cphsim.Place{
		"none":          nil,
		"no project":    {{Region: "cn-north-4", Sim: cphsim.New(cphsim.Options{})}},
		"twice":         {{Region: "cn-north-4", Sim: s}, {Region: "cn-east-3", Sim: s}},
		"name off":      {{Region: "cn-north-4", Name: "cn-east-3_x", Sim: s}},
		"no region":     {{Sim: s}},
		"no sim at all": {{Region: "cn-north-4"}},
	} {
		if _, err := cphsim.NewCloud(places...); err == nil {
			t.Errorf("%s: NewCloud accepted %+v", name, places)
		}
	}
}

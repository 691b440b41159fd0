package rekey_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/rekey"
)

const (
	ak, sk  = "DISCOVERAK", "discover-sk"
	projWeb = "11111111111111111111111111111111"
)

// cloud serves cn-north-4's own project (3 servers), its sub-project
// cn-north-4_web (4) and cn-east-3's own project (5) behind one endpoint,
// with IAM's project list; it returns a client whose own place is
// cn-north-4's project, and the cloud.
func cloud(t *testing.T, token string) (*rekey.Client, *cphsim.Cloud) {
	t.Helper()
	sim := func(project string, n int) *cphsim.Sim {
		return cphsim.New(cphsim.Options{ProjectID: project, AccessKey: ak, SecretKey: sk, AuthToken: token, Servers: n, Seed: uint64(n),
			Keypairs: []string{"kp-new"}})
	}
	cl, err := cphsim.NewCloud(
		cphsim.Place{Region: "cn-north-4", Sim: sim(projNorth, 3)},
		cphsim.Place{Region: "cn-north-4", Name: "cn-north-4_web", Sim: sim(projWeb, 4)},
		cphsim.Place{Region: "cn-east-3", Sim: sim(projEast, 5)},
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cl)
	t.Cleanup(srv.Close)
	c := &rekey.CPH{Region: "cn-north-4", Endpoint: srv.URL, Endpoints: map[string]string{"cn-east-3": srv.URL},
		IAMEndpoint: srv.URL, ProjectID: projNorth, AccessKey: ak, SecretKey: sk}
	if token != "" {
		c.AccessKey, c.SecretKey, c.IAMToken = "", "", token
	}
	// Plan sends Redis nothing: a client on an address nobody serves.
	client, err := rekey.NewClient(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), rekey.Options{CPH: c})
	if err != nil {
		t.Fatal(err)
	}
	return client, cl
}

// TestDiscoverAcrossProjects: a discovery names its places by project ids,
// all the projects IAM lists, or regions; each place's list is read, the
// plan has a part a place, and a project in no region is skipped, saying
// so.
func TestDiscoverAcrossProjects(t *testing.T) {
	c, _ := cloud(t, "")
	type part struct {
		region, project string
		targets         int
	}
	tests := []struct {
		name    string
		d       rekey.Discover
		parts   []part // nil: one place
		targets int
		skipped []string
	}{
		{name: "own place", d: rekey.Discover{}, targets: 3},
		{name: "all projects", d: rekey.Discover{AllProjects: true}, targets: 12,
			parts: []part{{"", "", 3}, {"", projWeb, 4}, {"cn-east-3", projEast, 5}}, skipped: []string{cphsim.GlobalProject}},
		{name: "all projects of a region", d: rekey.Discover{AllProjects: true, Regions: []string{"cn-north-4"}}, targets: 7,
			parts: []part{{"", "", 3}, {"", projWeb, 4}}, skipped: []string{cphsim.GlobalProject}},
		{name: "projects", d: rekey.Discover{Projects: []string{projEast, projWeb}}, targets: 9,
			parts: []part{{"cn-east-3", projEast, 5}, {"", projWeb, 4}}},
		{name: "regions' own projects", d: rekey.Discover{Regions: []string{"cn-east-3", "cn-north-4"}}, targets: 8,
			parts: []part{{"cn-east-3", projEast, 5}, {"", "", 3}}},
		{name: "one other project", d: rekey.Discover{Projects: []string{projWeb}}, targets: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			plan, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-new", Discover: &d, SkipKeypairCheck: true})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Targets != tt.targets || len(plan.Parts) != len(tt.parts) {
				t.Fatalf("plan of %d targets in %d parts, want %d in %d", plan.Targets, len(plan.Parts), tt.targets, len(tt.parts))
			}
			for i, want := range tt.parts {
				p := plan.Parts[i]
				if got := (part{p.Region, p.ProjectID, p.Targets}); got != want {
					t.Errorf("part %d = %+v, want %+v", i+1, got, want)
				}
			}
			var skipped []string
			for _, s := range plan.Skipped {
				skipped = append(skipped, s.Name)
				if s.ID == "" || s.Reason == "" {
					t.Errorf("skipped %+v: want its id and why", s)
				}
			}
			if !slices.Equal(skipped, tt.skipped) {
				t.Errorf("skipped %q, want %q", skipped, tt.skipped)
			}
		})
	}
}

// TestDiscoverRefuses: bad input is refused whole, with a message naming
// what and why, before any fleet is read.
func TestDiscoverRefuses(t *testing.T) {
	c, cl := cloud(t, "")
	mos := globalProjectID(t, c)
	before := map[*cphsim.Sim]int{}
	for _, p := range cl.Places() {
		before[p.Sim] = p.Sim.Stats().Calls[cphsim.APIListServers]
	}
	tests := []struct {
		name string
		d    rekey.Discover
		want string
	}{
		{"unknown region", rekey.Discover{AllProjects: true, Regions: []string{"cn-nowhere-1"}}, `unknown region "cn-nowhere-1" (known: af-north-1,`},
		{"region twice", rekey.Discover{Regions: []string{"cn-east-3", "cn-east-3"}}, "region cn-east-3 given twice"},
		{"bad project id", rekey.Discover{Projects: []string{"0123"}}, `project id "0123" is not 32 hex digits`},
		{"both", rekey.Discover{Projects: []string{projWeb}, AllProjects: true}, "name the projects, or take every one, not both"},
		{"not reached", rekey.Discover{Projects: []string{"abababababababababababababababab"}}, "is not among the 4 projects the credentials reach"},
		{"no region", rekey.Discover{Projects: []string{mos}}, "(MOS) has no region"},
		{"outside the regions", rekey.Discover{Projects: []string{projWeb}, Regions: []string{"cn-east-3"}}, "is in cn-north-4, not in the regions given (cn-east-3)"},
		{"no project in a region", rekey.Discover{AllProjects: true, Regions: []string{"cn-east-3", "ap-southeast-1"}}, "region ap-southeast-1: the credentials reach no project there"},
		{"no own project", rekey.Discover{Regions: []string{"ap-southeast-1"}}, "region ap-southeast-1: the credentials reach no project named ap-southeast-1"},
		{"a region without the projects given", rekey.Discover{Projects: []string{projWeb}, Regions: []string{"cn-north-4", "cn-east-3"}}, "region cn-east-3: none of the projects given is there"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d
			_, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-new", Discover: &d, SkipKeypairCheck: true})
			var ie *rekey.InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Plan = %v, want an *InputError saying %q", err, tt.want)
			}
		})
	}
	for _, p := range cl.Places() {
		if n := p.Sim.Stats().Calls[cphsim.APIListServers] - before[p.Sim]; n != 0 {
			t.Errorf("%s/%s: %d list pages read for refused input", p.Region, p.Name, n)
		}
	}
}

// globalProjectID is the id IAM lists the global project under.
func globalProjectID(t *testing.T, c *rekey.Client) string {
	t.Helper()
	d := rekey.Discover{AllProjects: true}
	plan, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-new", Discover: &d, SkipKeypairCheck: true})
	if err != nil || len(plan.Skipped) != 1 {
		t.Fatalf("Plan = %+v, %v", plan, err)
	}
	return plan.Skipped[0].ID
}

// TestDiscoverWithTokenAcrossProjects: an IAM token is scoped to one
// project, so a discovery reaching several is refused before any list is
// read; one reaching only the token's project is fine.
func TestDiscoverWithTokenAcrossProjects(t *testing.T) {
	c, cl := cloud(t, "iam-token")
	d := rekey.Discover{AllProjects: true}
	_, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-new", Discover: &d, SkipKeypairCheck: true})
	if !strings.Contains(fmtErr(err), "scoped to one project") {
		t.Fatalf("Plan across projects with a token: %v", err)
	}
	for _, p := range cl.Places() {
		if n := p.Sim.Stats().Calls[cphsim.APIListServers]; n != 0 {
			t.Errorf("%s/%s: %d list pages read", p.Region, p.Name, n)
		}
	}
	d = rekey.Discover{Projects: []string{projNorth}}
	if plan, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-new", Discover: &d, SkipKeypairCheck: true}); err != nil || plan.Targets != 3 {
		t.Fatalf("Plan of the token's own project = %+v, %v", plan, err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestImportKeypairIntoDiscoveredPlaces: a keypair generated for a
// rotation that discovers its targets is imported into every place the
// discovery reads, so the pre-flight finds it in each.
func TestImportKeypairIntoDiscoveredPlaces(t *testing.T) {
	c, cl := cloud(t, "")
	k, err := rekey.GenerateKeypair("kp-gen")
	if err != nil {
		t.Fatal(err)
	}
	d := &rekey.Discover{AllProjects: true}
	var missing *rekey.MissingKeypairError
	if _, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-gen", Discover: d}); !errors.As(err, &missing) || len(missing.Missing) != 3 {
		t.Fatalf("Plan before the import = %v, want kp-gen missing in the three places", err)
	}
	places, err := c.ImportKeypair(context.Background(), rekey.KeypairImport{Name: "kp-gen", PublicKey: k.PublicKey, Discover: d})
	if err != nil || len(places) != 3 {
		t.Fatalf("ImportKeypair = %q, %v; want the three places", places, err)
	}
	for _, p := range []struct {
		project string
		sim     *cphsim.Sim
	}{{projNorth, cl.Places()[0].Sim}, {projWeb, cl.Places()[1].Sim}, {projEast, cl.Places()[2].Sim}} {
		if kp, ok := p.sim.ProjectKeypair(p.project, "kp-gen"); !ok || kp.PublicKey == "" {
			t.Errorf("project %s holds %+v, %v; want the imported key", p.project, kp, ok)
		}
	}
	if _, err := c.Plan(context.Background(), rekey.Request{Keypair: "kp-gen", Discover: d}); err != nil {
		t.Errorf("Plan with the keypair check after the import: %v", err)
	}
	_, err = c.ImportKeypair(context.Background(), rekey.KeypairImport{Name: "kp-gen", PublicKey: k.PublicKey, Discover: d,
		Targets: []rekey.Target{{ServerID: "a"}}})
	var ie *rekey.InputError
	if !errors.As(err, &ie) {
		t.Errorf("ImportKeypair with Targets and Discover = %v, want an *InputError", err)
	}
}

package kps_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/kps"
)

const (
	project = "0123456789abcdef0123456789abcdef"
	ak, sk  = "TESTAK0123456789", "testsk0123456789abcdef"
	pubA    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr1v9Q0bJ8Yq7n1m6cQm3d5bJvXvZpQ3rW7oA1s2t3u alice"
	pubB    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0b1c2d3e4f5g6h7i8j9k0l1m2n3o4p5q6r7s8t9u0v bob"
)

// newSim starts a simulator holding seeds and a client of it.
func newSim(t *testing.T, opts cphsim.Options) (*cphsim.Sim, *kps.Client) {
	t.Helper()
	opts.ProjectID, opts.AccessKey, opts.SecretKey = project, ak, sk
	sim := cphsim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c, err := kps.NewClient(kps.Config{Endpoint: srv.URL, ProjectID: project,
		Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

func TestShow(t *testing.T) {
	ctx := context.Background()
	_, c := newSim(t, cphsim.Options{Keypairs: []string{"kp-new"}})
	kp, err := c.Show(ctx, "kp-new")
	if err != nil {
		t.Fatal(err)
	}
	if kp.Name != "kp-new" || !strings.HasPrefix(kp.PublicKey, "ssh-ed25519 ") || kp.Fingerprint == "" {
		t.Errorf("Show = %+v", kp)
	}
	_, err = c.Show(ctx, "kp-typo")
	if !kps.IsNotFound(err) {
		t.Fatalf("Show of a missing keypair: %v, want not found", err)
	}
	if !strings.Contains(err.Error(), "ShowKeypair") || !strings.Contains(err.Error(), "404") {
		t.Errorf("error %q names neither the call nor the status", err)
	}
}

func TestBadNames(t *testing.T) {
	_, c := newSim(t, cphsim.Options{})
	for _, name := range []string{"", "a b", "kp/../x", "kp.new", strings.Repeat("k", 65)} {
		_, err := c.Show(context.Background(), name)
		if err == nil || kps.IsNotFound(err) || cph.KindOf(err) != cph.KindPermanent {
			t.Errorf("Show(%q) = %v, want a permanent error before any call", name, err)
		}
	}
	if err := kps.CheckName(strings.Repeat("k", 64)); err != nil {
		t.Errorf("64 characters refused: %v", err)
	}
}

func TestListPages(t *testing.T) {
	seeds := make([]string, 2*kps.ListPageSize+7)
	for i := range seeds {
		seeds[i] = fmt.Sprintf("kp-%04d", i)
	}
	_, c := newSim(t, cphsim.Options{Keypairs: seeds})
	got, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(seeds) {
		t.Fatalf("List gave %d keypairs, want %d", len(got), len(seeds))
	}
	for i, kp := range got {
		if kp.Name != seeds[i] {
			t.Fatalf("keypair %d is %q, want %q", i, kp.Name, seeds[i])
		}
	}
}

// A server that repeats its marker is caught rather than followed for ever.
func TestListRepeatedMarker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"keypairs":[{"keypair":{"name":"a"}}],"page_info":{"next_marker":"a"}}`)
	}))
	t.Cleanup(srv.Close)
	c, err := kps.NewClient(kps.Config{Endpoint: srv.URL, ProjectID: project, Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(context.Background()); err == nil || !strings.Contains(err.Error(), "marker") {
		t.Fatalf("List = %v, want an error about the marker", err)
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	sim, c := newSim(t, cphsim.Options{Keypairs: []string{"kp-old"}})
	kp, err := c.Import(ctx, kps.ImportRequest{Name: "kp-2026", PublicKey: pubA})
	if err != nil {
		t.Fatal(err)
	}
	if kp.Name != "kp-2026" {
		t.Errorf("Import = %+v", kp)
	}
	held, ok := sim.ProjectKeypair(project, "kp-2026")
	if !ok || held.Scope != kps.ScopeDomain || !kps.SamePublicKey(held.PublicKey, pubA) {
		t.Errorf("simulator holds %+v, %v; want pubA in scope domain", held, ok)
	}
	// The same key again, with another comment, is a no-op.
	if _, err := c.Import(ctx, kps.ImportRequest{Name: "kp-2026", PublicKey: strings.TrimSuffix(pubA, "alice") + "laptop"}); err != nil {
		t.Errorf("importing the same key again: %v", err)
	}
	_, err = c.Import(ctx, kps.ImportRequest{Name: "kp-2026", PublicKey: pubB})
	if !kps.IsConflict(err) || !strings.Contains(err.Error(), "kp-2026") {
		t.Errorf("importing another key under the name: %v, want a conflict naming it", err)
	}
	if held, _ := sim.ProjectKeypair(project, "kp-2026"); !kps.SamePublicKey(held.PublicKey, pubA) {
		t.Error("a refused import replaced the key")
	}
}

func TestImportRefusesBadInput(t *testing.T) {
	_, c := newSim(t, cphsim.Options{})
	tests := []struct {
		name string
		req  kps.ImportRequest
		want string
	}{
		{"bad scope", kps.ImportRequest{Name: "kp", PublicKey: pubA, Scope: "world"}, "scope"},
		{"no key", kps.ImportRequest{Name: "kp"}, "OpenSSH"},
		{"private key", kps.ImportRequest{Name: "kp", PublicKey: "-----BEGIN OPENSSH PRIVATE KEY----- b3Blbn"}, "private key"},
		{"bad name", kps.ImportRequest{Name: "kp new", PublicKey: pubA}, "kp new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Import(context.Background(), tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Import = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	sim, c := newSim(t, cphsim.Options{Keypairs: []string{"kp-old", "kp-new"}})
	if err := c.Delete(ctx, "kp-old"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.ProjectKeypair(project, "kp-old"); ok {
		t.Error("kp-old still held after Delete")
	}
	if err := c.Delete(ctx, "kp-old"); !kps.IsNotFound(err) {
		t.Errorf("second Delete = %v, want not found", err)
	}
	if _, err := c.Show(ctx, "kp-new"); err != nil {
		t.Errorf("kp-new: %v", err)
	}
}

// Requests are signed with the CPH signer and land on the KMS paths.
func TestSignedRequests(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth, err := cph.ParseAuthorization(r.Header.Get("Authorization"))
		if err != nil || auth.Access != ak || r.Header.Get("X-Sdk-Date") == "" {
			http.Error(w, `{"error_code":"APIGW.0301","error_msg":"unsigned"}`, http.StatusUnauthorized)
			return
		}
		got = append(got, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keypair": map[string]string{"name": "kp-1"}})
	}))
	t.Cleanup(srv.Close)
	c, err := kps.NewClient(kps.Config{Endpoint: srv.URL, ProjectID: project, Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Show(context.Background(), "kp-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), "kp-1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"GET /v3/" + project + "/keypairs/kp-1", "DELETE /v3/" + project + "/keypairs/kp-1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests %v, want %v", got, want)
	}
}

// The simulator checks signatures: a wrong secret key is refused as denied.
func TestDenied(t *testing.T) {
	sim := cphsim.New(cphsim.Options{ProjectID: project, AccessKey: ak, SecretKey: sk, Deny: []cphsim.API{cphsim.APIShowKeypair}})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		name  string
		creds cph.Credentials
	}{
		{"wrong secret", cph.Credentials{AccessKey: ak, SecretKey: "wrong-secret-key-xx"}},
		{"policy without kps:SSHKeyPair:get", cph.Credentials{AccessKey: ak, SecretKey: sk}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := kps.NewClient(kps.Config{Endpoint: srv.URL, ProjectID: project, Credentials: tt.creds})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Show(context.Background(), "kp-new")
			if !kps.IsDenied(err) || kps.IsNotFound(err) {
				t.Errorf("Show = %v, want denied", err)
			}
		})
	}
}

func TestEndpointFor(t *testing.T) {
	env := map[string]string{"HUAWEICLOUD_SDK_REGION_KPS_CN_NORTH_4": "https://kms.example.test,https://other"}
	getenv := func(k string) string { return env[k] }
	tests := []struct{ region, want string }{
		{"cn-north-4", "https://kms.example.test"},
		{"cn-east-3", "https://kms.cn-east-3.myhuaweicloud.com"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := kps.EndpointFor(tt.region, getenv); got != tt.want {
			t.Errorf("EndpointFor(%q) = %q, want %q", tt.region, got, tt.want)
		}
	}
	if got := kps.EndpointEnv("la-south-2"); got != "HUAWEICLOUD_SDK_REGION_KPS_LA_SOUTH_2" {
		t.Errorf("EndpointEnv = %q", got)
	}
}

func TestNewClientErrors(t *testing.T) {
	_, err := kps.NewClient(kps.Config{ProjectID: project, Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err == nil || !strings.Contains(err.Error(), "Endpoint") {
		t.Errorf("no endpoint: %v", err)
	}
	_, err = kps.NewClient(kps.Config{Endpoint: "https://kms.x", Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err == nil || !strings.Contains(err.Error(), "ProjectID") {
		t.Errorf("no project: %v", err)
	}
}

// UpdateKeypair consults the simulated KPS of the server's project: a
// keypair deleted there fails the job as unknown, even in the open mode
// where every other name exists.
func TestSimUpdateKeypairConsultsKPS(t *testing.T) {
	ctx := context.Background()
	sim, kc := newSim(t, cphsim.Options{Servers: 1})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cc, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: project, Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}})
	if err != nil {
		t.Fatal(err)
	}
	if err := kc.Delete(ctx, "kp-gone"); err != nil {
		t.Fatal(err)
	}
	page, err := cc.ListServersPage(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ keypair, code string }{{"kp-gone", cphsim.JobCodeKeypairNotFound}, {"kp-any", ""}} {
		resp, err := cc.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: page.Servers[0].ServerID, KeypairName: tt.keypair}})
		if err != nil {
			t.Fatal(err)
		}
		jobs, err := cc.ListJobs(ctx, resp.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 1 || jobs[0].ErrorCode != tt.code {
			t.Errorf("%s: jobs %+v, want error code %q", tt.keypair, jobs, tt.code)
		}
	}
}

// The simulated KPS deletes a keypair servers are still on, as far as
// KPS's documents tell (they name no refusal): the servers keep the name.
func TestSimDeletesKeypairInUse(t *testing.T) {
	ctx := context.Background()
	sim, kc := newSim(t, cphsim.Options{Servers: 2, Keypairs: []string{"kp-old"}})
	if err := kc.Delete(ctx, "kp-old"); err != nil {
		t.Fatalf("deleting a keypair two servers are on: %v", err)
	}
	if _, ok := sim.ProjectKeypair(project, "kp-old"); ok {
		t.Error("kp-old still held")
	}
	for _, s := range sim.Servers() {
		if kp, _ := sim.Keypair(s.ServerID); kp != "kp-old" {
			t.Errorf("server %s is on %q after the delete, want kp-old still named", s.ServerID, kp)
		}
	}
}

func TestEndpointsFor(t *testing.T) {
	env := map[string]string{"HUAWEICLOUD_SDK_REGION_KPS_CN_EAST_3": "https://kps.override", "HUAWEICLOUD_SDK_REGION_CPH_AP_SOUTHEAST_1": "https://cph.sdk"}
	e := kps.Endpoints{Default: "https://kps.flag", CPH: cph.Endpoints{Region: "cn-north-4", Plain: "https://cph.plain",
		Regions: map[string]string{"la-south-2": "https://cph.la"}, Getenv: func(k string) string { return env[k] }}}
	tests := []struct{ region, want string }{
		{"", "https://kps.flag"},
		{"cn-north-4", "https://kps.flag"},
		{"cn-east-3", "https://kps.override"},
		{"la-south-2", "https://cph.la"},
		{"ap-southeast-1", "https://cph.sdk"},
		{"cn-south-1", "https://kms.cn-south-1.myhuaweicloud.com"},
	}
	for _, tt := range tests {
		if got := e.For(tt.region); got != tt.want {
			t.Errorf("For(%q) = %q, want %q", tt.region, got, tt.want)
		}
	}
	e.Default = ""
	if got := e.For(""); got != "https://cph.plain" {
		t.Errorf("without a KPS endpoint, the default region's = %q, want its CPH endpoint", got)
	}
}

package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// TestPlacesReachEachRegion: each place's client calls its region's
// endpoint with its project, the limiter is its (region, project)'s, and
// a token never signs for another project.
func TestPlacesReachEachRegion(t *testing.T) {
	const (
		ak, sk = "PLACESACCESSKEY00000", "places-secret"
		north  = "0123456789abcdef0123456789abcdef"
		east   = "fedcba9876543210fedcba9876543210"
	)
	serve := func(project string) *httptest.Server {
		srv := httptest.NewServer(cphsim.New(cphsim.Options{ProjectID: project, AccessKey: ak, SecretKey: sk, Servers: 3}))
		t.Cleanup(srv.Close)
		return srv
	}
	northSrv, eastSrv := serve(north), serve(east)
	env := map[string]string{"HUAWEICLOUD_SDK_REGION_CPH_CN_EAST_3": eastSrv.URL}
	var keys []string
	p := &places{
		base:      cph.Config{Region: "cn-north-4", Endpoint: northSrv.URL, ProjectID: north, Credentials: cph.Credentials{AccessKey: ak, SecretKey: sk}},
		region:    "cn-north-4",
		endpoints: cph.Endpoints{Region: "cn-north-4", Plain: northSrv.URL, Getenv: func(k string) string { return env[k] }},
		limiter: func(region, project string) tasks.Limiter {
			keys = append(keys, region+"/"+project)
			return nil
		},
		log:  slog.New(slog.DiscardHandler),
		apis: map[tasks.Place]tasks.API{},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		place tasks.Place
		key   string
	}{
		{tasks.Place{}, "cn-north-4/" + north},
		{tasks.Place{Region: "cn-north-4", ProjectID: north}, "cn-north-4/" + north},
		{tasks.Place{Region: "cn-east-3", ProjectID: east}, "cn-east-3/" + east},
	} {
		api, _ := p.at(tc.place)
		page, err := api.ListServersPage(ctx, 0, 100)
		if err != nil || len(page.Servers) != 3 {
			t.Errorf("%s: list = %v, %v; want its simulator's 3 servers", tc.place, page, err)
		}
		if got := keys[len(keys)-1]; got != tc.key {
			t.Errorf("%s: limiter of %q, want %q", tc.place, got, tc.key)
		}
	}
	if a, _ := p.at(tasks.Place{Region: "cn-east-3", ProjectID: east}); a != p.apis[tasks.Place{Region: "cn-east-3", ProjectID: east}] {
		t.Error("a place's client is built anew for each call")
	}

	p.base.Credentials.SecurityToken = "token"
	p.apis = map[tasks.Place]tasks.API{}
	api, _ := p.at(tasks.Place{Region: "cn-east-3", ProjectID: east})
	_, err := api.UpdateKeypair(ctx, nil)
	var ce *cph.Error
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusForbidden {
		t.Fatalf("a token across projects: %v, want a 403 that halts the rotation with the reason", err)
	}
}

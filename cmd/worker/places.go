package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// places builds the CPH client of each (region, project) the first time a
// rotation there is worked on, on the region's endpoint, with the
// worker's credentials; and hands out the limiter of each (region,
// project). One AK/SK signs for every project of the account.
type places struct {
	base      cph.Config // the worker's own region, project and credentials
	region    string     // the default place's region, in limiter keys and metrics
	endpoints cph.Endpoints
	limiter   func(region, project string) tasks.Limiter
	log       *slog.Logger
	kps       kps.Endpoints                       // the KPS endpoint of each region, for retires
	readRate  func(region string) ratelimit.Limit // a retire's reads of the fleet, per region

	mu   sync.Mutex
	apis map[tasks.Place]tasks.API
}

// at is tasks.Places.
func (p *places) at(pl tasks.Place) (tasks.API, tasks.Limiter) {
	region := cmp.Or(pl.Region, p.region)
	p.mu.Lock()
	defer p.mu.Unlock()
	api := p.apis[pl]
	if api == nil {
		api = p.build(pl)
		p.apis[pl] = api
	}
	return api, p.limiter(region, cmp.Or(pl.ProjectID, p.base.ProjectID))
}

// build makes pl's client. A place it cannot serve gets an API whose every
// call is refused with the reason, as a 403: the rotation halts with it in
// its reason, rather than its servers failing one by one.
func (p *places) build(pl tasks.Place) tasks.API {
	cfg := p.endpoints.Config(p.base, pl.Region)
	if pl.ProjectID != "" && pl.ProjectID != p.base.ProjectID {
		if p.base.Credentials.SecurityToken != "" || p.base.Credentials.AuthToken != "" {
			return refused{msg: "the worker's credentials are a token scoped to project " + p.base.ProjectID + ", not " + pl.ProjectID +
				": sign with a permanent AK/SK to rotate across projects"}
		}
		cfg.ProjectID = pl.ProjectID
	}
	api, err := cph.NewClient(cfg)
	if err != nil {
		p.log.Error("no CPH client for a rotation's place", "place", pl.String(), "err", err)
		return refused{msg: "no CPH client for " + pl.String() + ": " + err.Error()}
	}
	return api
}

// retireAt is tasks.RetirePlaces: a scheduled retire reads the place's
// whole server list with a client of its own, paced at the region's read
// rate as enqueue paces a plan's reads, and deletes from the place's KPS.
func (p *places) retireAt(pl tasks.Place) (*tasks.RetireAt, error) {
	cfg := p.endpoints.Config(p.base, pl.Region)
	project := cmp.Or(pl.ProjectID, p.base.ProjectID)
	if project != p.base.ProjectID && (p.base.Credentials.SecurityToken != "" || p.base.Credentials.AuthToken != "") {
		return nil, fmt.Errorf("the worker's credentials are a token scoped to project %s, not %s: sign with a permanent AK/SK to retire across projects",
			p.base.ProjectID, project)
	}
	cfg.ProjectID, cfg.ReadRetries = project, 10
	cfg.ReadRate = p.readRate(cmp.Or(pl.Region, p.region)).Local()
	api, err := cph.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("CPH client of %s: %w", pl, err)
	}
	kc, err := kps.NewClient(kps.Config{Endpoint: p.kps.For(pl.Region), ProjectID: project, Credentials: p.base.Credentials,
		UserAgent: p.base.UserAgent, ReadRetries: 3})
	if err != nil {
		return nil, fmt.Errorf("KPS client of %s: %w", pl, err)
	}
	return &tasks.RetireAt{Fleet: api, Keypairs: kc, Region: cmp.Or(pl.Region, p.base.Region), ProjectID: project}, nil
}

// refused is the API of a place the worker cannot reach.
type refused struct{ msg string }

func (r refused) err(op string) error {
	return &cph.Error{Op: op, StatusCode: http.StatusForbidden, Code: "REKEY.PLACE", Message: r.msg, Kind: cph.KindPermanent}
}

func (r refused) UpdateKeypair(context.Context, []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	return nil, r.err("UpdateKeypair")
}

func (r refused) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) {
	return nil, r.err("ListJobs")
}

func (r refused) ListServersPage(context.Context, int, int) (*cph.ListServersResponse, error) {
	return nil, r.err("ListCloudPhoneServers")
}

func (r refused) ShowServer(context.Context, string) (*cph.Server, error) {
	return nil, r.err("ShowCloudPhoneServerDetail")
}

package main

import (
	"context"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestLocalLimiter(t *testing.T) {
	// One token an hour: after the burst, the next one is always beyond
	// maxWait, so no case depends on the machine's speed.
	limits := map[string]ratelimit.Limit{"UpdateKeypair": {Rate: 1, Period: time.Hour, Burst: 2}}
	l := newLocalLimiter(limits, 2*time.Second)
	ctx := context.Background()
	for i := range 2 {
		if err := l.Wait(ctx, "UpdateKeypair"); err != nil {
			t.Fatalf("wait %d within the burst: %v", i, err)
		}
	}
	err := l.Wait(ctx, "UpdateKeypair")
	var d *ratelimit.DelayError
	if !errors.As(err, &d) || d.RetryIn < 59*time.Minute {
		t.Fatalf("wait beyond the burst = %v, want a *ratelimit.DelayError of about an hour", err)
	}
	if err := l.Wait(ctx, "ListJobs"); err != nil {
		t.Fatalf("wait on an API without a limit = %v, want nil", err)
	}
	if err := l.Throttled(ctx, "UpdateKeypair", time.Second, 5); err != nil {
		t.Fatalf("Throttled = %v, want nil", err)
	}
	if got := l.Rate("UpdateKeypair"); got != 1.0/3600 {
		t.Fatalf("Rate = %v, want one an hour", got)
	}
	if got := l.Rate("ListJobs"); !math.IsInf(got, 1) {
		t.Fatalf("Rate of an API without a limit = %v, want +Inf", got)
	}
}

func TestLocalLimiterHonoursContext(t *testing.T) {
	// 1/s with a 1 h maxWait: the second Wait would sleep a second, and the
	// cancelled context must end it at once instead.
	l := newLocalLimiter(map[string]ratelimit.Limit{"ListJobs": ratelimit.PerSecond(1)}, time.Hour)
	if err := l.Wait(context.Background(), "ListJobs"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, "ListJobs"); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a cancelled context = %v, want context.Canceled", err)
	}
}

func TestLimiterFlag(t *testing.T) {
	env := map[string]string{"REKEY_ENDPOINT": "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args    []string
		env     string
		want    string
		wantErr bool
	}{
		{want: limiterFleet},
		{args: []string{"--limiter", "local"}, want: limiterLocal},
		{env: "local", want: limiterLocal},
		{args: []string{"--limiter", "fleet"}, env: "local", want: limiterFleet},
		{args: []string{"--limiter", "redis"}, wantErr: true},
	} {
		getenv := func(k string) string {
			if k == "REKEY_LIMITER" {
				return tc.env
			}
			return env[k]
		}
		c, err := parseConfig(tc.args, getenv, io.Discard)
		switch {
		case tc.wantErr && err == nil:
			t.Errorf("parseConfig(%q, REKEY_LIMITER=%q) accepted %q", tc.args, tc.env, c.limiter)
		case !tc.wantErr && err != nil:
			t.Errorf("parseConfig(%q, REKEY_LIMITER=%q): %v", tc.args, tc.env, err)
		case !tc.wantErr && c.limiter != tc.want:
			t.Errorf("parseConfig(%q, REKEY_LIMITER=%q) limiter = %q, want %q", tc.args, tc.env, c.limiter, tc.want)
		}
	}
}

// throttlingAPI answers every call with the gateway's 429 naming a quota.
type throttlingAPI struct{ tasks.API }

func (throttlingAPI) UpdateKeypair(context.Context, []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	return nil, &cph.Error{Op: "UpdateKeypair", StatusCode: 429, Code: cph.CodeThrottled, Kind: cph.KindThrottled,
		Message: "The throttling threshold has been reached: policy user over ratelimit,limit:8,time:1 second"}
}

func (throttlingAPI) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) {
	return nil, &cph.Error{Op: "ListJobs", StatusCode: 429, Code: cph.CodeThrottled, Kind: cph.KindThrottled, Message: "Too Many Requests"}
}

// TestFleetLimiterTakesTheQuotaOfA429: the quota a 429 names, as the
// pipeline reads it with cph.QuotaPerSecond, reaches the shared limiter.
func TestFleetLimiterTakesTheQuotaOfA429(t *testing.T) {
	r := testredis.Mini(t)
	lim, err := ratelimit.New(r.Client(t), ratelimit.Options{Limits: map[string]ratelimit.Limit{
		tasks.APIUpdateKeypair: ratelimit.PerSecond(20), tasks.APIListJobs: ratelimit.PerSecond(20)}})
	if err != nil {
		t.Fatal(err)
	}
	f := fleetLimiter{l: lim, region: "r"}
	ctx := context.Background()
	_, err = throttlingAPI{}.UpdateKeypair(ctx, nil)
	if err := f.Throttled(ctx, tasks.APIUpdateKeypair, 0, cph.QuotaPerSecond(err)); err != nil {
		t.Fatal(err)
	}
	if got, err := lim.CurrentRate(ctx, f.key(tasks.APIUpdateKeypair)); err != nil || got != 7.6 {
		t.Fatalf("UpdateKeypair rate after a 429 naming 8/s = %v, %v; want 7.6 (95 %%)", got, err)
	}
	// The stages size their calls in flight from the cut rate too.
	if got := f.Rate(tasks.APIUpdateKeypair); got != 7.6 {
		t.Fatalf("Rate(UpdateKeypair) after a 429 naming 8/s = %v, want 7.6", got)
	}
	// A 429 naming no quota is isolated: the rate stays.
	_, err = throttlingAPI{}.ListJobsOf(ctx, 1, "req")
	if err := f.Throttled(ctx, tasks.APIListJobs, 0, cph.QuotaPerSecond(err)); err != nil {
		t.Fatal(err)
	}
	if got, err := lim.CurrentRate(ctx, f.key(tasks.APIListJobs)); err != nil || got != 20 {
		t.Fatalf("ListJobs rate after an isolated 429 = %v, %v; want 20", got, err)
	}
}

// TestProjectsOfARegionHaveTheirOwnRate: the fleet limiter keys a quota by
// (region, project, API): two projects of one region are each granted the
// region's rate, and spending one's burst leaves the other's whole.
func TestProjectsOfARegionHaveTheirOwnRate(t *testing.T) {
	r := testredis.Mini(t)
	// One grant an hour: a second grant is never due during the test.
	hourly := ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}
	lim, err := ratelimit.New(r.Client(t), ratelimit.Options{
		Limits:       map[string]ratelimit.Limit{tasks.APIUpdateKeypair: ratelimit.PerSecond(100)},
		RegionLimits: map[string]map[string]ratelimit.Limit{"cn-north-4": {tasks.APIUpdateKeypair: hourly}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	web := fleetLimiter{l: lim, region: "cn-north-4", project: "11111111111111111111111111111111"}
	db := fleetLimiter{l: lim, region: "cn-north-4", project: "22222222222222222222222222222222"}
	if err := web.Wait(ctx, tasks.APIUpdateKeypair); err != nil {
		t.Fatalf("first grant of the web project: %v", err)
	}
	var d *ratelimit.DelayError
	if err := web.Wait(ctx, tasks.APIUpdateKeypair); !errors.As(err, &d) {
		t.Fatalf("second grant of the web project within the hour = %v, want a *ratelimit.DelayError", err)
	}
	if err := db.Wait(ctx, tasks.APIUpdateKeypair); err != nil {
		t.Fatalf("first grant of the db project after the web project spent its burst: %v; want its own quota", err)
	}
	for _, f := range []fleetLimiter{web, db} {
		if got := f.Rate(tasks.APIUpdateKeypair); math.Abs(got*3600-1) > 0.01 {
			t.Errorf("%s: rate %v, want the region's one an hour", f.project, got)
		}
	}
	if web.key(tasks.APIUpdateKeypair) == db.key(tasks.APIUpdateKeypair) {
		t.Errorf("both projects share the key %s", web.key(tasks.APIUpdateKeypair))
	}
}

package cph_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

func TestQuotaOf(t *testing.T) {
	throttled := func(msg string) error {
		return fmt.Errorf("submit: %w", &cph.Error{Op: "UpdateKeypair", StatusCode: 429, Code: cph.CodeThrottled, Message: msg, Kind: cph.KindThrottled})
	}
	tests := []struct {
		name string
		err  error
		want cph.Quota
		ok   bool
	}{
		{"per second", throttled("The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 second"), cph.Quota{10, time.Second}, true},
		{"per minute", throttled("The throttling threshold has been reached: policy user over ratelimit,limit:600,time:1 minute"), cph.Quota{600, time.Minute}, true},
		{"ip policy, spaces", throttled("The throttling threshold has been reached: policy ip over ratelimit, limit: 5, time: 1 second"), cph.Quota{5, time.Second}, true},
		{"fraction", throttled("policy user over ratelimit,limit:2.5,time:1 second"), cph.Quota{2.5, time.Second}, true},
		{"no quota in the message", throttled("Too Many Requests"), cph.Quota{}, false},
		{"zero limit", throttled("policy user over ratelimit,limit:0,time:1 second"), cph.Quota{}, false},
		{"other unit", throttled("policy user over ratelimit,limit:10,time:1 hour"), cph.Quota{}, false},
		{"not throttled", &cph.Error{Op: "UpdateKeypair", StatusCode: 500, Message: "limit:10,time:1 second", Kind: cph.KindTransient}, cph.Quota{}, false},
		{"not a cph error", errors.New("limit:10,time:1 second"), cph.Quota{}, false},
		{"nil", nil, cph.Quota{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := cph.QuotaOf(tt.err)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("QuotaOf = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
			want := 0.0
			if tt.ok {
				want = tt.want.Limit / tt.want.Period.Seconds()
			}
			if got := cph.QuotaPerSecond(tt.err); got != want {
				t.Fatalf("QuotaPerSecond = %v; want %v", got, want)
			}
		})
	}
}

// TestQuotaOfSimulator checks that the simulator's 429 carries its current
// quota in the gateway's wording, and that the client reads it back, after
// a change of the quota too.
func TestQuotaOfSimulator(t *testing.T) {
	sim := cphsim.New(cphsim.Options{AccessKey: "AK", SecretKey: "SK", ProjectID: "p", Servers: 3, UpdateKeypairQuota: 2})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: "p", Credentials: cph.Credentials{AccessKey: "AK", SecretKey: "SK"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	until429 := func() error {
		for range 100 {
			_, err := c.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: "x", KeypairName: "kp"}})
			if cph.IsThrottled(err) {
				return err
			}
		}
		t.Fatal("no 429 in 100 calls")
		return nil
	}
	if got := cph.QuotaPerSecond(until429()); got != 2 {
		t.Fatalf("quota of the simulator's 429 = %v/s; want 2", got)
	}
	if err := sim.SetQuota(cphsim.APIUpdateKeypair, 0.5); err != nil {
		t.Fatal(err)
	}
	q, ok := cph.QuotaOf(until429())
	if !ok || q != (cph.Quota{Limit: 30, Period: time.Minute}) {
		t.Fatalf("quota after SetQuota(0.5) = %+v, %v; want 30 a minute", q, ok)
	}
}

package ratelimit

import (
	"context"
	"errors"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestParseRegionalLimit(t *testing.T) {
	def := PerSecond(10)
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "20/s:1", want: "20/s:1"},
		{in: "cn-north-4=20/s:1,10/s:1", want: "cn-north-4=20/s:1,10/s:1"},
		{in: "10/s:1, cn-north-4=20/s:1 ,ap-southeast-1=600/m", want: "ap-southeast-1=600/m:10,cn-north-4=20/s:1,10/s:1"},
		{in: "cn-north-4=20/s:1", want: "cn-north-4=20/s:1,10/s:10"},
		{in: "10/s,20/s", wantErr: true},
		{in: "cn-north-4=20/s,cn-north-4=5/s", wantErr: true},
		{in: "North=20/s", wantErr: true},
		{in: "cn-north-4=fast", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseRegionalLimit(tc.in, def)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseRegionalLimit(%q) error = %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && got.String() != tc.want {
			t.Errorf("ParseRegionalLimit(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestRegionsDoNotShareQuota: a region's own rate applies to its key, and
// one region's 429 adaptation leaves another's rate alone.
func TestRegionsDoNotShareQuota(t *testing.T) {
	rdb := testredis.Mini(t).Client(t)
	l, err := New(rdb, Options{
		Limits:       map[string]Limit{"UpdateKeypair": PerSecond(10)},
		RegionLimits: map[string]map[string]Limit{"cn-north-4": {"UpdateKeypair": PerSecond(40)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	north := Key{Region: "cn-north-4", API: "UpdateKeypair"}
	east := Key{Region: "cn-east-3", API: "UpdateKeypair"}
	for _, k := range []Key{north, east} {
		if err := l.Wait(ctx, k); err != nil {
			t.Fatalf("Wait %s: %v", k, err)
		}
	}
	if got := l.Rate(north); got != 40 {
		t.Errorf("rate of %s = %v, want its own 40", north, got)
	}
	if got := l.Rate(east); got != 10 {
		t.Errorf("rate of %s = %v, want the default 10", east, got)
	}
	if err := l.ThrottledQuota(ctx, north, 0, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CurrentRate(ctx, north); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx, east); err != nil {
		var d *DelayError
		if !errors.As(err, &d) {
			t.Fatal(err)
		}
	}
	if got := l.Rate(east); got != 10 {
		t.Errorf("rate of %s = %v after %s was throttled, want 10 still", east, got, north)
	}
	if got, _ := l.CurrentRate(ctx, north); got >= 40 {
		t.Errorf("shared rate of %s = %v after a 429 naming 20/s, want it cut", north, got)
	}
}

package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    Limit
		wantErr string
	}{
		{in: "10/s", want: Limit{Rate: 10, Period: time.Second, Burst: 10}},
		{in: " 10/s ", want: Limit{Rate: 10, Period: time.Second, Burst: 10}},
		{in: "600/m", want: Limit{Rate: 600, Period: time.Minute, Burst: 10}},
		{in: "30/m", want: Limit{Rate: 30, Period: time.Minute, Burst: 1}},
		{in: "7200/h", want: Limit{Rate: 7200, Period: time.Hour, Burst: 120}},
		{in: "10/s:20", want: Limit{Rate: 10, Period: time.Second, Burst: 20}},
		{in: "600/m:1", want: Limit{Rate: 600, Period: time.Minute, Burst: 1}},
		{in: "", wantErr: `no "/"`},
		{in: "10", wantErr: `no "/"`},
		{in: "ten/s", wantErr: `rate "ten" is not a positive integer`},
		{in: "0/s", wantErr: `rate "0" is not a positive integer`},
		{in: "-1/s", wantErr: `rate "-1" is not a positive integer`},
		{in: "10/d", wantErr: `unknown unit "d"`},
		{in: "10/", wantErr: `unknown unit ""`},
		{in: "10/s:", wantErr: `burst "" is not a positive integer`},
		{in: "10/s:0", wantErr: `burst "0" is not a positive integer`},
		{in: "10/s:x", wantErr: `burst "x" is not a positive integer`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLimit(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "10/s:20") {
					t.Fatalf("ParseLimit(%q) = %v, %v; want an error containing %q and an example", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseLimit(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			back, err := ParseLimit(got.String())
			if err != nil || back != got {
				t.Fatalf("ParseLimit(%q.String() = %q) = %+v, %v; want it back", tt.in, got.String(), back, err)
			}
		})
	}
}

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		l       Limit
		wantErr string
	}{
		{l: PerSecond(1)},
		{l: PerMinute(1)},
		{l: Limit{Rate: 0, Period: time.Second, Burst: 1}, wantErr: "rate 0"},
		{l: Limit{Rate: 1, Period: 0, Burst: 1}, wantErr: "period 0s"},
		{l: Limit{Rate: 1, Period: time.Second, Burst: 0}, wantErr: "burst 0"},
	}
	for _, tt := range tests {
		err := tt.l.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%+v.Validate() = %v; want error %q", tt.l, err, tt.wantErr)
		}
	}
}

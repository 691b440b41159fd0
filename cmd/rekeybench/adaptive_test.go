package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

func TestAdaptiveFlags(t *testing.T) {
	c, err := parseConfig([]string{"--scenario", "raise,isolated", "--raise-servers", "1000", "--raise-after", "3s"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.scenarios) != 2 || c.scenarios[0] != "raise" || c.adaptive.raiseServers != 1000 || c.adaptive.raiseAfter != 3*time.Second || c.adaptive.raiseHalveAt != 0.1 {
		t.Fatalf("config %+v", c)
	}
	for _, tc := range []struct{ args []string }{{[]string{"--raise-halve-at", "1"}}, {[]string{"--raise-after", "0s"}}, {[]string{"--raise-servers", "0"}}} {
		if _, err := parseConfig(tc.args, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("parseConfig(%q) = %v; want an error naming %s", tc.args, err, tc.args[0])
		}
	}
}

func TestUseBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// 20/s for 5 s, 10/s for 5 s (a 429 at 6 s), then 20/s for 5 s.
	var samples []sample
	served, throttled := 0, 0
	for s := 0; s <= 15; s++ {
		switch {
		case s > 0 && s <= 5, s > 10:
			served += 20
		case s > 5:
			served += 10
		}
		if s == 6 {
			throttled++
		}
		samples = append(samples, sampleAt(t0.Add(time.Duration(s)*time.Second), served, throttled))
	}
	r := &result{samples: samples, final: samples[len(samples)-1].st}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, tc := range []struct {
		from, to, q float64
		want        float64
	}{{0, 5, 20, 1}, {5, 10, 10, 1}, {6, 10, 20, 0.5}, {10, 15, 20, 1}, {3, 13, 20, 0.75}} {
		if got, ok := r.useBetween(cphsim.APIUpdateKeypair, at(tc.from), at(tc.to), tc.q); !ok || got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("useBetween(%vs, %vs, %v) = %v, %v; want %v", tc.from, tc.to, tc.q, got, ok, tc.want)
		}
	}
	if _, ok := r.useBetween(cphsim.APIUpdateKeypair, at(3), at(3.5), 20); ok {
		t.Error("useBetween over half a second is ok; want not")
	}
	if n := r.throttledBetween(at(5), at(7)); n != 1 {
		t.Errorf("throttledBetween(5s, 7s) = %d; want 1", n)
	}
	if n := r.throttledBetween(at(7), at(15)); n != 0 {
		t.Errorf("throttledBetween(7s, 15s) = %d; want 0", n)
	}
	// The last submit is put half a sample before the sample that shows it.
	if got, want := r.lastSubmit(), at(14.5); !got.Equal(want) {
		t.Errorf("lastSubmit = %s; want %s", got, want)
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     map[string]string
		wantErr string
		check   func(*config) bool
	}{
		{check: func(c *config) bool {
			// With no flags: the worker's and enqueue's defaults, 0 % and 5 % job failures.
			return len(c.scenarios) == len(allScenarios) && c.servers == 20000 && c.quota == 20 && c.workers == 4 &&
				c.redisURL == "redis://127.0.0.1:6379/13" && len(c.scale) == 3 && c.scale[2] == 16 &&
				c.submitBurst == 1 && c.pollBurst == 5 && c.readBurst == 5 && c.chunkSize == tasks.DefaultChunkSize &&
				c.firstPoll == 0 && c.pollCap == 0 && fmt.Sprint(c.failRates) == "[0 0.05]"
		}},
		{args: []string{"--scenario", "halve,scale", "--scale", "2,8"}, check: func(c *config) bool {
			return len(c.scenarios) == 2 && c.scenarios[0] == "halve" && len(c.scale) == 2 && c.scale[1] == 8
		}},
		{env: map[string]string{"REKEY_BENCH_QUOTA": "40", "REKEY_BENCH_REDIS": "redis://h:1/2"}, check: func(c *config) bool {
			return c.quota == 40 && c.redisURL == "redis://h:1/2"
		}},
		{env: map[string]string{"REDIS_URL": "redis://elsewhere:6379/0"}, check: func(c *config) bool {
			return c.redisURL == "redis://127.0.0.1:6379/13" // never flush the Redis of REDIS_URL
		}},
		{args: []string{"--scenario", "speed"}, wantErr: `--scenario: unknown scenario "speed"`},
		{args: []string{"--scale", "1,x"}, wantErr: `--scale: "x"`},
		{args: []string{"--quota", "0"}, wantErr: "--quota 0: want 1-10000"},
		{args: []string{"--chunk-size", "101"}, wantErr: "--chunk-size 101: want 0-100"},
		{args: []string{"--fail-rates", "0,1"}, wantErr: `--fail-rates: "1"`},
		{args: []string{"--halve-at", "1"}, wantErr: "--halve-at 1: want a fraction in (0, 1)"},
		{args: []string{"--job-jitter", "3s"}, wantErr: "--job-jitter 3s: want 0 to --job-latency (2s)"},
		{args: []string{"--quota", "1", "--scenario", "halve"}, wantErr: "the halve scenario needs at least 2"},
		{args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{env: map[string]string{"REKEY_BENCH_SERVERS": "many"}, wantErr: "REKEY_BENCH_SERVERS"},
	} {
		c, err := parseConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseConfig(%q, %v) error = %v, want one containing %q", tc.args, tc.env, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("parseConfig(%q, %v): %v", tc.args, tc.env, err)
		case tc.wantErr == "" && !tc.check(c):
			t.Errorf("parseConfig(%q, %v) = %+v", tc.args, tc.env, c)
		}
	}
}

func TestPerSecond(t *testing.T) {
	for q, want := range map[float64]string{20: "20/s", 5: "5/s", 2.5: "150/m", 0.25: "15/m"} {
		if got := perSecond(q); got != want {
			t.Errorf("perSecond(%v) = %q, want %q", q, got, want)
		}
	}
}

func TestAnalyseHalving(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// Served UpdateKeypair calls and 429s per second: 20/s until the halving
	// at 3 s, 429s at 4 s and 5 s, then 10/s until the last submit at 15 s.
	var samples []sample
	served, throttled := 0, 0
	for s := 0; s <= 16; s++ {
		switch {
		case s > 0 && s <= 3:
			served += 20
		case s > 3 && s <= 15:
			served += 10
		}
		if s == 4 || s == 5 {
			throttled++
		}
		samples = append(samples, sampleAt(t0.Add(time.Duration(s)*time.Second), served, throttled))
	}
	r := &result{samples: samples, final: samples[len(samples)-1].st}
	h := analyseHalving(r, t0.Add(3*time.Second+time.Millisecond), 10)
	if h.before != 0 || h.after != 2 || h.later != 0 {
		t.Errorf("429s before/after/later = %d/%d/%d, want 0/2/0", h.before, h.after, h.later)
	}
	if d := h.stopAfter - 2*time.Second; d < -10*time.Millisecond || d > 10*time.Millisecond {
		t.Errorf("429s stop after %s, want 2s", h.stopAfter)
	}
	// 100 calls from the last 429 (5 s) to the last submit, which the
	// estimate puts half a sample before the sample that shows it (14.5 s).
	if want := 100 / 9.5 / 10; h.useAfterStop < want-0.001 || h.useAfterStop > want+0.001 {
		t.Errorf("new-quota use after the 429s stop = %.4f, want %.4f", h.useAfterStop, want)
	}
}

// TestSmoke runs the smallest real benchmark: one scale-out run of 200
// servers through real processes, checked against the simulator.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker, enqueue and cphsim processes")
	}
	r := testredis.Mini(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--redis", r.URL(), "--scenario", "scale", "--scale", "1",
		"--servers", "200", "--quota", "50", "--job-latency", "500ms", "--first-poll", "600ms", "--poll-cap", "1s"},
		func(string) string { return "" }, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "| 1 | ") || !strings.Contains(out.String(), " | ok |") {
		t.Fatalf("no checked row for 1 worker in:\n%s", out.String())
	}
}

func sampleAt(at time.Time, served, throttled int) sample {
	s := sample{at: at}
	s.st.Calls = map[cphsim.API]int{cphsim.APIUpdateKeypair: served + throttled}
	s.st.Throttled = map[cphsim.API]int{cphsim.APIUpdateKeypair: throttled}
	return s
}

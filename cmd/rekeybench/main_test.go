package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
				c.firstPoll == 0 && c.pollCap == 0 && fmt.Sprint(c.failRates) == "[0 0.05]" &&
				c.apiLatency == latency{300 * time.Millisecond, 150 * time.Millisecond}
		}},
		{args: []string{"--latency", "0", "--latency-jitter", "0"}, check: func(c *config) bool {
			return c.apiLatency == latency{} && c.apiLatency.both() == "0"
		}},
		{args: []string{"--latency", "0"}, check: func(c *config) bool { // the jitter's default is moot
			return c.apiLatency == latency{} && c.apiLatency.both() == "0"
		}},
		{env: map[string]string{"REKEY_BENCH_LATENCY": "200ms", "REKEY_BENCH_LATENCY_JITTER": "100ms"}, check: func(c *config) bool {
			return c.apiLatency.both() == "0 and 200ms±100ms"
		}},
		{args: []string{"--latency", "-1s"}, wantErr: "--latency -1s: want 0 (no latency runs) or a positive duration"},
		{args: []string{"--latency", "100ms"}, wantErr: "--latency-jitter 150ms: want 0 to --latency (100ms)"},
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

// The latency table sets each run beside its 0 ms twin: the wall ratio,
// and the plan against its pages at the read rate.
func TestLatencyTable(t *testing.T) {
	c := &config{servers: 20000, quota: 20, workers: 4, apiLatency: latency{300 * time.Millisecond, 150 * time.Millisecond}}
	b := &bench{c: c}
	const s = time.Second
	run := func(wall, plan time.Duration, planned int, check error) *result {
		return &result{wall: wall, plan: plan, planned: planned, check: check}
	}
	tb := b.latencyTable([]string{"still", "still at 300ms", "no places", "no places at 300ms"}, []*result{
		run(13*s, s, 205, nil), run(14300*time.Millisecond, 12300*time.Millisecond, 205, nil),
		run(17*s, 0, 0, nil), run(17*s, 0, 0, errors.New("server x appears twice")),
	})
	if len(tb.rows) != 2 {
		t.Fatalf("%d rows, want one a pair", len(tb.rows))
	}
	for i, want := range [][]string{
		{"still", "13.0 s", "14.3 s", "1.10", "1.0 s", "12.3 s", "205", "10.2 s", "1.20", "0 / 0"},
		{"no places", "17.0 s", "17.0 s", "1.00", "0.0 s", "0.0 s", "0", "n/a", "n/a (no plan reads)", "0 / 0"},
	} {
		if got := tb.rows[i][:len(want)]; !slices.Equal(got, want) {
			t.Errorf("row %d = %q, want %q", i, got, want)
		}
	}
	if last := tb.rows[1][len(tb.rows[1])-1]; !strings.HasPrefix(last, "FAILED: server x") || !tb.failed {
		t.Errorf("a twin's failed check shows as %q (table failed %v)", last, tb.failed)
	}
}

func sampleAt(at time.Time, served, throttled int) sample {
	s := sample{at: at}
	s.st.Calls = map[cphsim.API]int{cphsim.APIUpdateKeypair: served + throttled}
	s.st.Throttled = map[cphsim.API]int{cphsim.APIUpdateKeypair: throttled}
	return s
}

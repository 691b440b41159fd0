package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cph-rekey/cph-rekey/rekey"
)

func TestProgressBarFits(t *testing.T) {
	busy := rekey.PlanProgress{Step: rekey.StepRead, Pages: 4012, TotalPages: 10205, Listed: 392_000, Targets: 1_000_000,
		Matched: 391_500, Throttled: 12, Retries: 14, Elapsed: 200 * time.Second}
	for _, width := range []int{20, 40, 79, 119, 200} {
		for _, pp := range []rekey.PlanProgress{busy, {Step: rekey.StepDiscover}, {Step: rekey.StepRead, Pages: 3, TotalPages: 3, Done: true}} {
			line := progressBar(pp, width)
			if n := utf8.RuneCountInString(line); n > width || strings.ContainsAny(line, "\r\n") {
				t.Errorf("width %d: %d columns: %q", width, n, line)
			}
		}
	}
	if line := progressBar(busy, 200); !strings.Contains(line, "4012/10205 pages") || !strings.Contains(line, "391500/1000000 matched") ||
		!strings.Contains(line, "eta ") || !strings.Contains(line, "12 throttled (429)") || !strings.Contains(line, "14 retries") {
		t.Errorf("line misses a figure: %q", line)
	}
}

// fakeNow is a clock a test moves.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func TestPlanProgressLines(t *testing.T) {
	step := func(pages int) rekey.PlanProgress {
		return rekey.PlanProgress{Step: rekey.StepRead, Pages: pages, TotalPages: 100, Targets: 50, Matched: pages / 2, Elapsed: time.Second}
	}
	tests := []struct {
		name            string
		terminal, quiet bool
		want            func(t *testing.T, out string)
	}{
		{"pipe", false, false, func(t *testing.T, out string) {
			// 30 calls 1 s apart, a line every 10 s: at 10 s, 20 s, and
			// the last figures when done.
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 3 || strings.Contains(out, "\r") || !strings.Contains(lines[2], "100/100 pages") {
				t.Errorf("%d lines: %q", len(lines), out)
			}
		}},
		{"terminal", true, false, func(t *testing.T, out string) {
			if strings.Count(out, "\r\033[K") != 31 || strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Errorf("want 31 redraws in place, then one new line: %q", out)
			}
		}},
		{"quiet", true, true, func(t *testing.T, out string) {
			if out != "" {
				t.Errorf("--quiet wrote %q", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			clock := &fakeNow{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			p := &planProgress{line: liveLine{w: &out, terminal: tt.terminal, width: func() int { return 80 }},
				interval: 10 * time.Second, now: clock.now, quiet: tt.quiet}
			for i := range 30 {
				p.show(step(i * 3))
				clock.t = clock.t.Add(time.Second)
			}
			done := step(100)
			done.Done = true
			p.show(done)
			tt.want(t, out.String())
		})
	}
}

func TestInterruptedSaysWhatWasWritten(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	failed := errors.New("boom")
	tests := []struct {
		name   string
		ctx    context.Context
		seen   rekey.PlanProgress
		dryRun bool
		want   string
	}{
		{"not interrupted", context.Background(), rekey.PlanProgress{}, false, "boom"},
		{"while reading", canceled, rekey.PlanProgress{Pages: 3, TotalPages: 40}, false, "interrupted while reading the fleet (page 3 of 40): nothing was written; run the same command again"},
		{"before the first page", canceled, rekey.PlanProgress{}, false, "(before the first page): nothing was written"},
		{"while writing", canceled, rekey.PlanProgress{Done: true}, false, "interrupted while writing the rotation: part of it may be written; run the same command again to complete it"},
		{"dry run", canceled, rekey.PlanProgress{Pages: 3}, true, "nothing was written (a dry run writes nothing)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &planProgress{line: liveLine{w: &bytes.Buffer{}}, seen: tt.seen}
			if err := p.interrupted(tt.ctx, failed, tt.dryRun); !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%q, want %q", err, tt.want)
			}
		})
	}
}

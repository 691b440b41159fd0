package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/rekey"
)

func cmdStatus(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "status", "ROTATION", "Shows a rotation's counts per state, percent done, current rate and ETA.")
	watch := f.Bool("watch", false, "keep watching: a live progress bar on a terminal, a line per interval otherwise (--watch and --wait ride through a Redis failover or restart of up to 5 minutes, saying so on stderr)")
	wait := f.Bool("wait", false, "block until the rotation ends, or its error budget halts it; exit 0 if it succeeded, 3 if it completed with errors (within the budget), 4 if the budget halted it (failed), 5 if it was cancelled")
	interval := f.Duration("interval", 2*time.Second, "refresh `interval` of --watch and --wait")
	asJSON := f.Bool("json", false, "print JSON (one object per refresh with --watch)")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	id, err := f.rotationArg()
	if err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return usagef("--interval %s: want at least 100ms", *interval)
	}
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer c.Close()

	var prev *sample
	live := &liveLine{w: e.stdout, terminal: e.isTerminal, width: e.width}
	show := func(rot *rekey.Rotation) error {
		cur := &sample{at: time.Now(), done: rot.Counts.Done()}
		st := newStatus(rot, prev, cur)
		if !*watch || !e.isTerminal || *asJSON {
			// The live bar has no room for it; everything else shows it.
			h, err := c.History(ctx, id)
			if err != nil && !*watch && !*wait {
				return err
			}
			// While watching, Redis may go away between the two reads:
			// this refresh goes without the history, the next has it.
			st.History = h
		}
		switch {
		case *asJSON:
			if err := json.NewEncoder(e.stdout).Encode(st); err != nil {
				return err
			}
		case *watch && e.isTerminal:
			live.redraw(st.bar)
		default:
			fmt.Fprintln(e.stdout, st.line())
			for _, p := range st.Parts {
				fmt.Fprintf(e.stdout, "  %s/%s: %s\n", orDefault(p.Region, "(default region)"), orDefault(p.ProjectID, "(default project)"), p.line())
			}
			st.writeRetire(e.stdout)
			if !*watch {
				writeHistory(e.stdout, st.History, statusHistory)
			}
		}
		if prev == nil || cur.at.Sub(prev.at) >= 10*time.Second {
			prev = cur // the rate is measured over the last ~10 s
		}
		return nil
	}
	var rot *rekey.Rotation
	if !*watch && !*wait {
		if rot, err = c.Rotation(ctx, id); err != nil {
			return usage(err)
		}
		return show(rot)
	}
	// --watch and --wait ride through a failover or restart: say so, and
	// read again with backoff. A halted rotation waits for an operator:
	// --wait does not.
	rot, err = c.Wait(ctx, id, rekey.WaitOptions{Interval: *interval, MaxOutage: statusOutageMax, ThroughHalt: !*wait, Progress: show,
		RedisDown: func(err error, d time.Duration) {
			fmt.Fprintf(e.stderr, "enqueue: status: Redis unavailable (%v); retrying in %s\n", err, d.Round(time.Millisecond))
		},
		RedisBack: func(after time.Duration) {
			fmt.Fprintf(e.stderr, "enqueue: status: Redis is back after %s\n", after.Round(100*time.Millisecond))
		}})
	if err != nil {
		return usage(err)
	}
	live.end()
	if *wait && rot.State != rekey.StateSucceeded {
		return endedError{tasks.State(rot.State)}
	}
	return nil
}

// Exit codes of status --wait for a rotation that did not succeed.
const (
	exitCompletedWithErrors = 3
	exitFailed              = 4
	exitCancelled           = 5
)

// endedError is what status --wait returns for a rotation that ended (or
// was halted) without succeeding; its exit code names the state.
type endedError struct{ state tasks.State }

func (e endedError) Error() string { return "rotation " + string(e.state) }

func (e endedError) exitCode() int {
	switch e.state {
	case tasks.StateCompletedWithErrors:
		return exitCompletedWithErrors
	case tasks.StateCancelled:
		return exitCancelled
	}
	return exitFailed
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// statusOutageMax is how long --watch and --wait ride through Redis being
// unreachable before they give up: longer than any failover or restart.
const statusOutageMax = 5 * time.Minute

type sample struct {
	at   time.Time
	done int64
}

// status is what `enqueue status` shows.
type status struct {
	Rotation   string       `json:"rotation"`
	State      rekey.State  `json:"state"`
	Reason     string       `json:"reason,omitempty"`
	Wave       int          `json:"wave"`
	Waves      int          `json:"waves"`
	MaxErrors  int          `json:"max_errors"`
	Keypair    string       `json:"keypair"`
	Counts     rekey.Counts `json:"counts"`
	Percent    float64      `json:"percent_done"`
	Rate       float64      `json:"servers_per_second"`
	ETASeconds float64      `json:"eta_seconds,omitempty"`
	CreatedAt  time.Time    `json:"created_at"`
	FinishedAt time.Time    `json:"finished_at,omitzero"`
	// Region and ProjectID are a rotation's place ("": the workers' own).
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	// Parts are a rotation across places' parts, one a (region, project),
	// with its budget as a whole (-1: none) and what they do when one
	// halts.
	Parts          []*status `json:"parts,omitempty"`
	MaxErrorsTotal *int      `json:"max_errors_total,omitempty"`
	OnRegionHalt   string    `json:"on_region_halt,omitempty"`
	// History is the rotation's history, oldest first (a part's entries
	// name it): status shows it, list does not.
	History []rekey.HistoryEntry `json:"history,omitempty"`
	// Retired is the last retire of the old keypairs; RetireDue when a
	// scheduled one is due, RetireError why its last run failed.
	Retired     *rekey.Retirement `json:"retired,omitempty"`
	RetireDue   time.Time         `json:"retire_due,omitzero"`
	RetireError string            `json:"retire_error,omitempty"`
}

// statusHistory is how many of the latest history entries the text
// status shows.
const statusHistory = 5

// writeHistory writes the last n entries of a rotation's history, one a
// line, after a line saying how many came before.
func writeHistory(w io.Writer, hist []rekey.HistoryEntry, n int) {
	if len(hist) == 0 {
		return
	}
	if len(hist) > n {
		fmt.Fprintf(w, "history (last %d of %d; status --json shows all):\n", n, len(hist))
		hist = hist[len(hist)-n:]
	} else {
		fmt.Fprintln(w, "history:")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, h := range hist {
		kind := string(h.Kind)
		if h.Rotation != "" {
			kind = h.Rotation + " " + kind
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", h.At.Local().Format("2006-01-02 15:04:05"), kind, orDefault(h.Actor, "-"), h.Detail)
	}
	tw.Flush()
}

func newStatus(rot *rekey.Rotation, prev, cur *sample) *status {
	st := &status{Rotation: rot.ID, State: rot.State, Reason: rot.Reason, Wave: rot.Wave, Waves: rot.Waves,
		MaxErrors: rot.MaxErrors, Keypair: rot.Keypair, Counts: rot.Counts, CreatedAt: rot.CreatedAt, FinishedAt: rot.FinishedAt,
		Region: rot.Region, ProjectID: rot.ProjectID, Retired: rot.Retired, RetireDue: rot.RetireDue, RetireError: rot.RetireError}
	for _, p := range rot.Parts {
		// A part's rate is its own average: only the whole is sampled.
		st.Parts = append(st.Parts, newStatus(p, nil, cur))
	}
	if rot.Parts != nil {
		total := rot.MaxErrorsTotal
		st.MaxErrorsTotal, st.OnRegionHalt = &total, string(rot.OnRegionHalt)
	}
	c := rot.Counts
	if c.Total > 0 {
		st.Percent = 100 * float64(c.Done()) / float64(c.Total)
	}
	switch {
	case prev != nil && cur.at.Sub(prev.at) > 0:
		st.Rate = float64(cur.done-prev.done) / cur.at.Sub(prev.at).Seconds()
	case rot.Finished():
		if d := rot.FinishedAt.Sub(rot.CreatedAt).Seconds(); d > 0 {
			st.Rate = float64(c.Done()-c.Skipped) / d
		}
	default:
		if d := cur.at.Sub(rot.CreatedAt).Seconds(); d > 0 {
			st.Rate = float64(c.Done()-c.Skipped) / d
		}
	}
	if left := c.Total - c.Done(); left > 0 && st.Rate > 0 {
		st.ETASeconds = float64(left) / st.Rate
	}
	return st
}

func (s *status) line() string {
	c := s.Counts
	eta := ""
	if s.ETASeconds > 0 {
		eta = " eta " + (time.Duration(s.ETASeconds) * time.Second).String()
	}
	wave, reason := "", ""
	if s.Waves > 1 {
		wave = fmt.Sprintf(" wave %d/%d", s.Wave, s.Waves)
	}
	if s.Reason != "" {
		reason = " — " + s.Reason
	}
	return fmt.Sprintf("%s %s%s %.1f%% done: %d succeeded, %d failed (%s), %d skipped, %d cancelled, %d running (%d verifying), %d pending of %d (%.1f servers/s%s)%s",
		s.Rotation, s.State, wave, s.Percent, c.Succeeded, c.Failed, s.budget(), c.Skipped, c.Cancelled, c.Running, c.Verifying, c.Pending, c.Total, s.Rate, eta, reason)
}

// budget says what failures may reach: the rotation's budget, or a
// rotation across regions' budget as a whole beside its parts'.
func (s *status) budget() string {
	if s.MaxErrorsTotal != nil && *s.MaxErrorsTotal >= 0 {
		return fmt.Sprintf("max %d across its parts, theirs summed %d", *s.MaxErrorsTotal, s.MaxErrors)
	}
	return fmt.Sprintf("max %d", s.MaxErrors)
}

// writeRetire writes the rotation's retire: its outcome, the one
// scheduled, the error of its last scheduled run.
func (s *status) writeRetire(w io.Writer) {
	if s.Retired != nil {
		fmt.Fprintf(w, "old keypairs retired at %s:\n", s.Retired.At.Format(time.RFC3339))
		writeRetirement(w, s.Retired, "  ")
	}
	if !s.RetireDue.IsZero() {
		fmt.Fprintf(w, "retire scheduled for %s\n", s.RetireDue.Format(time.RFC3339))
	}
	if s.RetireError != "" {
		fmt.Fprintf(w, "last scheduled retire failed: %s\n", s.RetireError)
	}
}

// bar is the live progress line of --watch in at most width columns: a
// bar, then the figures an operator looks for first (done, failures,
// state, ETA), then the rest, cut where the width ends.
func (s *status) bar(width int) string {
	c := s.Counts
	size := min(40, max(10, width/4))
	filled := int(s.Percent / 100 * float64(size))
	parts := []string{
		fmt.Sprintf("[%s%s] %.1f%%", strings.Repeat("#", filled), strings.Repeat(".", size-filled), s.Percent),
		fmt.Sprintf("%d/%d done", c.Done(), c.Total),
		fmt.Sprintf("%d failed (max %d)", c.Failed, s.MaxErrors),
		string(s.State),
	}
	if s.ETASeconds > 0 {
		parts = append(parts, "eta "+(time.Duration(s.ETASeconds)*time.Second).String())
	}
	if s.Waves > 1 {
		parts = append(parts, fmt.Sprintf("wave %d/%d", s.Wave, s.Waves))
	}
	parts = append(parts, fmt.Sprintf("%.1f/s", s.Rate), fmt.Sprintf("%d running (%d verifying)", c.Running, c.Verifying),
		fmt.Sprintf("%d pending", c.Pending), s.Rotation)
	if s.Reason != "" {
		parts = append(parts, s.Reason)
	}
	return fit(strings.Join(parts, "  "), width)
}

// fit cuts line to at most width columns (runes; the line is printable
// text), marking a cut with "…".
func fit(line string, width int) string {
	r := []rune(line)
	if width < 1 {
		return ""
	}
	if len(r) <= width {
		return line
	}
	return string(r[:width-1]) + "…"
}

func cmdList(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "list", "", "Lists rotations, newest first, with their state and progress.")
	limit := f.Int("limit", 20, "show at most `n` rotations")
	asJSON := f.Bool("json", false, "print JSON")
	if err := f.parse(args, 0); err != nil {
		return err
	}
	if *limit < 1 {
		return usagef("--limit %d: want at least 1", *limit)
	}
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer c.Close()
	rots, err := c.Rotations(ctx, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]*status, len(rots))
		for i, r := range rots {
			out[i] = newStatus(r, nil, &sample{at: time.Now(), done: r.Counts.Done()})
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	return writeList(e.stdout, rots)
}

func writeList(w io.Writer, rots []*rekey.Rotation) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROTATION\tSTATE\tKEYPAIR\tSERVERS\tDONE\tFAILED\tCREATED\tREGION/PROJECT")
	for _, r := range rots {
		pct := 0.0
		if r.Counts.Total > 0 {
			pct = 100 * float64(r.Counts.Done()) / float64(r.Counts.Total)
		}
		place := "-"
		if r.Region != "" || r.ProjectID != "" {
			place = orDefault(r.Region, "(default)") + "/" + orDefault(r.ProjectID, "(default)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f%%\t%d\t%s\t%s\n", r.ID, r.State, r.Keypair, r.Counts.Total, pct,
			r.Counts.Failed, r.CreatedAt.Format("01-02 15:04"), place)
	}
	return tw.Flush()
}

func cmdReport(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "report", "ROTATION",
		"Writes the per-server report: server, old and new keypair, request_id, job_id, attempts,\noutcome, error code and message, times.")
	format := f.String("format", "csv", "report `format`: csv or json")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	id, err := f.rotationArg()
	if err != nil {
		return err
	}
	if *format != "csv" && *format != "json" {
		return usagef("--format %q: want csv or json", *format)
	}
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer c.Close()
	return usage(c.WriteReport(ctx, id, e.stdout, rekey.ReportFormat(*format)))
}

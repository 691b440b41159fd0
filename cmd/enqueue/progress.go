package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// liveLine is a line of progress: on a terminal redrawn in place, cut to
// the terminal's width so that it never wraps ("\r\033[K" clears only the
// last line of a wrapped one); elsewhere written as a line of its own.
type liveLine struct {
	w        io.Writer
	terminal bool
	// width is the terminal's width in columns, asked at every redraw (the
	// terminal may be resized); 0 when unknown.
	width func() int
	drawn bool // a redraw is on the terminal's last line
}

// redraw draws line, given the columns it may fill, in place of the last.
func (l *liveLine) redraw(line func(width int) string) {
	w := 80
	if l.width != nil {
		if n := l.width(); n > 0 {
			w = n
		}
	}
	fmt.Fprintf(l.w, "\r\033[K%s", line(w-1))
	l.drawn = true
}

// println writes a line of its own, ending a redrawn line first.
func (l *liveLine) println(line string) {
	l.end()
	fmt.Fprintln(l.w, line)
}

// end leaves a redrawn line on the screen and moves below it.
func (l *liveLine) end() {
	if l.drawn {
		fmt.Fprintln(l.w)
		l.drawn = false
	}
}

// planProgress shows how enqueue's reads of the fleet go, on stderr (stdout
// is the rotation id's): redrawn at most 10 times a second on a terminal,
// a line every interval elsewhere, nothing when quiet.
type planProgress struct {
	line     liveLine
	interval time.Duration
	now      func() time.Time
	quiet    bool
	last     time.Time // of the last line or redraw
	// seen is the latest progress; printed tells whether a line was.
	seen    rekey.PlanProgress
	printed bool
}

// redrawEvery paces a terminal's redraws: faster is only flicker.
const redrawEvery = 100 * time.Millisecond

func (p *planProgress) show(pp rekey.PlanProgress) {
	p.seen = pp
	now := p.now()
	switch {
	case p.quiet:
	case pp.Done:
		// The last figures stay on the screen; on a pipe they close the
		// lines written so far (a quick plan writes none).
		if p.line.terminal && p.printed {
			p.line.redraw(func(w int) string { return progressBar(pp, w) })
			p.line.end()
		} else if p.printed {
			p.line.println(progressText(pp))
		}
	case p.line.terminal && now.Sub(p.last) >= redrawEvery:
		p.line.redraw(func(w int) string { return progressBar(pp, w) })
		p.last, p.printed = now, true
	case !p.line.terminal && now.Sub(p.last) >= p.interval:
		if p.last.IsZero() {
			p.last = now // the first line comes an interval after the start
			return
		}
		p.line.println(progressText(pp))
		p.last, p.printed = now, true
	}
}

// interrupted says what an interrupted start or dry run left: nothing, as
// long as the plan was not done; once it was, writing had begun, and the
// same command completes it.
func (p *planProgress) interrupted(ctx context.Context, err error, dryRun bool) error {
	if ctx.Err() == nil {
		return err // not interrupted: the error says what failed
	}
	p.line.end()
	switch {
	case dryRun:
		return errors.New("interrupted: nothing was written (a dry run writes nothing)")
	case !p.seen.Done:
		return fmt.Errorf("interrupted while reading the fleet (%s): nothing was written; run the same command again to start the rotation",
			pagesRead(p.seen))
	}
	return errors.New("interrupted while writing the rotation: part of it may be written; run the same command again to complete it (it enqueues nothing twice, and refuses, naming the difference, if the fleet has changed its plan meanwhile)")
}

// stepName says what a step of the plan does.
func stepName(step string) string {
	if step == rekey.StepDiscover {
		return "discovering"
	}
	return "reading keypairs"
}

// pagesRead is "page 12 of 340", or "before the first page".
func pagesRead(pp rekey.PlanProgress) string {
	if pp.Pages == 0 {
		return "before the first page"
	}
	return fmt.Sprintf("page %d of %d", pp.Pages, pp.TotalPages)
}

func percent(pp rekey.PlanProgress) float64 {
	if pp.TotalPages == 0 {
		return 0
	}
	return 100 * float64(pp.Pages) / float64(pp.TotalPages)
}

// progressParts are the figures of a line of progress, the ones a person
// looks for first first.
func progressParts(pp rekey.PlanProgress) []string {
	parts := []string{fmt.Sprintf("%d/%d pages", pp.Pages, pp.TotalPages)}
	if pp.Step == rekey.StepRead {
		parts = append(parts, fmt.Sprintf("%d/%d matched", pp.Matched, pp.Targets))
	}
	parts = append(parts, fmt.Sprintf("%.1f pages/s", pp.Rate()))
	if eta := pp.ETA(); eta > 0 {
		parts = append(parts, "eta "+eta.Round(time.Second).String())
	}
	if pp.Throttled > 0 {
		parts = append(parts, fmt.Sprintf("%d throttled (429)", pp.Throttled))
	}
	if pp.Retries > 0 {
		parts = append(parts, fmt.Sprintf("%d retries", pp.Retries))
	}
	return append(parts, fmt.Sprintf("%d servers listed", pp.Listed))
}

// progressBar is the line redrawn on a terminal, in at most width columns.
func progressBar(pp rekey.PlanProgress, width int) string {
	head := fmt.Sprintf("%s %.1f%%", stepName(pp.Step), percent(pp))
	return fit(strings.Join(append([]string{head}, progressParts(pp)...), "  "), width)
}

// progressText is the line written every interval when stderr is not a
// terminal.
func progressText(pp rekey.PlanProgress) string {
	return fmt.Sprintf("enqueue: %s: %.1f%%, %s", stepName(pp.Step), percent(pp), strings.Join(progressParts(pp), ", "))
}

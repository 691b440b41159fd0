package tasks

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ReportRow is one server's line in a rotation's report.
type ReportRow struct {
	ServerID    string    `json:"server_id"`
	OldKeypair  string    `json:"old_keypair"`
	NewKeypair  string    `json:"new_keypair"`
	RequestID   string    `json:"request_id"`
	JobID       string    `json:"job_id"`
	Attempts    int       `json:"attempts"`
	Outcome     Outcome   `json:"outcome"`
	ErrorCode   string    `json:"error_code"`
	ErrorMsg    string    `json:"error_msg"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// Region and ProjectID are the server's place; "" for a rotation in
	// the workers' own region and project.
	Region    string `json:"region"`
	ProjectID string `json:"project_id"`
	// Version is the row's contract version, ReportRowVersion (JSON only:
	// the CSV report's contract is its header row). It comes last, so rows
	// begin as they did before the contract was versioned.
	Version int `json:"version"`
}

// Report calls fn for every server of the rotation, chunk by chunk (skipped
// servers first), so memory stays bounded whatever the fleet size. Servers
// not terminal yet are reported pending or running, with their first
// attempt's request; a terminal server's row names its last attempt's. The
// report of a group is its parts' reports, one after another.
func (s *Store) Report(ctx context.Context, id string, fn func(ReportRow) error) error {
	rot, err := s.Rotation(ctx, id)
	if errors.Is(err, ErrNotFound) {
		g, gerr := s.Group(ctx, id)
		if gerr != nil {
			return err
		}
		for _, part := range g.Parts {
			if err := s.Report(ctx, part, fn); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	type submission struct {
		req string
		at  time.Time
	}
	subs := map[int]submission{}
	submissionOf := func(n int) (submission, error) {
		if sub, ok := subs[n]; ok {
			return sub, nil
		}
		v, err := s.rdb.HMGet(ctx, s.batchKey(id, n), "req", "at").Result()
		if err != nil {
			return submission{}, fmt.Errorf("report %s batch %d: %w", id, n, err)
		}
		var sub submission
		sub.req, _ = v[0].(string)
		if at, _ := v[1].(string); at != "" {
			ms, _ := strconv.ParseInt(at, 10, 64)
			sub.at = time.UnixMilli(ms).UTC()
		}
		subs[n] = sub
		return sub, nil
	}
	for c := 0; c <= rot.Chunks; c++ {
		chunk, err := s.Batch(ctx, id, c)
		if err != nil {
			return err
		}
		if len(chunk.Servers) == 0 {
			continue
		}
		ids := make([]string, len(chunk.Servers))
		for i, e := range chunk.Servers {
			ids[i] = e.ServerID
		}
		recs, err := s.rdb.HMGet(ctx, s.recordsKey(id), ids...).Result()
		if err != nil {
			return fmt.Errorf("report %s chunk %d: %w", id, c, err)
		}
		for i, e := range chunk.Servers {
			row := ReportRow{Version: ReportRowVersion, ServerID: e.ServerID, OldKeypair: e.OldKeypair, NewKeypair: e.Keypair,
				Region: rot.Region, ProjectID: rot.ProjectID}
			if v, ok := recs[i].(string); ok {
				r, err := decodeRecord(v)
				if err != nil {
					return fmt.Errorf("report %s server %s: %w", id, e.ServerID, err)
				}
				row.Outcome, row.Attempts, row.JobID, row.ErrorCode, row.ErrorMsg, row.FinishedAt =
					r.Outcome, r.Attempts, r.JobID, r.Code, r.Message, r.FinishedAt
				if r.Batch > 0 {
					sub, err := submissionOf(r.Batch)
					if err != nil {
						return err
					}
					row.RequestID, row.SubmittedAt = sub.req, sub.at
				}
			} else {
				row.Outcome, row.Attempts = OutcomePending, 1
				if chunk.Checkpointed {
					row.Outcome, row.RequestID, row.JobID, row.SubmittedAt = OutcomeRunning, chunk.RequestID, chunk.Jobs[e.ServerID], chunk.SubmittedAt.UTC()
				}
			}
			if err := fn(row); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReportColumns are the CSV report's columns.
var ReportColumns = []string{"server_id", "old_keypair", "new_keypair", "request_id", "job_id", "attempts",
	"outcome", "error_code", "error_msg", "submitted_at", "finished_at", "region", "project_id"}

// WriteReportCSV streams a rotation's report as CSV with a header row.
func (s *Store) WriteReportCSV(ctx context.Context, id string, w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(ReportColumns); err != nil {
		return err
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	err := s.Report(ctx, id, func(r ReportRow) error {
		return cw.Write([]string{cell(r.ServerID), cell(r.OldKeypair), cell(r.NewKeypair), cell(r.RequestID), cell(r.JobID),
			strconv.Itoa(r.Attempts), string(r.Outcome), cell(r.ErrorCode), cell(r.ErrorMsg), ts(r.SubmittedAt), ts(r.FinishedAt),
			r.Region, r.ProjectID})
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

// cell neutralises a CSV cell a spreadsheet would run as a formula
// (OWASP's rule: one starting with =, +, -, @, a tab or a carriage
// return gets a leading single quote). Ids, keypair names and messages
// come from the API, which the report must not let run on an operator's
// machine; the JSON report keeps them as they came.
func cell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// WriteReportJSON streams a rotation's report as a JSON array.
func (s *Store) WriteReportJSON(ctx context.Context, id string, w io.Writer) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	first := true
	enc := json.NewEncoder(w)
	err := s.Report(ctx, id, func(r ReportRow) error {
		if !first {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		first = false
		return enc.Encode(r)
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, "]\n")
	return err
}

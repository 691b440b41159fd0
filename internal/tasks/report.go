package tasks

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
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
}

// Report calls fn for every server of the rotation, chunk by chunk (skipped
// servers first), so memory stays bounded whatever the fleet size. Servers
// not terminal yet are reported pending or running.
func (s *Store) Report(ctx context.Context, id string, fn func(ReportRow) error) error {
	rot, err := s.Rotation(ctx, id)
	if err != nil {
		return err
	}
	for c := 0; c <= rot.Chunks; c++ {
		first, err := s.Attempt(ctx, id, c, 1)
		if err != nil {
			return err
		}
		if len(first.Servers) == 0 {
			continue
		}
		ids := make([]string, len(first.Servers))
		for i, e := range first.Servers {
			ids[i] = e.ServerID
		}
		recs, err := s.rdb.HMGet(ctx, s.recordsKey(id), ids...).Result()
		if err != nil {
			return fmt.Errorf("report %s chunk %d: %w", id, c, err)
		}
		attempts := map[int]*Attempt{1: first}
		attemptOf := func(n int) (*Attempt, error) {
			if a, ok := attempts[n]; ok {
				return a, nil
			}
			a, err := s.Attempt(ctx, id, c, n)
			attempts[n] = a
			return a, err
		}
		for i, e := range first.Servers {
			row := ReportRow{ServerID: e.ServerID, OldKeypair: e.OldKeypair, NewKeypair: e.Keypair}
			if v, ok := recs[i].(string); ok {
				r, err := decodeRecord(v)
				if err != nil {
					return fmt.Errorf("report %s server %s: %w", id, e.ServerID, err)
				}
				row.Outcome, row.Attempts, row.JobID, row.ErrorCode, row.ErrorMsg, row.FinishedAt =
					r.Outcome, r.Attempts, r.JobID, r.Code, r.Message, r.FinishedAt
				if r.Attempts > 0 {
					a, err := attemptOf(r.Attempts)
					if err != nil {
						return err
					}
					row.RequestID, row.SubmittedAt = a.RequestID, a.SubmittedAt.UTC()
				}
			} else if err := s.inFlight(&row, c, attemptOf); err != nil {
				return err
			}
			if err := fn(row); err != nil {
				return err
			}
		}
	}
	return nil
}

// inFlight fills the row of a server without a terminal record from the
// latest attempt that holds it.
func (s *Store) inFlight(row *ReportRow, chunk int, attemptOf func(int) (*Attempt, error)) error {
	row.Outcome = OutcomePending
	for n := 1; ; n++ {
		a, err := attemptOf(n)
		if err != nil {
			return err
		}
		if !contains(a.Servers, row.ServerID) {
			return nil
		}
		row.Attempts = n
		if a.Checkpointed && !a.Resolved[row.ServerID] {
			row.Outcome, row.RequestID, row.JobID, row.SubmittedAt = OutcomeRunning, a.RequestID, a.Jobs[row.ServerID], a.SubmittedAt.UTC()
		} else {
			row.Outcome = OutcomePending
		}
	}
}

func contains(es []Entry, id string) bool {
	for _, e := range es {
		if e.ServerID == id {
			return true
		}
	}
	return false
}

// ReportColumns are the CSV report's columns.
var ReportColumns = []string{"server_id", "old_keypair", "new_keypair", "request_id", "job_id", "attempts",
	"outcome", "error_code", "error_msg", "submitted_at", "finished_at"}

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
		return cw.Write([]string{r.ServerID, r.OldKeypair, r.NewKeypair, r.RequestID, r.JobID, strconv.Itoa(r.Attempts),
			string(r.Outcome), r.ErrorCode, r.ErrorMsg, ts(r.SubmittedAt), ts(r.FinishedAt)})
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
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

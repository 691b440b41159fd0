package rekey

import (
	"context"
	"io"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// ReportRowVersion is the version of the report row contract
// (docs/contracts.md, docs/schema/report-row.v1.json) that Row and the JSON
// report carry in their "version" field.
const ReportRowVersion = 1

// Outcome is a server's outcome in a rotation.
type Outcome string

// Outcomes. Pending and Running are not terminal: they appear in reports
// of rotations still in progress.
const (
	OutcomePending   Outcome = "pending"
	OutcomeRunning   Outcome = "running"
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeSkipped   Outcome = "skipped"
	OutcomeCancelled Outcome = "cancelled"
)

// Codes cph-rekey gives outcomes the CPH API did not name (Row.ErrorCode);
// other codes are CPH's own, e.g. CPS.0016 (invalid server).
const (
	// CodeVerifyMismatch: the job reported success but the keypair read
	// back is not the target. Not retried.
	CodeVerifyMismatch = "REKEY.VERIFY_MISMATCH"
	// CodeVerifyFailed: the read-back failed for good. Written by earlier
	// releases; CodeVerifyUnavailable replaces it.
	CodeVerifyFailed = "REKEY.VERIFY_FAILED"
	// CodeVerifyUnavailable: the job reported success but the keypair
	// could not be read back at all (every read kept failing for the
	// workers' --job-timeout). Not a mismatch: it may well have changed.
	CodeVerifyUnavailable = "REKEY.VERIFY_UNAVAILABLE"
	// CodeServerDeleted: the server was deleted while the rotation ran;
	// its row is skipped.
	CodeServerDeleted = "REKEY.SERVER_DELETED"
	// CodePollUnknown: a job's outcome could not be learned (still running
	// after the workers' --job-timeout, or ListJobs kept failing) and a
	// read-back found the server not on the target, with no attempt left.
	CodePollUnknown = "REKEY.JOB_UNKNOWN"
	// CodeJobTimeout: a job still running after the workers' --job-timeout.
	// Written by older versions only: such a job is now read back
	// (CodePollUnknown).
	CodeJobTimeout = "REKEY.JOB_TIMEOUT"
	// CodeMissingJob: the UpdateKeypair answer had no job for the server.
	CodeMissingJob = "REKEY.MISSING_JOB"
	// CodeSubmitFailed and CodePollFailed: UpdateKeypair or ListJobs kept
	// failing until the task's retries ran out. CodePollFailed is written
	// by older versions only: those jobs are now read back
	// (CodePollUnknown).
	CodeSubmitFailed = "REKEY.SUBMIT_FAILED"
	CodePollFailed   = "REKEY.POLL_FAILED"
)

// Row is one server's line in a rotation's report. Its JSON form is the
// report row contract, version ReportRowVersion.
type Row struct {
	ServerID   string `json:"server_id"`
	OldKeypair string `json:"old_keypair"` // "" when the plan did not read it (NoSkipMatching)
	NewKeypair string `json:"new_keypair"`
	// RequestID and JobID are the last attempt's UpdateKeypair request and
	// job ("" before the server's first submission).
	RequestID string  `json:"request_id"`
	JobID     string  `json:"job_id"`
	Attempts  int     `json:"attempts"`
	Outcome   Outcome `json:"outcome"`
	// ErrorCode and ErrorMsg say why a server failed or was cancelled:
	// CPH's code (e.g. CPS.0016) or cph-rekey's own (REKEY.VERIFY_MISMATCH…).
	ErrorCode   string    `json:"error_code"`
	ErrorMsg    string    `json:"error_msg"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// Region and ProjectID are the server's place: "" for a rotation in
	// the workers' own region and project.
	Region    string `json:"region"`
	ProjectID string `json:"project_id"`
	// Version is the contract version, ReportRowVersion (last, so rows
	// begin as they did before the contract was versioned).
	Version int `json:"version"`
}

// ReportColumns are the CSV report's header, in order. The CSV report has
// no version column: its contract is this header, read by name.
func ReportColumns() []string { return append([]string(nil), tasks.ReportColumns...) }

// Report calls fn for every server of rotation id, chunk by chunk (the
// skipped servers first), so memory stays bounded whatever the fleet
// size. An error from fn stops the report and is returned. The rotation
// may still be running: its servers then show pending or running.
func (c *Client) Report(ctx context.Context, id string, fn func(Row) error) error {
	if err := tasks.ValidateRotationID(id); err != nil {
		return &InputError{Err: err}
	}
	var fnErr error
	err := c.store.Report(ctx, id, func(r tasks.ReportRow) error {
		fnErr = fn(rowOf(r))
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	return wrap(err)
}

func rowOf(r tasks.ReportRow) Row {
	return Row{Version: r.Version, ServerID: r.ServerID, OldKeypair: r.OldKeypair, NewKeypair: r.NewKeypair,
		RequestID: r.RequestID, JobID: r.JobID, Attempts: r.Attempts, Outcome: Outcome(r.Outcome), ErrorCode: r.ErrorCode,
		ErrorMsg: r.ErrorMsg, SubmittedAt: r.SubmittedAt, FinishedAt: r.FinishedAt, Region: r.Region, ProjectID: r.ProjectID}
}

// ReportFormat is the layout WriteReport writes.
type ReportFormat string

// Report formats.
const (
	ReportCSV  ReportFormat = "csv"  // a header row (ReportColumns), then a row a server
	ReportJSON ReportFormat = "json" // an array of Row objects, one a line
)

// WriteReport streams rotation id's report to w in format f. It checks the
// rotation exists before it writes anything (ErrNotFound).
func (c *Client) WriteReport(ctx context.Context, id string, w io.Writer, f ReportFormat) error {
	if f != ReportCSV && f != ReportJSON {
		return badInput("report format %q: want csv or json", f)
	}
	if _, err := c.Rotation(ctx, id); err != nil {
		return err
	}
	if f == ReportJSON {
		return wrap(c.store.WriteReportJSON(ctx, id, w))
	}
	return wrap(c.store.WriteReportCSV(ctx, id, w))
}

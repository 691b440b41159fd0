package rekey

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/internal/targets"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Errors a tool can test with errors.Is.
var (
	// ErrNotFound: no rotation has the id (it never existed, or its
	// retention has ended).
	ErrNotFound = tasks.ErrNotFound
	// ErrConflict: a rotation with the id exists and was started for other
	// targets or options, or a start of it was cut short after it froze a
	// plan that this start's read of the fleet no longer gives (the error
	// names the first chunk that differs; Discard removes that plan, so the
	// start can be run again). Starting the same Request again
	// is not a conflict: it names the same rotation and enqueues nothing
	// twice.
	ErrConflict = tasks.ErrConflict
	// ErrRedisUnavailable: Redis could not be reached, or answered that it
	// cannot serve yet (loading, failing over, resharding). The request may
	// succeed when tried again; Wait rides through such errors itself.
	ErrRedisUnavailable = errors.New("redis unavailable")
	// ErrUnsupportedVersion: DecodeEvent was given an event of a contract
	// version this package does not know.
	ErrUnsupportedVersion = errors.New("unsupported contract version")
)

// InputError is bad input: a target list, a Request or a rotation id that
// cannot be used. Nothing was written when it is returned. It names where
// the first problem is (Line for a lines or CSV list, Element for a JSON
// list or Request.Targets; both 0 when the problem is about the Request as
// a whole) and keeps the further problems of the same input in More.
type InputError struct {
	Line    int // 1-based line of a lines or CSV target list; 0: not about a line
	Element int // 1-based element of a JSON list or of Request.Targets; 0: not about one
	Err     error
	// More are the input's further problems, in input order; Omitted
	// counts those found beyond the 20 kept.
	More    []*InputError
	Omitted int
}

// Error lists every kept problem on its own line ("line 7: …",
// "element 3 (index 2): …"), then how many more there were.
func (e *InputError) Error() string {
	var b strings.Builder
	b.WriteString(e.one())
	for _, m := range e.More {
		b.WriteByte('\n')
		b.WriteString(m.one())
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "\nand %d more", e.Omitted)
	}
	return b.String()
}

func (e *InputError) one() string {
	msg := "bad input"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	switch {
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, msg)
	case e.Element > 0:
		return fmt.Sprintf("element %d (index %d): %s", e.Element, e.Element-1, msg)
	}
	return msg
}

// Unwrap returns the first problem's cause.
func (e *InputError) Unwrap() error { return e.Err }

// inputError turns the target parser's problems into an *InputError.
func inputErrorOf(ie *targets.InputError) *InputError {
	var out *InputError
	for _, p := range ie.Problems {
		one := &InputError{Line: p.Line, Element: p.Element, Err: errors.New(p.Msg)}
		if out == nil {
			out = one
			continue
		}
		out.More = append(out.More, one)
	}
	if out == nil {
		out = &InputError{Err: errors.New("bad input")}
	}
	out.Omitted = ie.Omitted
	return out
}

func badInput(format string, args ...any) *InputError {
	return &InputError{Err: fmt.Errorf(format, args...)}
}

// Class says what a caller may do about an API error.
type Class string

// API error classes, as internal/cph classifies CPH's answers.
const (
	// ClassThrottled: HTTP 429 or APIGW.0308. Wait and try again; not a
	// failure of the request itself.
	ClassThrottled Class = "throttled"
	// ClassTransient: 5xx, timeouts, dropped connections. Try again with
	// backoff.
	ClassTransient Class = "transient"
	// ClassPermanent: other 4xx (bad credentials, unknown project, invalid
	// arguments). Trying again will not help.
	ClassPermanent Class = "permanent"
)

// APIError is a failed call to the CPH API (reading the fleet for a plan,
// discovery or skip-matching). Errors of the rotation's own calls are not
// returned: they are recorded per server in the report.
type APIError struct {
	Op         string // the CPH API, e.g. "ListCloudPhoneServers"
	Class      Class
	StatusCode int    // HTTP status; 0 when no complete answer was read
	Code       string // CPH's error_code, e.g. "APIGW.0301"
	Message    string // CPH's error_msg
	RequestID  string
	// Err is the error as the CPH client returned it.
	Err error
}

// Error describes the call and CPH's answer; it never contains credentials.
func (e *APIError) Error() string { return e.Err.Error() }

// Unwrap returns the CPH client's error.
func (e *APIError) Unwrap() error { return e.Err }

// wrap maps the errors of the internal packages onto the public ones:
// CPH errors become *APIError, Redis being away ErrRedisUnavailable; the
// sentinels are shared and need no mapping. The internal errors already
// say what failed, so the text is kept.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	var ce *cph.Error
	var ae *APIError
	var ie *InputError
	switch {
	case errors.As(err, &ae), errors.As(err, &ie):
		// already public
	case errors.As(err, &ce):
		err = &APIError{Op: ce.Op, Class: classOf(ce.Kind), StatusCode: ce.StatusCode, Code: ce.Code,
			Message: ce.Message, RequestID: ce.RequestID, Err: err}
	case errors.Is(err, ErrRedisUnavailable):
	case redisurl.Transient(err):
		err = redisError{err}
	}
	return err
}

func classOf(k cph.Kind) Class {
	switch k {
	case cph.KindThrottled:
		return ClassThrottled
	case cph.KindTransient:
		return ClassTransient
	}
	return ClassPermanent
}

// redisError is a Redis error that ErrRedisUnavailable matches; its text
// is the error's own, which names the operation and the cause.
type redisError struct{ err error }

func (e redisError) Error() string   { return e.err.Error() }
func (e redisError) Unwrap() []error { return []error{ErrRedisUnavailable, e.err} }

package cph

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kind says what a caller may do about an error.
type Kind int

const (
	// KindPermanent errors fail the same way when repeated: bad input,
	// authentication, permission, unknown resources.
	KindPermanent Kind = iota
	// KindTransient errors may go away when the request is repeated later:
	// 5xx answers, timeouts, dropped connections, garbled answers.
	KindTransient
	// KindThrottled errors mean the API quota is exhausted: repeat after
	// RetryAfter (or a backoff), and do not count it as a failed attempt.
	KindThrottled
)

// String names the kind for logs and metrics.
func (k Kind) String() string {
	switch k {
	case KindPermanent:
		return "permanent"
	case KindTransient:
		return "transient"
	case KindThrottled:
		return "throttled"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Retryable reports whether repeating the request may succeed: true for
// transient and throttled errors.
func (k Kind) Retryable() bool { return k == KindTransient || k == KindThrottled }

// Error codes the client classifies. CPS codes come from the CPH error code
// table; CPH documents no code for an unknown keypair or a server in the
// wrong state, so CodeServerAbnormal and CodeKeypairNotFound are this
// project's names for those failures (the simulator emits them).
const (
	// CodeThrottled is the API gateway's throttling code (HTTP 429).
	CodeThrottled = "APIGW.0308"
	// CodeThrottledLegacy is the older gateway's throttling code.
	CodeThrottledLegacy = "APIG.0308"
	// CodeAuthFailed is the gateway's "Incorrect IAM authentication information" (HTTP 401).
	CodeAuthFailed = "APIGW.0301"
	// CodeAPINotFound is the gateway's "API does not exist" (HTTP 404).
	CodeAPINotFound = "APIGW.0101"
	// CodeNoPermission is CPH's "No permission to request resources."
	CodeNoPermission = "CPS.0001"
	// CodeBadPaging is CPH's "Parameter: offset or limit is invalid."
	CodeBadPaging = "CPS.0002"
	// CodeInvalidParameter is CPH's invalid parameter code (e.g. "Invalid phone id.").
	CodeInvalidParameter = "CPS.0004"
	// CodeNotFound is CPH's "Phone is not found."
	CodeNotFound = "CPS.0005"
	// CodeJobNotFound is CPH's "Job not found." (ShowJob, HTTP 404).
	CodeJobNotFound = "CPS.0011"
	// CodeInvalidServer is CPH's "server_id is invalid."
	CodeInvalidServer = "CPS.0016"
	// CodeServerAbnormal: the server is not in a state that allows the change.
	CodeServerAbnormal = "CPS.9002"
	// CodeKeypairNotFound: the keypair named in the request does not exist.
	CodeKeypairNotFound = "CPS.9003"
)

// ClassifyCode classifies the error code of a failed job or of a rejected
// server in an UpdateKeypair answer. Codes that name a bad request, an
// unknown or invalid server or keypair, or a missing permission are
// permanent; throttling codes are throttled. Every other code, including
// the empty one, is transient: a rotation retries what it cannot name,
// bounded by its attempt limit, rather than give up on a server for a
// reason it does not understand.
func ClassifyCode(code string) Kind {
	switch code {
	case CodeThrottled, CodeThrottledLegacy:
		return KindThrottled
	case CodeAuthFailed, CodeAPINotFound, CodeNoPermission, CodeBadPaging, CodeInvalidParameter,
		CodeNotFound, CodeJobNotFound, CodeInvalidServer, CodeServerAbnormal, CodeKeypairNotFound:
		return KindPermanent
	}
	return KindTransient
}

// Error is the error of every Client call. Either the API answered with an
// error (StatusCode, Code, Message, RequestID set) or the call failed
// before a complete answer arrived or could be decoded (Err set).
// Error strings name the operation and never contain credentials.
type Error struct {
	// Op is the CPH API called, e.g. "UpdateKeypair".
	Op string
	// StatusCode is the HTTP status of a complete answer; 0 when none was
	// read (connection failure, timeout, body cut short). A 2xx status with
	// Err set is an answer whose body could not be decoded: the API may
	// have acted on the request.
	StatusCode int
	// Code and Message are error_code and error_msg of the answer.
	Code, Message string
	// RequestID is the answer's request_id, or its X-Request-Id header.
	RequestID string
	// RetryAfter is the answer's Retry-After, 0 when absent.
	RetryAfter time.Duration
	// Kind classifies the error.
	Kind Kind
	// Err is the underlying cause, if any.
	Err error
}

// Error formats the error as "cph: Op: HTTP status code: message (request_id …): cause".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("cph: ")
	b.WriteString(e.Op)
	if e.StatusCode != 0 {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request_id ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// KindOf classifies err. A *Error anywhere in the chain gives its Kind
// (every error of a Client call is one). Other errors are classified by
// cause: timeouts (including context.DeadlineExceeded), refused or reset
// connections, broken pipes, DNS failures and (unexpected) EOF are
// transient; everything else, notably context.Canceled, is permanent. A
// cancelled context means the caller gave up, which repeating the request
// cannot fix; callers that shut down should check their ctx.Err() before
// looking at the kind. KindOf(nil) is KindPermanent, which only matters to
// callers that ask about no error.
func KindOf(err error) Kind {
	if err == nil {
		return KindPermanent
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	k, _ := causeKind(err)
	return k
}

// causeKind classifies an error that is not an answer of the API, and says
// whether it recognised the cause (unrecognised causes are permanent).
func causeKind(err error) (Kind, bool) {
	var (
		certErr    *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		netErr     net.Error
		opErr      *net.OpError
		dnsErr     *net.DNSError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return KindPermanent, true
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidErr):
		// A certificate that does not verify is a configuration problem
		// (or an attack); repeating the request will not fix it.
		return KindPermanent, true
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout(),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, net.ErrClosed),
		errors.As(err, &opErr), errors.As(err, &dnsErr):
		return KindTransient, true
	}
	return KindPermanent, false
}

// transportKind classifies the failure of a request that got no complete
// answer. Unlike KindOf it treats unrecognised causes as transient: the
// request may never have reached the API, and a rotation retries what it
// cannot name, bounded by its attempt limit.
func transportKind(err error) Kind {
	if k, ok := causeKind(err); ok {
		return k
	}
	return KindTransient
}

// IsThrottled reports whether err is a throttling error (HTTP 429 or a
// gateway throttling code).
func IsThrottled(err error) bool { return err != nil && KindOf(err) == KindThrottled }

// IsTransient reports whether err is transient. Throttling errors are
// retryable too but are not transient: they have their own IsThrottled, so
// callers can wait for quota without counting a failed attempt.
func IsTransient(err error) bool { return err != nil && KindOf(err) == KindTransient }

// RetryAfter returns how long the API asked the caller to wait (the
// Retry-After header of the answer), or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// statusKind classifies an error answer by its HTTP status and code.
func statusKind(status int, code string) Kind {
	switch {
	case status == http.StatusTooManyRequests || code == CodeThrottled || code == CodeThrottledLegacy:
		return KindThrottled
	case status >= 500, status == http.StatusRequestTimeout:
		return KindTransient
	}
	return KindPermanent
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date
// (relative to now). Absent, unparsable or past values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, maxRetryAfterSeconds)) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfterSeconds*time.Second)
}

// maxRetryAfterSeconds caps a Retry-After so a broken gateway cannot stall
// a caller for ever.
const maxRetryAfterSeconds = 3600

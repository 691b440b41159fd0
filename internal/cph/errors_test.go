package cph

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestKindOf(t *testing.T) {
	urlErr := func(err error) error { return &url.Error{Op: "Get", URL: "https://cph.example.com/v1", Err: err} }
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, KindPermanent},
		{"*Error keeps its kind", &Error{Op: "ListJobs", Kind: KindThrottled}, KindThrottled},
		{"wrapped *Error", fmt.Errorf("poll: %w", &Error{Op: "ListJobs", Kind: KindTransient}), KindTransient},
		{"deadline", urlErr(context.DeadlineExceeded), KindTransient},
		{"canceled by caller", urlErr(context.Canceled), KindPermanent},
		{"unexpected EOF", urlErr(io.ErrUnexpectedEOF), KindTransient},
		{"EOF", urlErr(io.EOF), KindTransient},
		{"connection reset", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), KindTransient},
		{"connection refused", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), KindTransient},
		{"DNS", urlErr(&net.DNSError{Err: "server misbehaving", Name: "cph.cn-east-3.myhuaweicloud.com"}), KindTransient},
		{"dial timeout", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}), KindTransient},
		{"certificate", urlErr(&tls.CertificateVerificationError{Err: errors.New("x509: certificate signed by unknown authority")}), KindPermanent},
		{"something else", errors.New("bad input"), KindPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.want {
				t.Errorf("KindOf(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestTransportKindRetriesTheUnknown(t *testing.T) {
	if got := transportKind(errors.New("http2: stream reset")); got != KindTransient {
		t.Errorf("unknown transport failure = %s, want transient", got)
	}
	if got := transportKind(context.Canceled); got != KindPermanent {
		t.Errorf("cancel = %s, want permanent", got)
	}
}

func TestClassifyCode(t *testing.T) {
	tests := []struct {
		code string
		want Kind
	}{
		{CodeThrottled, KindThrottled},
		{CodeThrottledLegacy, KindThrottled},
		{CodeInvalidServer, KindPermanent},
		{CodeInvalidParameter, KindPermanent},
		{CodeNotFound, KindPermanent},
		{CodeKeypairNotFound, KindPermanent},
		{CodeServerAbnormal, KindPermanent},
		{CodeNoPermission, KindPermanent},
		{CodeAuthFailed, KindPermanent},
		{"CPS.9001", KindTransient},
		{"CPS.1234", KindTransient},
		{"", KindTransient},
	}
	for _, tt := range tests {
		if got := ClassifyCode(tt.code); got != tt.want {
			t.Errorf("ClassifyCode(%q) = %s, want %s", tt.code, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 12 ", 12 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999", time.Hour},
		{testNow.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{testNow.Add(-time.Minute).Format(http.TimeFormat), 0},
		{testNow.Add(48 * time.Hour).Format(time.RFC850), time.Hour},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.v, testNow); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.v, got, tt.want)
		}
	}
}

func TestKindAndErrorStrings(t *testing.T) {
	for k, want := range map[Kind]string{KindPermanent: "permanent", KindTransient: "transient", KindThrottled: "throttled", Kind(9): "Kind(9)"} {
		if k.String() != want {
			t.Errorf("Kind %d String = %s, want %s", int(k), k, want)
		}
	}
	if KindPermanent.Retryable() || !KindTransient.Retryable() || !KindThrottled.Retryable() {
		t.Error("Retryable: only transient and throttled errors are")
	}
	cause := io.ErrUnexpectedEOF
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Op: "ListJobs", StatusCode: 429, Code: "APIGW.0308", Message: "throttled", RequestID: "r1"},
			"cph: ListJobs: HTTP 429 APIGW.0308: throttled (request_id r1)"},
		{&Error{Op: "ShowJob", Err: cause}, "cph: ShowJob: unexpected EOF"},
		{&Error{Op: "UpdateKeypair", StatusCode: 200, RequestID: "r2", Err: errors.New("decode answer")},
			"cph: UpdateKeypair: HTTP 200 (request_id r2): decode answer"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !errors.Is(tests[1].err, io.ErrUnexpectedEOF) {
		t.Error("Unwrap does not reach the cause")
	}
	if RetryAfter(errors.New("x")) != 0 || IsThrottled(nil) || IsTransient(nil) {
		t.Error("helpers must be false/zero for foreign and nil errors")
	}
}

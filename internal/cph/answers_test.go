package cph

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestSecretsScrubbedBeforeTruncation sends error answers that echo a
// credential across the place where the client cuts them: no part of the
// credential long enough to matter may survive the cut.
func TestSecretsScrubbedBeforeTruncation(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
	}{
		// The message is cut at 512 bytes, in the middle of the SK.
		{"error_msg cut inside a secret", 400,
			`{"error_code":"CPS.0004","error_msg":"` + strings.Repeat("x", 500) + testSK + ` tail"}`},
		// A non-JSON body is shown up to 200 bytes.
		{"non-JSON body cut inside a secret", 502, strings.Repeat("y", 190) + testSK + " tail"},
		// A control character inside the secret is dropped before the scrub
		// looks for it.
		{"secret split by a control character", 400,
			`{"error_code":"CPS.0004","error_msg":"echo ` + testSK[:10] + `\u0007` + testSK[10:] + `"}`},
		{"secret in the request id", 400,
			`{"error_code":"CPS.0004","error_msg":"bad","request_id":"` + strings.Repeat("r", 120) + testSK + `"}`},
		{"secret in the code", 400, `{"error_code":"` + testSK + `","error_msg":"bad"}`},
		{"secret in a 2xx answer that is not JSON", 200, strings.Repeat("z", 190) + testSK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, &recorder{reply: jsonReply(tt.status, tt.body)})
			_, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
			if err == nil {
				t.Fatal("UpdateKeypair succeeded, want an error")
			}
			assertNoSecrets(t, err)
			// A piece of a secret helps whoever reads the log: no 8 bytes
			// of it may show.
			for i := 0; i+8 <= len(testSK); i++ {
				if part := testSK[i : i+8]; strings.Contains(err.Error(), part) {
					t.Fatalf("error shows %q of the secret key: %s", part, err)
				}
			}
		})
	}
}

// TestAnswersWithForgedFields: ids and codes end up in tab- and
// newline-separated records, so an answer carrying one that holds anything
// but an id's or a code's characters is refused as a malformed answer
// (transient, status kept: the API may have acted).
func TestAnswersWithForgedFields(t *testing.T) {
	ctx := context.Background()
	update := func(c *Client) error {
		_, err := c.UpdateKeypair(ctx, []ServerKeypair{{"s1", "kp"}, {"s2", "kp"}})
		return err
	}
	listJobs := func(c *Client) error {
		_, err := c.ListJobs(ctx, "r1")
		return err
	}
	tests := []struct {
		name string
		body string
		call func(*Client) error
		want string // in the error
	}{
		{"job id with a tab and a newline", `{"request_id":"r1","jobs":[{"server_id":"s1","job_id":"j1\t2\nforged\tkp"}]}`, update, "job_id"},
		{"request id with a newline", `{"request_id":"r1\nj:s9","jobs":[{"server_id":"s1","job_id":"j1"}]}`, update, "request_id"},
		{"server id with a tab", `{"request_id":"r1","jobs":[{"server_id":"s1\tx","job_id":"j1"}]}`, update, "server_id"},
		{"per-server code with a tab", `{"request_id":"r1","jobs":[{"server_id":"s1","error_code":"CPS.0004\tforged","error_msg":"m"}]}`, update, "error_code"},
		{"overlong code", `{"request_id":"r1","jobs":[{"server_id":"s1","error_code":"` + strings.Repeat("C", 65) + `"}]}`, update, "error_code"},
		{"listed job id with a newline", `{"request_id":"r1","jobs":[{"job_id":"j1\nforged","server_id":"s1","status":2}]}`, listJobs, "job_id"},
		{"listed job code with a space", `{"request_id":"r1","jobs":[{"job_id":"j1","server_id":"s1","status":-1,"error_code":"CPS 1"}]}`, listJobs, "error_code"},
		{"listed server id with a newline", `{"request_id":"r1","count":1,"servers":[{"server_id":"s1\ns2","keypair_name":"kp"}]}`,
			func(c *Client) error { _, err := c.ListServersPage(ctx, 0, 100); return err }, "server_id"},
		{"shown job id with a tab", `{"job_id":"j1\tx","status":2}`,
			func(c *Client) error { _, err := c.ShowJob(ctx, "j1"); return err }, "job_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, &recorder{reply: jsonReply(http.StatusOK, tt.body)})
			err := tt.call(c)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.StatusCode != http.StatusOK || e.Kind != KindTransient || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v (status %d, %s), want a transient 200 naming %s", err, e.StatusCode, e.Kind, tt.want)
			}
			if strings.ContainsAny(err.Error(), "\t\n") {
				t.Errorf("error %q holds a tab or a newline", err)
			}
		})
	}
}

// TestAnswersKeepValidFields: the checks take what CPH sends, including
// UUID-shaped ids, empty fields and null ones.
func TestAnswersKeepValidFields(t *testing.T) {
	body := `{"request_id":"6837531fd3f54550927b930180a706bf","jobs":[
		{"server_id":"1e223c8e-3ad0-4bf0-a837-bc90d4f91d01","job_id":"1564567b8bab40f34711234cb80d0123"},
		{"server_id":"2347275010d3440d963d3fcb8931ff55","error_code":"CPS.0016","error_msg":"server_id is invalid.\tsee docs"},
		{"server_id":"s3","job_id":null,"error_code":""}]}`
	c := newTestClient(t, &recorder{reply: jsonReply(http.StatusOK, body)})
	resp, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
	if err != nil {
		t.Fatalf("UpdateKeypair: %v", err)
	}
	if len(resp.Jobs) != 3 || resp.Jobs[1].ErrorCode != CodeInvalidServer {
		t.Errorf("jobs = %+v", resp.Jobs)
	}
}

// TestErrorAnswerCodeCleaned: an error answer is an error whatever its
// code, so a code holding other characters is cleaned, not refused.
func TestErrorAnswerCodeCleaned(t *testing.T) {
	c := newTestClient(t, &recorder{reply: jsonReply(http.StatusBadRequest, `{"error_code":"CPS.0004\t\nforged kp","error_msg":"m"}`)})
	_, err := c.UpdateKeypair(context.Background(), []ServerKeypair{{"s1", "kp"}})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if e.Code != "CPS.0004forgedkp" || e.Kind != KindPermanent {
		t.Errorf("code %q kind %s, want CPS.0004forgedkp, permanent", e.Code, e.Kind)
	}
}

package cph

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestReadRetries checks that reads are tried again after a 429 or a 5xx
// when ReadRetries allows, and that writes never are.
func TestReadRetries(t *testing.T) {
	tests := []struct {
		name      string
		retries   int
		failures  int // answers that fail before the first success
		status    int
		write     bool
		wantErr   bool
		wantCalls int32
	}{
		{name: "no retries", retries: 0, failures: 1, status: 429, wantErr: true, wantCalls: 1},
		{name: "429 then ok", retries: 3, failures: 2, status: 429, wantCalls: 3},
		{name: "503 then ok", retries: 3, failures: 1, status: 503, wantCalls: 2},
		{name: "retries run out", retries: 2, failures: 5, status: 503, wantErr: true, wantCalls: 3},
		{name: "permanent not retried", retries: 3, failures: 1, status: 400, wantErr: true, wantCalls: 1},
		{name: "write not retried", retries: 3, failures: 1, status: 503, write: true, wantErr: true, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				w.Header().Set("Content-Type", "application/json")
				if int(n) <= tt.failures {
					if tt.status == 429 {
						w.Header().Set("Retry-After", "0")
					}
					w.WriteHeader(tt.status)
					w.Write([]byte(`{"error_code":"X","error_msg":"failing on purpose"}`))
					return
				}
				if r.Method == http.MethodPut {
					w.Write([]byte(`{"request_id":"r","jobs":[{"server_id":"s","job_id":"j"}]}`))
					return
				}
				w.Write([]byte(`{"server_id":"s","keypair_name":"kp","status":5}`))
			}))
			t.Cleanup(srv.Close)
			c, err := NewClient(Config{Endpoint: srv.URL, ProjectID: "p", ReadRetries: tt.retries,
				Credentials: Credentials{AccessKey: "AK", SecretKey: "SK"}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.write {
				_, err = c.UpdateKeypair(context.Background(), []ServerKeypair{{ServerID: "s", KeypairName: "kp"}})
			} else {
				_, err = c.ShowServer(context.Background(), "s")
			}
			if (err != nil) != tt.wantErr || calls.Load() != tt.wantCalls {
				t.Fatalf("err %v after %d calls; want error %v after %d", err, calls.Load(), tt.wantErr, tt.wantCalls)
			}
		})
	}
}

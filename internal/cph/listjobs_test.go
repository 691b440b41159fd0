package cph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// TestListJobsOfStopsAtExpected checks that a request of exactly one page
// of jobs costs one call, where ListJobs must read the empty page after it.
func TestListJobsOfStopsAtExpected(t *testing.T) {
	tests := []struct {
		jobs            int
		wantOf, wantAll int32
	}{
		{jobs: 100, wantOf: 1, wantAll: 2},
		{jobs: 150, wantOf: 2, wantAll: 2},
		{jobs: 40, wantOf: 1, wantAll: 1},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.jobs), func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
				var resp ListJobsResponse
				for i := offset; i < min(offset+JobsPageSize, tt.jobs); i++ {
					resp.Jobs = append(resp.Jobs, Job{JobID: fmt.Sprintf("job%03d", i), Status: JobRunning})
				}
				json.NewEncoder(w).Encode(resp)
			}))
			t.Cleanup(srv.Close)
			c, err := NewClient(Config{Endpoint: srv.URL, ProjectID: "p", Credentials: Credentials{AccessKey: "AK", SecretKey: "SK"}})
			if err != nil {
				t.Fatal(err)
			}
			jobs, err := c.ListJobsOf(context.Background(), tt.jobs, "req")
			if err != nil || len(jobs) != tt.jobs || calls.Load() != tt.wantOf {
				t.Fatalf("ListJobsOf: %d jobs, %v, %d calls; want %d jobs in %d calls", len(jobs), err, calls.Load(), tt.jobs, tt.wantOf)
			}
			calls.Store(0)
			if jobs, err = c.ListJobs(context.Background(), "req"); err != nil || len(jobs) != tt.jobs || calls.Load() != tt.wantAll {
				t.Fatalf("ListJobs: %d jobs, %v, %d calls; want %d jobs in %d calls", len(jobs), err, calls.Load(), tt.jobs, tt.wantAll)
			}
		})
	}
}

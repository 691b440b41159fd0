package cph

import (
	"context"
	"net/http"
	"reflect"
	"testing"
)

func TestTolerantDecoding(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		body string
		call func(c *Client) (any, error)
		want any
	}{
		{
			name: "ShowJob with nulls, as documented",
			body: `{"error_msg":null,"execute_msg":null,"job_id":"6837531fd3f54550927b930180a706bf",
				"phone_id":"9b28fbe50ded4060b8149a47e55dba82","end_time":"2019-04-26T07:00:06Z",
				"begin_time":"2019-04-26T07:00:00Z","error_code":null,
				"request_id":"2676a3b4f7df49c297c6775989806d32","status":2}`,
			call: func(c *Client) (any, error) { return c.ShowJob(ctx, "6837531fd3f54550927b930180a706bf") },
			want: &Job{RequestID: "2676a3b4f7df49c297c6775989806d32", JobID: "6837531fd3f54550927b930180a706bf",
				PhoneID: "9b28fbe50ded4060b8149a47e55dba82", Status: JobSucceeded,
				BeginTime: "2019-04-26T07:00:00Z", EndTime: "2019-04-26T07:00:06Z"},
		},
		{
			name: "ShowJob with null status and unknown fields",
			body: `{"job_id":"j1","status":null,"server_id":null,"new_field":{"nested":[1,2]},"another":true}`,
			call: func(c *Client) (any, error) { return c.ShowJob(ctx, "j1") },
			want: &Job{JobID: "j1"},
		},
		{
			name: "ListJobs with empty strings, UUID ids and no count",
			body: `{"request_id":"6a63a18b8bab40ffb71ebd9cb80d0085","jobs":[{"phone_id":"1234567b8bab40ffb711234cb80d0234",
				"server_id":"1e223c8e-3ad0-4bf0-a837-bc90d4f91d01","node_id":"1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
				"job_id":"1564567b8bab40f34711234cb80d0123","begin_time":"2017-10-25T00:00:00Z","end_time":"2017-10-25T00:00:32Z",
				"status":2,"error_code":"","error_msg":"","encode_server_id":"x"}]}`,
			call: func(c *Client) (any, error) { return c.ListJobs(ctx, "6a63a18b8bab40ffb71ebd9cb80d0085") },
			want: []Job{{PhoneID: "1234567b8bab40ffb711234cb80d0234", ServerID: "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01",
				NodeID: "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01", JobID: "1564567b8bab40f34711234cb80d0123",
				BeginTime: "2017-10-25T00:00:00Z", EndTime: "2017-10-25T00:00:32Z", Status: JobSucceeded}},
		},
		{
			name: "ListJobs with jobs null",
			body: `{"request_id":"q","jobs":null}`,
			call: func(c *Client) (any, error) { return c.ListJobs(ctx, "r1") },
			want: []Job(nil),
		},
		{
			name: "UpdateKeypair with per-server errors and no job_id",
			body: `{"request_id":"6837531fd3f54550927b930180a706bf","jobs":[
				{"server_id":"ae4d231e44d2a4ccf612660a473fe1e3","job_id":"1564567b8bab40f34711234cb80d0123"},
				{"server_id":"2347275010d3440d963d3fcb8931ff55","error_code":"CPS.0016","error_msg":"server_id is invalid."},
				{"server_id":"3347275010d3440d963d3fcb8931ff55","job_id":null,"error_code":null,"error_msg":null}]}`,
			call: func(c *Client) (any, error) {
				return c.UpdateKeypair(ctx, []ServerKeypair{{"ae4d231e44d2a4ccf612660a473fe1e3", "kp"}})
			},
			want: &UpdateKeypairResponse{RequestID: "6837531fd3f54550927b930180a706bf", Jobs: []ServerJob{
				{ServerID: "ae4d231e44d2a4ccf612660a473fe1e3", JobID: "1564567b8bab40f34711234cb80d0123"},
				{ServerID: "2347275010d3440d963d3fcb8931ff55", ErrorCode: "CPS.0016", ErrorMsg: "server_id is invalid."},
				{ServerID: "3347275010d3440d963d3fcb8931ff55"},
			}},
		},
		{
			name: "ShowServer with extra detail fields",
			body: `{"server_id":"6edb89150bc742aa81fc8ac4ff047297","keypair_name":"KeyPair-1230","status":5,
				"addresses":[{"server_ip":"10.0.0.1","public_ip":null}],"metadata":{"charging_mode":1},
				"band_widths":[],"volumes":null,"request_id":"r"}`,
			call: func(c *Client) (any, error) { return c.ShowServer(ctx, "6edb89150bc742aa81fc8ac4ff047297") },
			want: &Server{ServerID: "6edb89150bc742aa81fc8ac4ff047297", KeypairName: "KeyPair-1230", Status: ServerStatusNormal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, &recorder{reply: jsonReply(http.StatusOK, tt.body)})
			got, err := tt.call(c)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestFailedServerJobs(t *testing.T) {
	tests := []struct {
		job    ServerJob
		failed bool
	}{
		{ServerJob{ServerID: "s", JobID: "j"}, false},
		{ServerJob{ServerID: "s", ErrorCode: "CPS.0016"}, true},
		{ServerJob{ServerID: "s"}, true},
	}
	for _, tt := range tests {
		if tt.job.Failed() != tt.failed {
			t.Errorf("%+v Failed() = %v", tt.job, !tt.failed)
		}
	}
}

func TestUnknownJobStatusIsRunning(t *testing.T) {
	for _, s := range []JobStatus{0, 1, 3, -2, 99} {
		if s.Done() {
			t.Errorf("status %d counts as done; only 2 and -1 end a job", s)
		}
	}
	if !JobSucceeded.Done() || !JobFailed.Done() {
		t.Error("2 and -1 must be done")
	}
}

// FuzzDecodeAnswers feeds arbitrary bodies to the decoding of every answer
// type and of error answers: it must never panic, and an error answer must
// always come out classified with a bounded, single-line message.
func FuzzDecodeAnswers(f *testing.F) {
	seeds := []string{
		`{"request_id":"r","jobs":[{"server_id":"s","job_id":"j"},{"server_id":"t","error_code":"CPS.0016","error_msg":"bad"}]}`,
		`{"request_id":"r","jobs":[{"job_id":"j","status":2,"error_code":null}]}`,
		`{"request_id":"r","count":3,"servers":[{"server_id":"s","keypair_name":"kp","status":5}]}`,
		`{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached","request_id":"x"}`,
		`{"code":"X","message":"y"}`,
		`<html><body>502 Bad Gateway</body></html>`,
		`{"jobs":"nope"}`, `{"status":"2"}`, `{"count":-1}`, `null`, `[]`, ``, `{`, "\xff\xfe", `{"error_msg":"\u0000\n"}`,
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint16(200+100*(i%4)))
	}
	c, err := NewClient(testConfig("http://127.0.0.1:1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, status uint16) {
		_ = decode(body, new(UpdateKeypairResponse))
		_ = decode(body, new(ListJobsResponse))
		_ = decode(body, new(ListServersResponse))
		_ = decode(body, new(Job))
		_ = decode(body, new(Server))
		e := c.apiError("Fuzz", int(status), http.Header{"Retry-After": {string(body)}}, body)
		if e.Kind < KindPermanent || e.Kind > KindThrottled || e.Message == "" && status >= 100 && status < 600 && http.StatusText(int(status)) != "" {
			t.Fatalf("apiError = %+v", e)
		}
		if len(e.Message) > 600 || len(e.Code) > 70 || len(e.RequestID) > 140 {
			t.Fatalf("unbounded fields: %d/%d/%d bytes", len(e.Message), len(e.Code), len(e.RequestID))
		}
		for _, r := range e.Error() {
			if r == '\n' || r == '\r' || r == 0 {
				t.Fatalf("control character in %q", e.Error())
			}
		}
	})
}

package cph_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// fakeCPH answers like CPH does: one job per accepted server, a per-server
// error for a rejected one, and the jobs' states on ListJobs.
func fakeCPH(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/cloud-phone/servers/open-access"):
		io.WriteString(w, `{"request_id":"6837531fd3f54550927b930180a706bf","jobs":[
			{"server_id":"ae4d231e44d2a4ccf612660a473fe1e3","job_id":"1564567b8bab40f34711234cb80d0123"},
			{"server_id":"2347275010d3440d963d3fcb8931ff55","error_code":"CPS.0016","error_msg":"server_id is invalid."}]}`)
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/cloud-phone/jobs"):
		io.WriteString(w, `{"request_id":"2676a3b4f7df49c297c6775989806d32","jobs":[
			{"server_id":"ae4d231e44d2a4ccf612660a473fe1e3","job_id":"1564567b8bab40f34711234cb80d0123","status":2}]}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error_code":"APIGW.0101","error_msg":"The API does not exist or has not been published."}`)
	}
}

func Example() {
	srv := httptest.NewServer(http.HandlerFunc(fakeCPH))
	defer srv.Close()

	client, err := cph.NewClient(cph.Config{
		Endpoint:    srv.URL, // in production: Region: "cn-east-3"
		ProjectID:   "0123456789abcdef0123456789abcdef",
		Credentials: cph.Credentials{AccessKey: "AK", SecretKey: "SK"}, // cph.CredentialsFromEnv(os.Getenv)
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	resp, err := client.UpdateKeypair(ctx, []cph.ServerKeypair{
		{ServerID: "ae4d231e44d2a4ccf612660a473fe1e3", KeypairName: "kp-2026"},
		{ServerID: "2347275010d3440d963d3fcb8931ff55", KeypairName: "kp-2026"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, j := range resp.Jobs {
		if j.Failed() {
			fmt.Printf("%s rejected: %s (%s)\n", j.ServerID, j.ErrorCode, cph.ClassifyCode(j.ErrorCode))
		}
	}

	jobs, err := client.ListJobs(ctx, resp.RequestID)
	if err != nil {
		log.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Printf("%s done=%v status=%d\n", j.ServerID, j.Status.Done(), j.Status)
	}

	_, err = client.ShowServer(ctx, "ae4d231e44d2a4ccf612660a473fe1e3")
	fmt.Println(err, "| kind:", cph.KindOf(err))
	// Output:
	// 2347275010d3440d963d3fcb8931ff55 rejected: CPS.0016 (permanent)
	// ae4d231e44d2a4ccf612660a473fe1e3 done=true status=2
	// cph: ShowCloudPhoneServerDetail: HTTP 404 APIGW.0101: The API does not exist or has not been published. | kind: permanent
}

// A rotation decides what to do with a failed call from its kind alone.
func ExampleKindOf() {
	for _, err := range []error{
		&cph.Error{Op: "UpdateKeypair", StatusCode: 429, Code: cph.CodeThrottled, Kind: cph.KindThrottled},
		&cph.Error{Op: "ListJobs", StatusCode: 503, Kind: cph.KindTransient},
		&cph.Error{Op: "UpdateKeypair", StatusCode: 401, Code: cph.CodeAuthFailed, Kind: cph.KindPermanent},
	} {
		switch {
		case cph.IsThrottled(err):
			fmt.Println("wait for quota, retry; not a failed attempt:", err)
		case cph.IsTransient(err):
			fmt.Println("retry with backoff:", err)
		default:
			fmt.Println("give up:", err)
		}
	}
	// Output:
	// wait for quota, retry; not a failed attempt: cph: UpdateKeypair: HTTP 429 APIGW.0308
	// retry with backoff: cph: ListJobs: HTTP 503
	// give up: cph: UpdateKeypair: HTTP 401 APIGW.0301
}

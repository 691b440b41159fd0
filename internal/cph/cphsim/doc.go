// Package cphsim is a faithful in-process simulator of the Huawei Cloud Phone
// (CPH) API calls a keypair rotation uses, for tests, the demo and the
// benchmarks. It is to the CPH API what httptest.NewServer is to HTTP:
//
//	sim := cphsim.New(cphsim.Options{
//		ProjectID: "0123456789abcdef0123456789abcdef",
//		AccessKey: "AK", SecretKey: "SK",
//		Servers:   1000,
//		JobLatency: 2 * time.Second, JobJitter: time.Second,
//		UpdateKeypairQuota: 10, ListJobsQuota: 20,
//	})
//	srv := httptest.NewServer(sim)
//	defer srv.Close()
//	// point a cph.Client at srv.URL, rotate, then inspect:
//	kp, _ := sim.Keypair(serverID)
//	st := sim.Stats()
//
// It serves UpdateKeypair, ShowJob, ListJobs, ListCloudPhoneServers and
// ShowCloudPhoneServerDetail under /v1/{project_id}/cloud-phone/, the Key
// Pair Service's ShowKeypair, ListKeypairs (by marker), CreateKeypair (an
// import of a public key) and DeleteKeypair under /v3/{project_id}/keypairs
// (the KMS host's paths: point a KPS client at the same URL), verifies
// SDK-HMAC-SHA256 signatures the way the API gateway does, throttles each
// API with a token bucket (HTTP 429 APIGW.0308), and injects the faults a
// client must survive: 5xx answers, slow answers, dropped connections
// (optionally after UpdateKeypair created its jobs), transient and permanent
// job failures, servers that always fail, and jobs that lie about success.
//
// The fleet moves while it runs, as a real one does, when Options.CreateRate
// or DeleteRate (or Sim.SetChurn) say so: created servers come on top of the
// newest-first list and push every other one down a place, deleted ones
// vanish from the API.
//
// Jobs and churn progress without goroutines: a job's outcome is drawn when
// it is created and applied when the simulated clock passes its due time,
// and servers are created and deleted as the clock passes their instants,
// the next time anyone looks. A test drives time with Options.Clock instead
// of sleeping.
//
// Request handling order, and so which error a request that is wrong in
// several ways gets: unknown route (404 APIGW.0101), body too large (413),
// authentication (401 APIGW.0301/0303), project and IAM policy (403
// CPS.0001, see Options.Deny), throttling (429 APIGW.0308), injected faults
// (drop, 5xx, delay), then the API itself (400/404 CPS.xxxx or 200). Every
// answer then waits Options.Latency before it is sent.
//
// Unauthenticated paths under /_sim/ serve the simulator's own state as JSON
// for tests in other processes (GET /_sim/stats, /_sim/servers,
// /_sim/deleted) and change it at run time (PUT /_sim/quota, POST
// /_sim/churn, POST /_sim/deny). Bind the simulator to loopback only.
package cphsim

// Package cph is a small client for the Huawei Cloud Phone (CPH) API: the
// calls a keypair rotation needs (UpdateKeypair, ListJobs, ShowJob,
// ListCloudPhoneServers, ShowCloudPhoneServerDetail), AK/SK request signing
// ("SDK-HMAC-SHA256", stdlib only) and typed errors classified as throttled,
// transient or permanent.
//
// It knows nothing about queues or rotations; internal/tasks builds on it.
//
//	client, err := cph.NewClient(cph.Config{
//		Region:      "cn-east-3",
//		ProjectID:   os.Getenv("HUAWEICLOUD_SDK_PROJECT_ID"),
//		Credentials: cph.CredentialsFromEnv(os.Getenv),
//	})
//	resp, err := client.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: id, KeypairName: "kp-2026"}})
//	jobs, err := client.ListJobs(ctx, resp.RequestID)
package cph

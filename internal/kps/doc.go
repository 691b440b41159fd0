// Package kps is a small client for the Huawei Cloud Key Pair Service (KPS,
// part of DEW): the keypair calls a rotation needs, ShowKeypair,
// ListKeypairs (every page, by marker), CreateKeypair with a public key
// (an import) and DeleteKeypair, on the KMS host
// https://kms.{region}.myhuaweicloud.com under /v3/{project_id}/keypairs.
//
// It rides on internal/cph's client: the same AK/SK signing, transport,
// read retries and typed errors (*cph.Error, classified permanent,
// transient or throttled), so nothing is signed or classified twice. A
// Client serves one (region, project); build one per project a rotation
// touches.
//
// It never asks KPS to generate a pair: the private key of a generated pair
// comes back in the answer, and a rotation's private key must never pass
// through an API. Generate the pair locally and Import its public key.
//
//	client, err := kps.NewClient(kps.Config{
//		Endpoint:    kps.EndpointFor("cn-east-3", os.Getenv),
//		ProjectID:   os.Getenv("HUAWEICLOUD_SDK_PROJECT_ID"),
//		Credentials: cph.CredentialsFromEnv(os.Getenv),
//	})
//	kp, err := client.Show(ctx, "kp-2026")
//	if kps.IsNotFound(err) {
//		// the rotation's keypair is missing in this project
//	}
package kps

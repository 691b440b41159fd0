// Package rekey is the Go client of cph-rekey for fleet-rotation tools:
// start a keypair rotation of Huawei Cloud Phone servers, watch it, wait
// for it, read its per-server report, pause, resume, cancel or roll it
// back, retire its old keypairs (Retire, ScheduleRetire), and react to its
// completion event. It is what the enqueue command
// is built on, as asynq.Client is for asynq.
//
// A Client talks to the Redis the workers use (cmd/worker, scaled pods);
// the workers do the rotating, under the fleet-wide rate limit:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "redis.internal:6379"})
//	cph := rekey.CPHFromEnv(os.Getenv) // HUAWEICLOUD_SDK_AK, _SK, _PROJECT_ID
//	cph.Region = "cn-east-3"
//	client, err := rekey.NewClient(rdb, rekey.Options{CPH: cph})
//	…
//	targets, err := rekey.ParseTargets(file, rekey.FormatAuto) // or Request.Discover
//	st, err := client.Start(ctx, rekey.Request{
//		Keypair:   "kp-2026-11",
//		Targets:   targets,
//		Waves:     []rekey.Size{rekey.Servers(1), rekey.Percent(10)}, // canaries, then the rest
//		MaxErrors: &rekey.Size{N: 5},
//	})
//	…
//	rot, err := client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{})
//	if rot.State != rekey.StateSucceeded { … }
//	err = client.Report(ctx, rot.ID, func(r rekey.Row) error { … })
//
// A Request's zero values are enqueue start's defaults: chunks of 100
// servers, 3 attempts per server, the fleet read first (servers already on
// the keypair are skipped and old keypairs recorded for Rollback), every
// changed keypair read back, an error budget of 10 %, records kept for 30
// days. Plan is the dry run: it reads the fleet and says what Start would
// do, writing nothing. Starting the same Request twice names the same
// rotation and enqueues nothing twice.
//
// # Namespaces
//
// Deployments sharing one Redis are told apart by their namespace (the
// workers' --namespace): a Client of Options.Namespace sees, starts and
// steers that deployment's rotations only. The console of a worker and the
// enqueue command go through a Client too, so a rotation is steered the
// same way from everywhere.
//
// # The completion event
//
// When a rotation ends, exactly one task of type EventTaskType
// ("rotation:finished") is enqueued on the EventQueue ("rekey-events")
// queue (EventQueueIn(namespace) in a namespace), with an Event as its
// JSON payload. Tools consume it with an asynq
// server and EventHandler, or decode it from elsewhere with DecodeEvent.
//
// # Contracts
//
// The event and the JSON report rows carry a "version" field (EventVersion,
// ReportRowVersion). Fields are added without a version change; a version
// changes only when a field is removed or changes meaning. Every field is
// described in docs/contracts.md, with a JSON Schema for each in
// docs/schema/.
//
// # Errors
//
// Errors can be tested with errors.Is and errors.As: ErrNotFound,
// ErrConflict (the id names a rotation of other targets), ErrRedisUnavailable,
// *InputError (bad input, with the line or element at fault; nothing was
// written) and *APIError (a CPH call failed, with its class and code).
//
// # Tests
//
// Package rekeytest runs real rotations in a tool's own tests: it starts an
// in-process Redis, the CPH simulator and a worker, and hands back a ready
// Client.
package rekey

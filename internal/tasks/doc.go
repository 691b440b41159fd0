// Package tasks is the rotation pipeline: the rotation record and its state
// in Redis, the chunked submit and poll tasks and their handlers, retries of
// failed servers, and the per-server report.
//
// The data path reads forward through the files:
//
//	enqueue.go  Start freezes the targets into a rotation and enqueues one submit task per chunk
//	submit.go   a submit task waits for a token, calls UpdateKeypair and checkpoints the answer first
//	poll.go     a poll task lists the chunk's jobs and records each server's outcome exactly once
//	store.go    every Redis key and script: checkpoints, outcomes, counters (nothing else talks to Redis)
//	report.go   the per-server report, streamed chunk by chunk
//
// Two kinds of retry are kept apart. An API call that fails for a transient
// reason (5xx, timeout, dropped connection) is retried by asynq with the
// same chunk attempt, so it never duplicates a checkpointed submission. A
// server whose job failed transiently goes into a new submit task of its own
// chunk with attempt+1, up to the rotation's max attempts. Rate-limit waits
// and 429s are neither: they put the task back without counting anything.
package tasks

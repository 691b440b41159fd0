package rekey_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// Start a rotation of a 200-server fleet on the CPH simulator, wait for
// it, and print the outcome. rekeytest provides Redis, the simulator and
// a worker; against a real fleet, the client is built the same way on the
// workers' Redis with Options.CPH set from the environment.
func Example() {
	env, err := rekeytest.Start(rekeytest.Options{Servers: 200})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	client := env.Client // rekey.NewClient(rdb, rekey.Options{CPH: cph}) in a tool

	st, err := client.Start(ctx, rekey.Request{
		Keypair: "kp-2026",
		Targets: env.Targets(),
		Waves:   []rekey.Size{rekey.Servers(10), rekey.Percent(100)}, // a canary wave of 10, then the rest
	})
	if err != nil {
		log.Fatal(err)
	}
	rot, err := client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	c := rot.Counts
	fmt.Printf("%s: %d of %d succeeded, %d failed, %d skipped, in %d waves\n", rot.State, c.Succeeded, c.Total, c.Failed, c.Skipped, rot.Waves)

	failed := 0
	err = client.Report(ctx, rot.ID, func(r rekey.Row) error {
		if r.Outcome != rekey.OutcomeSucceeded {
			failed++
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("report rows not succeeded:", failed)
	// Output:
	// succeeded: 200 of 200 succeeded, 0 failed, 0 skipped, in 2 waves
	// report rows not succeeded: 0
}

// Consume completion events: a tool runs an asynq server on the
// rekey-events queue with rekey.EventHandler.
func ExampleEventHandler() {
	env, err := rekeytest.Start(rekeytest.Options{Servers: 50})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()

	events := make(chan *rekey.Event, 1)
	srv := asynq.NewServerFromRedisClient(env.Redis, asynq.Config{
		Queues:   map[string]int{rekey.EventQueue: 1},
		LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(rekey.EventTaskType, rekey.EventHandler(func(ctx context.Context, e *rekey.Event) error {
		events <- e
		return nil
	}))
	if err := srv.Start(mux); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	st, err := env.Client.Start(ctx, rekey.Request{ID: "r-events", Keypair: "kp-2026", Targets: env.Targets()})
	if err != nil {
		log.Fatal(err)
	}
	e := <-events
	fmt.Printf("event v%d: %s %s, %d succeeded (started %d servers)\n", e.Version, e.Rotation, e.State, e.Counts.Succeeded, st.Rotation.Counts.Total)
	// Output:
	// event v1: r-events succeeded, 50 succeeded (started 50 servers)
}

// Parse a target list; a bad line rejects the whole list and says where.
func ExampleParseTargets() {
	_, err := rekey.ParseTargets(strings.NewReader("ae4d231e44d2a4ccf612660a473fe1e3\nnot an id\n"), rekey.FormatAuto)
	fmt.Println(err)
	ts, _ := rekey.ParseTargets(strings.NewReader("server_id,keypair_name\nae4d231e44d2a4ccf612660a473fe1e3,kp-canary\n"), rekey.FormatAuto)
	fmt.Printf("%+v\n", ts)
	// Output:
	// line 2: server id "not an id" contains a space
	// [{ServerID:ae4d231e44d2a4ccf612660a473fe1e3 Keypair:kp-canary Region: ProjectID:}]
}

// DecodeEvent reads a completion event from any transport.
func ExampleDecodeEvent() {
	e, err := rekey.DecodeEvent([]byte(`{"version":1,"rotation":"r-1","state":"completed_with_errors","keypair":"kp-2026",
		"counts":{"total":10,"succeeded":9,"failed":1},"created_at":"2026-12-01T10:00:00Z","finished_at":"2026-12-01T10:02:00Z"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Rotation, e.State, e.Counts.Failed, e.FinishedAt.Sub(e.CreatedAt))
	// Output: r-1 completed_with_errors 1 2m0s
}

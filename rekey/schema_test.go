package rekey_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// schema compiles one of docs/schema's files, with format assertions on
// (date-time), and returns it with the properties it declares.
func schema(t *testing.T, name string) (*jsonschema.Schema, map[string]bool) {
	t.Helper()
	path := filepath.Join("..", "docs", "schema", name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(name, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(name)
	if err != nil {
		t.Fatalf("compile %s: %v", path, err)
	}
	var decl struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(raw, &decl); err != nil {
		t.Fatal(err)
	}
	props := map[string]bool{}
	for k := range decl.Properties {
		props[k] = true
	}
	return sch, props
}

// validate checks payload against sch, and that every field it has is
// declared: the published schemas allow unknown fields (consumers must
// ignore additions), so this is what keeps the docs complete.
func validate(t *testing.T, sch *jsonschema.Schema, props map[string]bool, payload []byte) {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("payload %s\ndoes not match the schema: %v", payload, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		t.Fatal(err)
	}
	for k := range fields {
		if !props[k] {
			t.Errorf("field %q of %s is not in the schema (and docs/contracts.md)", k, payload)
		}
	}
}

// TestContractsMatchRealPayloads runs real rotations (one with faults, so
// failed rows and error codes appear; one without a worker, so pending
// rows do) and checks the completion event a tool receives on the
// rekey-events queue and every JSON report row against docs/schema.
func TestContractsMatchRealPayloads(t *testing.T) {
	t.Parallel()
	eventSchema, eventProps := schema(t, "event.v1.json")
	rowSchema, rowProps := schema(t, "report-row.v1.json")
	ctx := context.Background()
	env := rekeytest.New(t, rekeytest.Options{Servers: 120, BadServerRate: 0.05, JobFailRate: 0.1})

	payloads := make(chan []byte, 1)
	srv := asynq.NewServerFromRedisClient(env.Redis, asynq.Config{Queues: map[string]int{rekey.EventQueue: 1},
		TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc(rekey.EventTaskType, func(ctx context.Context, task *asynq.Task) error {
		payloads <- task.Payload()
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	targets := env.Targets()
	// Ten servers are already on the keypair: skipped rows.
	if _, err := env.Client.Start(ctx, rekey.Request{ID: "first", Keypair: "kp-new", Targets: targets[:10]}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.Wait(ctx, "first", rekey.WaitOptions{Interval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	<-payloads
	st, err := env.Client.Start(ctx, rekey.Request{ID: "second", Keypair: "kp-new", Targets: targets, MaxAttempts: 2,
		MaxErrors: &rekey.Size{N: 100, Percent: true}, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rot.Counts.Failed == 0 || rot.Counts.Skipped == 0 {
		t.Fatalf("counts %+v: want failures and skipped servers to check", rot.Counts)
	}

	var payload []byte
	select {
	case payload = <-payloads:
	case <-time.After(30 * time.Second):
		t.Fatal("no completion event on the rekey-events queue")
	}
	validate(t, eventSchema, eventProps, payload)
	e, err := rekey.DecodeEvent(payload)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != rekey.EventVersion || e.Rotation != "second" || e.State != rot.State || e.Counts != rot.Counts {
		t.Fatalf("event %+v, want the rotation's end %+v", e, rot)
	}
	if n := len(e.History); n < 3 || e.History[0].Kind != rekey.HistoryCreated || e.History[0].Actor != "alice" ||
		e.History[n-1].Kind != rekey.HistoryFinished {
		t.Fatalf("event's history %+v: want the creation by alice first, the finish last", e.History)
	}
	// What rekey writes itself matches too.
	own, _ := json.Marshal(e)
	validate(t, eventSchema, eventProps, own)

	outcomes := map[rekey.Outcome]int{}
	checkReport := func(id string) {
		var buf bytes.Buffer
		if err := env.Client.WriteReport(ctx, id, &buf, rekey.ReportJSON); err != nil {
			t.Fatal(err)
		}
		var rows []json.RawMessage
		if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
			t.Fatalf("JSON report: %v\n%s", err, buf.String())
		}
		for _, row := range rows {
			validate(t, rowSchema, rowProps, row)
		}
		n := 0
		err := env.Client.Report(ctx, id, func(r rekey.Row) error {
			b, _ := json.Marshal(r)
			if !bytes.Equal(b, rows[n]) {
				t.Errorf("Row %s\nreport %s", b, rows[n])
			}
			n++
			outcomes[r.Outcome]++
			return nil
		})
		if err != nil || n != len(rows) {
			t.Fatalf("Report: %d rows, %v; JSON report: %d rows", n, err, len(rows))
		}
	}
	checkReport("second")

	// Rows of a rotation in progress: pending.
	idle := rekeytest.New(t, rekeytest.Options{Servers: 5, NoWorker: true})
	if _, err := idle.Client.Start(ctx, rekey.Request{ID: "idle", Keypair: "kp-new", Targets: idle.Targets()}); err != nil {
		t.Fatal(err)
	}
	env = idle
	checkReport("idle")
	for _, o := range []rekey.Outcome{rekey.OutcomeSucceeded, rekey.OutcomeFailed, rekey.OutcomeSkipped, rekey.OutcomePending} {
		if outcomes[o] == 0 {
			t.Errorf("no %s row was checked (outcomes %v)", o, outcomes)
		}
	}

	// The CSV report's contract is its header.
	var csv bytes.Buffer
	if err := idle.Client.WriteReport(ctx, "idle", &csv, rekey.ReportCSV); err != nil {
		t.Fatal(err)
	}
	header, _, _ := strings.Cut(csv.String(), "\n")
	if !slices.Equal(strings.Split(header, ","), rekey.ReportColumns()) {
		t.Fatalf("CSV header %q, want %v", header, rekey.ReportColumns())
	}
}

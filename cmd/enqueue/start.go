package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/targets"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

func cmdStart(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "start", "[FILE|-]",
		"Starts a rotation: reads the target servers from FILE (or stdin with -), or discovers them with\n"+
			"--discover; validates all of it first (nothing is written if any line is bad); then freezes the\n"+
			"list into a rotation and enqueues one submit task per chunk. Prints the rotation id.")
	keypair := f.String("keypair", "", "the keypair every server must end on (required)")
	format := f.String("format", "auto", "input `format`: auto, lines, csv or json")
	chunkSize := f.Int("chunk-size", tasks.DefaultChunkSize, "servers per UpdateKeypair call (1-100)")
	maxAttempts := f.Int("max-attempts", tasks.DefaultMaxAttempts, "attempts per server before a transient failure is final (1-20)")
	rotationID := f.String("rotation-id", "", "rotation `id`; default derived from the input, so re-running the same command enqueues nothing twice")
	skipMatching := f.Bool("skip-matching", true, "read current keypairs first and skip servers already on the target keypair")
	discover := f.Bool("discover", false, "take the targets from ListCloudPhoneServers instead of a file")
	name := f.String("name", "", "with --discover, only servers whose name contains `text`")
	status := f.String("status", "", "with --discover, only servers in this `status` (5 = normal)")
	region := f.String("region", "", "CPH `region` (for --discover and --skip-matching)")
	endpoint := f.String("endpoint", "", "CPH endpoint `url`, overrides --region")
	asJSON := f.Bool("json", false, "print the result as JSON")
	nargs := 1
	if hasFlag(args, "discover") {
		nargs = 0
	}
	if err := f.parse(args, nargs); err != nil {
		return err
	}
	if *keypair == "" {
		return usagef("--keypair is required")
	}
	fmtArg, err := targets.ParseFormat(*format)
	if err != nil {
		return usagef("--format: %v", err)
	}
	var statusFilter *int
	if *status != "" {
		n, err := strconv.Atoi(*status)
		if err != nil {
			return usagef("--status %q: want a number (5 = normal)", *status)
		}
		statusFilter = &n
	}
	if !*discover && (*name != "" || statusFilter != nil) {
		return usagef("--name and --status filter discovery: use them with --discover")
	}

	var client *cph.Client
	if *discover || *skipMatching {
		if *region == "" && *endpoint == "" {
			return usagef("--discover and --skip-matching read the fleet: set --region or --endpoint (or --skip-matching=false)")
		}
		client, err = cph.NewClient(cph.Config{Region: *region, Endpoint: *endpoint,
			ProjectID: e.getenv("HUAWEICLOUD_SDK_PROJECT_ID"), Credentials: cph.CredentialsFromEnv(e.getenv)})
		if err != nil {
			return usageError{err}
		}
	}

	var list []tasks.Target
	if *discover {
		err = client.ListServers(ctx, cph.ServerFilter{ServerName: *name, Status: statusFilter}, func(page []cph.Server) error {
			for _, s := range page {
				list = append(list, tasks.Target{ServerID: s.ServerID})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("discover servers: %w", err)
		}
		if len(list) == 0 {
			return usagef("discovery found no servers")
		}
	} else if list, err = readTargets(e, f.Arg(0), fmtArg); err != nil {
		return err
	}

	spec := tasks.Spec{ID: *rotationID, Keypair: *keypair, Targets: list, ChunkSize: *chunkSize,
		MaxAttempts: *maxAttempts, SkipMatching: *skipMatching}
	rdb, store, _, err := f.connect()
	if err != nil {
		return err
	}
	defer rdb.Close()
	var lister tasks.ServerLister
	if client != nil {
		lister = client
	}
	plan, err := tasks.MakePlan(ctx, spec, lister)
	if err != nil {
		var ce *cph.Error
		if errors.As(err, &ce) {
			return err
		}
		return usageError{err}
	}
	enq := asynq.NewClientFromRedisClient(rdb)
	defer enq.Close()
	st, err := tasks.Start(ctx, store, enq, plan, tasks.TaskOptions{}, time.Now())
	if err != nil {
		if errors.Is(err, tasks.ErrConflict) {
			return usageError{err}
		}
		return err
	}
	return printStarted(e.stdout, *asJSON, st, plan)
}

func printStarted(w io.Writer, asJSON bool, st *tasks.Started, plan *tasks.Plan) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{
			"rotation": st.Rotation.ID, "created": st.Created, "enqueued": st.Enqueued,
			"servers": st.Rotation.Counts.Total, "chunks": st.Rotation.Chunks, "skipped": st.Rotation.Counts.Skipped,
			"not_found": len(plan.NotFound), "abnormal": len(plan.Abnormal), "state": st.Rotation.State,
		})
	}
	_, err := fmt.Fprintln(w, st.Rotation.ID)
	return err
}

// readTargets reads and validates the target list; any problem is bad input.
func readTargets(e *env, path string, format targets.Format) ([]tasks.Target, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, usageError{err}
		}
		defer fh.Close()
		r = fh
	}
	ts, err := targets.Parse(r, format)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", displayName(path), err)}
	}
	out := make([]tasks.Target, len(ts))
	for i, t := range ts {
		out[i] = tasks.Target{ServerID: t.ServerID, Keypair: t.KeypairName}
	}
	return out, nil
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// hasFlag reports whether args set boolean flag name to true, before flag
// parsing decides how many arguments the command takes.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || a == name+"=true" {
			return true
		}
	}
	return false
}

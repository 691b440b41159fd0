// Command worker runs cph-rekey's asynq server: it takes submit and poll
// tasks off Redis, calls the CPH API under the fleet-wide rate limit, and
// serves the asynq web UI, /metrics, /healthz and /readyz on its admin port.
//
//	HUAWEICLOUD_SDK_AK=… HUAWEICLOUD_SDK_SK=… HUAWEICLOUD_SDK_PROJECT_ID=… \
//	REDIS_URL=redis://127.0.0.1:6379 worker --region cn-east-3
//
// With --demo it runs everything in one process: an in-process Redis, the
// CPH simulator, a rotation of a few thousand servers and the web UI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitUsage
	}
	if cfg.demo {
		err = runDemo(ctx, cfg, stdout, stderr)
	} else {
		err = runWorker(ctx, cfg, stderr, nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// Command enqueue is the operator's and tools' CLI for cph-rekey: it starts
// rotations (from a list or from discovery), dry-runs them, shows their
// status, exports their per-server report, pauses, resumes or cancels
// them, rolls them back, retires their old keypairs, and discards the
// plan of a start cut short.
//
//	enqueue start --dry-run --keypair kp-2026 servers.txt
//	enqueue start --keypair kp-2026 --waves 1,10,10% --max-errors 5 servers.txt
//	enqueue status --watch r-3f2a…
//	enqueue report --format csv r-3f2a… > report.csv
//
// The rotation id goes to stdout (JSON with --json) so tools can script it.
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error as bad usage or bad input (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// env is what a command reads from its surroundings, so tests can run
// commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal and width are stdout's: whether it is a terminal, and
	// its width in columns, asked at every redraw (the terminal may be
	// resized; 0 when unknown). errTerminal and errWidth are stderr's.
	isTerminal, errTerminal bool
	width, errWidth         func() int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out, errOut := int(os.Stdout.Fd()), int(os.Stderr.Fd())
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		isTerminal: term.IsTerminal(out), width: width(out),
		errTerminal: term.IsTerminal(errOut), errWidth: width(errOut)}
	os.Exit(run(ctx, os.Args[1:], e))
}

// width returns the width of the terminal on fd, 0 when it has none.
func width(fd int) func() int {
	return func() int {
		w, _, err := term.GetSize(fd)
		if err != nil {
			return 0
		}
		return w
	}
}

var commands = []struct {
	name, summary string
	run           func(ctx context.Context, args []string, e *env) error
}{
	{"start", "start a rotation from a list of servers or from discovery", cmdStart},
	{"status", "show a rotation's progress (--watch for a live bar, --wait to block until it ends)", cmdStatus},
	{"report", "export a rotation's per-server report as CSV or JSON", cmdReport},
	{"list", "list rotations with their state and progress", cmdList},
	{"pause", "stop new submissions of a rotation (in-flight chunks finish)", cmdPause},
	{"resume", "resume a paused or halted rotation (--max-errors raises the error budget)", cmdResume},
	{"cancel", "cancel a rotation: in-flight calls end, every remaining server is recorded cancelled", cmdCancel},
	{"discard", "discard the plan of a start cut short before its rotation was created", cmdDiscard},
	{"rollback", "start a rotation putting every server a rotation changed back on its old keypair", cmdRollback},
	{"retire", "delete a finished rotation's old keypairs from KPS where no server still uses them", cmdRetire},
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], e)
		var ue usageError
		var ended endedError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, errHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "enqueue %s: %v\n", c.name, err)
			return exitUsage
		case errors.As(err, &ended):
			return ended.exitCode()
		}
		fmt.Fprintf(e.stderr, "enqueue %s: %v\n", c.name, err)
		return exitFailure
	}
	fmt.Fprintf(e.stderr, "enqueue: unknown command %q\n\n", args[0])
	printUsage(e.stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: enqueue <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'enqueue <command> --help' for a command's flags; every flag also reads an environment variable.\n")
	fmt.Fprintf(w, "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.\n")
}

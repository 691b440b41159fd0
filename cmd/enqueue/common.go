package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os/user"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/envflag"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/rekey"
)

var (
	errHelp = errors.New("help shown")
)

// flags is a command's flag set with the flags every command has.
type flags struct {
	*envflag.FlagSet
	redis     *redisurl.Flags
	namespace *string
	actor     *string // --actor, of the commands that write
	e         *env
	args      string
}

func newFlags(e *env, name, args, summary string) *flags {
	f := &flags{FlagSet: envflag.New("enqueue "+name, "REKEY_"), e: e, args: args}
	f.SetOutput(e.stderr)
	f.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: enqueue %s [flags] %s\n\n%s\n\nFlags (each also reads the environment variable shown):\n", name, args, summary)
		f.PrintUsage(e.stderr)
	}
	f.redis = redisurl.AddFlags(f.FlagSet, "redis://127.0.0.1:6379", "")
	f.namespace = f.String("namespace", "", "the workers' --namespace: the `name` of the deployment whose rotations this command sees (empty: the default)")
	return f
}

// parse parses args and checks the number of positional arguments.
func (f *flags) parse(args []string, nargs int) error {
	if err := f.Parse(args, f.e.getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	if f.NArg() != nargs {
		if nargs == 0 {
			return usagef("unexpected argument %q", f.Arg(0))
		}
		return usagef("want %s, got %d arguments", f.args, f.NArg())
	}
	return nil
}

// connect opens Redis and a rekey client on it; opts say how the client
// reads the fleet (nil CPH: it does not).
func (f *flags) connect(opts rekey.Options) (redis.UniversalClient, *rekey.Client, error) {
	if err := tasks.Namespace(*f.namespace).Validate(); err != nil {
		return nil, nil, usagef("--namespace (%s): %v", f.EnvName("namespace"), err)
	}
	opts.Namespace = *f.namespace
	conn, err := f.redis.Conn()
	if err != nil {
		return nil, nil, usageError{err}
	}
	redisurl.SetLogger(nil) // enqueue's own errors say what failed
	rdb := conn.Client()
	c, err := rekey.NewClient(rdb, opts)
	if err != nil {
		rdb.Close()
		return nil, nil, usageError{err}
	}
	return rdb, c, nil
}

// addActor adds --actor to a command that writes to rotations.
func (f *flags) addActor() {
	f.actor = f.String("actor", "", "who runs this command, for the rotation's history: a `name` of at most 64 printable bytes\n(default: $USER, else the OS user)")
}

// withActor returns ctx carrying --actor (or the OS user) for the
// rotations' history.
func (f *flags) withActor(ctx context.Context) (context.Context, error) {
	a := *f.actor
	if a == "" {
		a = f.e.getenv("USER")
	}
	if a == "" {
		if u, err := user.Current(); err == nil {
			a = u.Username
		}
	}
	if err := rekey.ValidateActor(a); err != nil {
		return ctx, usagef("--actor (%s): %v", f.EnvName("actor"), err)
	}
	return rekey.WithActor(ctx, a), nil
}

// rotationArg validates the positional rotation id.
func (f *flags) rotationArg() (string, error) {
	id := f.Arg(0)
	if err := rekey.ValidateRotationID(id); err != nil {
		return "", usageError{err}
	}
	return id, nil
}

// usage turns the errors that mean bad input (a missing rotation, a
// conflicting id, an *rekey.InputError) into bad usage: exit 2.
func usage(err error) error {
	var ie *rekey.InputError
	if errors.Is(err, rekey.ErrNotFound) || errors.Is(err, rekey.ErrConflict) || errors.As(err, &ie) {
		return usageError{err}
	}
	return err
}

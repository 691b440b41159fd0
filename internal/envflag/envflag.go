// Package envflag binds every command-line flag to an environment variable,
// so each setting of a command can come from a flag (first), its variable
// (second) or its default, and --help documents both names.
//
//	fs := envflag.New("worker", "REKEY_")
//	redisURL := fs.String("redis", "redis://127.0.0.1:6379", "Redis URL")
//	fs.Env("redis", "REDIS_URL") // a name other than REKEY_REDIS
//	if err := fs.Parse(os.Args[1:], os.Getenv); err != nil { ... }
package envflag

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// FlagSet is a flag.FlagSet whose flags also read environment variables.
type FlagSet struct {
	*flag.FlagSet
	prefix string
	env    map[string]string // flag name → variable name, where not derived
	args   []string          // positional arguments
}

// New returns a FlagSet whose flag "chunk-size" reads PREFIX+"CHUNK_SIZE".
// It reports errors instead of exiting, so a command can map them to its
// own exit code.
func New(name, prefix string) *FlagSet {
	f := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), prefix: prefix, env: map[string]string{}}
	f.FlagSet.Usage = func() { f.PrintUsage(f.Output()) }
	return f
}

// Env names the variable of flag name explicitly, for contracts such as
// REDIS_URL or HUAWEICLOUD_SDK_AK.
func (f *FlagSet) Env(name, variable string) { f.env[name] = variable }

// EnvName returns the variable flag name reads.
func (f *FlagSet) EnvName(name string) string {
	if v, ok := f.env[name]; ok {
		return v
	}
	return f.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args, then fills every flag not given on the command line
// from its environment variable (read with getenv) when that is non-empty.
// An invalid value names the flag or variable it came from.
//
// Flags may follow positional arguments ("status r-1 --watch"), as
// operators type them; everything after "--" is positional.
func (f *FlagSet) Parse(args []string, getenv func(string) string) error {
	f.args = nil
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			return err
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			f.args = append(f.args, rest...)
			break
		}
		f.args = append(f.args, rest[0])
		args = rest[1:]
	}
	given := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		if err != nil || given[fl.Name] {
			return
		}
		name := f.EnvName(fl.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if e := f.Set(fl.Name, v); e != nil {
			err = fmt.Errorf("environment variable %s=%q: %v", name, v, e)
		}
	})
	return err
}

// Args returns the positional arguments.
func (f *FlagSet) Args() []string { return f.args }

// NArg returns the number of positional arguments.
func (f *FlagSet) NArg() int { return len(f.args) }

// Arg returns the i'th positional argument, or "" if there is none.
func (f *FlagSet) Arg(i int) string {
	if i < 0 || i >= len(f.args) {
		return ""
	}
	return f.args[i]
}

// PrintUsage writes every flag with its variable, default and usage.
func (f *FlagSet) PrintUsage(w io.Writer) {
	var flags []*flag.Flag
	f.VisitAll(func(fl *flag.Flag) { flags = append(flags, fl) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, fl := range flags {
		typ, usage := flag.UnquoteUsage(fl)
		line := "  --" + fl.Name
		if typ != "" {
			line += " " + typ
		}
		// A usage of several lines keeps its indent, as flag.PrintDefaults
		// does.
		usage = strings.ReplaceAll(usage, "\n", "\n    \t")
		fmt.Fprintf(w, "%s\n    \t%s (env %s", line, usage, f.EnvName(fl.Name))
		if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" && fl.DefValue != "[]" {
			fmt.Fprintf(w, ", default %s", fl.DefValue)
		}
		fmt.Fprintln(w, ")")
	}
}

package redisurl

import (
	"fmt"

	"github.com/cph-rekey/cph-rekey/internal/envflag"
)

// URLUsage is the usage text of --redis.
const URLUsage = "Redis `url`: redis://[user:pass@]host:port/db, rediss:// (TLS), redis-sentinel://host:port,host:port?master=name, redis-cluster://host:port,host:port (rediss-sentinel://, rediss-cluster:// with TLS)"

// Flags are the Redis flags every command has: the URL and what does not
// belong in one (TLS files, the ACL user and password).
type Flags struct {
	fs                        *envflag.FlagSet
	URL                       string
	CAFile, CertFile, KeyFile string
	Username, Password        string
}

// AddFlags registers --redis (env REDIS_URL, default def), --redis-ca,
// --redis-cert, --redis-key, --redis-username and --redis-password (env
// PREFIX+REDIS_CA and so on) on fs. usage replaces URLUsage when not empty.
func AddFlags(fs *envflag.FlagSet, def, usage string) *Flags {
	if usage == "" {
		usage = URLUsage
	}
	f := &Flags{fs: fs}
	fs.StringVar(&f.URL, "redis", def, usage)
	fs.Env("redis", "REDIS_URL")
	fs.StringVar(&f.CAFile, "redis-ca", "", "PEM `file` of the CAs that sign the Redis server's certificate (TLS URLs; default: the system's roots)")
	fs.StringVar(&f.CertFile, "redis-cert", "", "PEM client certificate `file` for Redis TLS (with --redis-key)")
	fs.StringVar(&f.KeyFile, "redis-key", "", "PEM client key `file` for Redis TLS (with --redis-cert)")
	fs.StringVar(&f.Username, "redis-username", "", "Redis ACL `user` (overrides the URL's)")
	fs.StringVar(&f.Password, "redis-password", "", "Redis `password` (overrides the URL's; prefer the environment variable, flags show in process lists)")
	return f
}

// Conn parses the flags' values into a connection. Its errors name the
// flags and environment variables involved.
func (f *Flags) Conn() (*Conn, error) {
	c, err := Parse(f.URL, Options{CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile, Username: f.Username, Password: f.Password})
	if err != nil {
		return nil, fmt.Errorf("--redis (%s) and --redis-* flags: %w", f.fs.EnvName("redis"), err)
	}
	return c, nil
}

// Package redisurl turns a REDIS_URL (and the TLS and ACL flags beside it)
// into one Redis connection that every cph-rekey command shares: a
// go-redis UniversalClient for the rotation store and the limiter, and the
// same settings as an asynq.RedisConnOpt for asynq and its web UI.
//
//	conn, err := redisurl.Parse("redis-cluster://10.0.0.1:6379,10.0.0.2:6379", redisurl.Options{})
//	rdb := conn.Client()                          // *redis.ClusterClient
//	srv := asynq.NewServerFromRedisClient(rdb, …) // asynq on the same client
//	ui := asynqmon.New(asynqmon.Options{RedisConnOpt: conn})
//
// The URL forms:
//
//	redis://[user:password@]host[:port][/db]                standalone
//	rediss://…                                              standalone over TLS
//	redis-sentinel://[user:password@]host:port,host:port[/db]?master=name
//	rediss-sentinel://…                                     Sentinel, TLS to sentinels and data nodes
//	redis-cluster://[user:password@]host:port,host:port     Redis Cluster (seed nodes)
//	rediss-cluster://…                                      Redis Cluster over TLS
//	redis-socket:///path/to/redis.sock[?db=N]               a Unix socket
//
// The user and password of a URL authenticate to the data nodes (an ACL
// user, or only a password for requirepass); sentinels that need a password
// take sentinel_username and sentinel_password query parameters. Other query
// parameters: db (sentinel), dial_timeout, read_timeout, write_timeout,
// max_retries, pool_size. An unknown parameter is an error.
//
// The client's timeouts and retries are set for short stalls when Redis
// fails over or restarts (see Defaults): asynq.ParseRedisURI leaves
// go-redis's defaults, under which one command against an unreachable host
// can block for minutes.
package redisurl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Mode is the kind of Redis deployment a URL names.
type Mode string

// Modes.
const (
	Standalone Mode = "standalone"
	Sentinel   Mode = "sentinel"
	Cluster    Mode = "cluster"
)

// Options are the connection settings that do not belong in a URL: files
// and secrets. Zero values leave the URL's settings as they are.
type Options struct {
	// CAFile is a PEM file of the CAs that sign the server's certificate;
	// empty uses the system's roots. It needs a TLS scheme.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for a
	// server that checks clients (tls-auth-clients). Both or neither.
	CertFile, KeyFile string
	// Username and Password override the URL's (an ACL user; a password
	// alone for requirepass), so a secret need not be part of the URL.
	Username, Password string
}

// Defaults are the client timeouts and retries every connection starts
// with. A dead host (a pod gone, a master failed over) costs at most
// DialTimeout per attempt instead of go-redis's 5 s × 5 dial retries ×
// 4 command attempts, and a command fails within a few seconds so its
// caller (asynq, the limiter, enqueue) can back off and retry on its own.
var Defaults = Timeouts{
	DialTimeout:     2 * time.Second,
	ReadTimeout:     3 * time.Second,
	WriteTimeout:    3 * time.Second,
	PoolTimeout:     4 * time.Second,
	MaxRetries:      2,
	MinRetryBackoff: 50 * time.Millisecond,
	MaxRetryBackoff: 500 * time.Millisecond,
	DialerRetries:   1,
}

// Timeouts are a client's timeouts and retries (go-redis's fields of the
// same names).
type Timeouts struct {
	DialTimeout, ReadTimeout, WriteTimeout, PoolTimeout time.Duration
	MaxRetries                                          int
	MinRetryBackoff, MaxRetryBackoff                    time.Duration
	DialerRetries                                       int
}

// Conn is a parsed Redis connection. It implements asynq.RedisConnOpt, so
// asynq (and asynqmon) build their clients with exactly these settings.
type Conn struct {
	Mode    Mode
	Network string   // "tcp" or "unix"
	Addrs   []string // the server, the sentinels, or the cluster's seed nodes
	DB      int
	// MasterName is the Sentinel master's name.
	MasterName                         string
	Username, Password                 string
	SentinelUsername, SentinelPassword string
	PoolSize                           int
	TLS                                *tls.Config // nil: plain TCP
	Timeouts                           Timeouts
}

// Parse parses a Redis URL and applies opts. Its errors name the part of
// the URL (or the option) that is wrong and never contain a password.
func Parse(rawURL string, opts Options) (*Conn, error) {
	if rawURL == "" {
		return nil, errors.New("empty Redis URL")
	}
	// Several hosts ("h1:p1,h2:p2") are not a URL's host: take them out,
	// parse the rest with a placeholder host.
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redis URL %s: no scheme: want redis://, rediss://, redis-sentinel://, redis-cluster:// or redis-socket://", redact(rawURL))
	}
	userinfo, rest := splitUserinfo(rest)
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	hosts, tail := rest[:end], rest[end:]
	u, err := url.Parse(scheme + "://placeholder" + tail)
	if err != nil {
		// url's errors quote the whole URL, password included.
		return nil, fmt.Errorf("redis URL %s: not a URL", redact(rawURL))
	}
	u.Host = hosts
	if userinfo != "" {
		user, pass, hasPass := strings.Cut(userinfo, ":")
		user, pass = unescape(user), unescape(pass)
		u.User = url.User(user)
		if hasPass {
			u.User = url.UserPassword(user, pass)
		}
	}
	c := &Conn{Network: "tcp", Timeouts: Defaults}
	tlsOn := false
	defPort := "6379"
	switch u.Scheme {
	case "redis":
		c.Mode = Standalone
	case "rediss":
		c.Mode, tlsOn = Standalone, true
	case "redis-sentinel":
		c.Mode, defPort = Sentinel, "26379"
	case "rediss-sentinel":
		c.Mode, defPort, tlsOn = Sentinel, "26379", true
	case "redis-cluster":
		c.Mode = Cluster
	case "rediss-cluster":
		c.Mode, tlsOn = Cluster, true
	case "redis-socket":
		c.Mode, c.Network = Standalone, "unix"
	default:
		return nil, fmt.Errorf("redis URL scheme %q: want redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster, rediss-cluster or redis-socket", u.Scheme)
	}
	if u.User != nil {
		c.Username = u.User.Username()
		c.Password, _ = u.User.Password()
	}

	if c.Network == "unix" {
		if u.Path == "" {
			return nil, errors.New("redis URL redis-socket: no socket path (want redis-socket:///path/to/redis.sock)")
		}
		c.Addrs = []string{u.Path}
	} else {
		if u.Host == "" {
			return nil, fmt.Errorf("redis URL %s: no host", redact(rawURL))
		}
		for _, hp := range strings.Split(u.Host, ",") {
			addr, err := hostPort(hp, defPort)
			if err != nil {
				return nil, fmt.Errorf("redis URL host %q: %v", hp, err)
			}
			c.Addrs = append(c.Addrs, addr)
		}
		if c.Mode == Standalone && len(c.Addrs) > 1 {
			return nil, fmt.Errorf("redis URL host %q: several hosts need redis-sentinel:// or redis-cluster://", u.Host)
		}
		if db := strings.Trim(u.Path, "/"); db != "" {
			n, err := strconv.Atoi(db)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("redis URL path %q: want a database number", u.Path)
			}
			c.DB = n
		}
	}
	if err := c.query(u.Query()); err != nil {
		return nil, err
	}
	if c.Mode == Sentinel && c.MasterName == "" {
		return nil, errors.New("redis URL redis-sentinel: no master name (want ?master=name)")
	}
	if c.Mode == Cluster && c.DB != 0 {
		return nil, fmt.Errorf("redis URL database %d: Redis Cluster has only database 0", c.DB)
	}

	if opts.Username != "" {
		c.Username = opts.Username
	}
	if opts.Password != "" {
		c.Password = opts.Password
	}
	if c.Username != "" && c.Password == "" {
		return nil, errors.New("redis: a user name is given (in the URL or --redis-username) but no password")
	}
	if !tlsOn && (opts.CAFile != "" || opts.CertFile != "" || opts.KeyFile != "") {
		return nil, fmt.Errorf("redis TLS files given but the URL scheme %q is not TLS: use rediss://, rediss-sentinel:// or rediss-cluster://", u.Scheme)
	}
	if tlsOn {
		if c.TLS, err = tlsConfig(opts, u.Hostname(), c.Mode); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func hostPort(hp, defPort string) (string, error) {
	if hp == "" {
		return "", errors.New("empty host")
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		// No port: the whole thing is the host (an IPv6 literal keeps its brackets).
		host, port = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), defPort
	}
	if host == "" {
		return "", errors.New("empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q: want 1-65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

func (c *Conn) query(q url.Values) error {
	for name, vs := range q {
		v := vs[len(vs)-1]
		var err error
		switch name {
		case "master", "master_name":
			if c.Mode != Sentinel {
				return fmt.Errorf("redis URL parameter %s: only for redis-sentinel://", name)
			}
			c.MasterName = v
		case "sentinel_username", "sentinel_password":
			if c.Mode != Sentinel {
				return fmt.Errorf("redis URL parameter %s: only for redis-sentinel://", name)
			}
			if name == "sentinel_username" {
				c.SentinelUsername = v
			} else {
				c.SentinelPassword = v
			}
		case "db":
			if c.DB, err = strconv.Atoi(v); err != nil || c.DB < 0 {
				return fmt.Errorf("redis URL parameter db=%q: want a database number", v)
			}
		case "dial_timeout":
			err = duration(&c.Timeouts.DialTimeout, v)
		case "read_timeout":
			err = duration(&c.Timeouts.ReadTimeout, v)
		case "write_timeout":
			err = duration(&c.Timeouts.WriteTimeout, v)
		case "max_retries":
			if c.Timeouts.MaxRetries, err = strconv.Atoi(v); err != nil || c.Timeouts.MaxRetries < -1 {
				err = errors.New("want -1 (none) or more")
			}
		case "pool_size":
			if c.PoolSize, err = strconv.Atoi(v); err != nil || c.PoolSize < 1 {
				err = errors.New("want 1 or more")
			}
		default:
			return fmt.Errorf("redis URL parameter %q: unknown (known: master, db, sentinel_username, sentinel_password, dial_timeout, read_timeout, write_timeout, max_retries, pool_size)", name)
		}
		if err != nil {
			return fmt.Errorf("redis URL parameter %s=%q: %v", name, v, err)
		}
	}
	return nil
}

// duration reads "3s", "500ms", or a bare number of seconds (as go-redis).
func duration(d *time.Duration, v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		v = strconv.FormatFloat(n, 'f', -1, 64) + "s"
	}
	x, err := time.ParseDuration(v)
	if err != nil || x <= 0 {
		return errors.New("want a positive duration such as 3s")
	}
	*d = x
	return nil
}

func tlsConfig(opts Options, host string, mode Mode) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if mode == Standalone {
		// Sentinel and Cluster dial other hosts than the URL's; go-redis
		// sets each connection's server name from the address it dials.
		cfg.ServerName = host
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis CA file %s: no PEM certificate in it", opts.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("redis client certificate: give both the certificate and the key file, or neither")
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis client certificate %s / key %s: %v", opts.CertFile, opts.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Client returns a new go-redis client for c: a *redis.Client, a
// sentinel-backed *redis.Client (failover), or a *redis.ClusterClient.
// The caller closes it.
func (c *Conn) Client() redis.UniversalClient {
	t := c.Timeouts
	switch c.Mode {
	case Sentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.Addrs,
			SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
			Username: c.Username, Password: c.Password, DB: c.DB, PoolSize: c.PoolSize, TLSConfig: c.tls(),
			DialTimeout: t.DialTimeout, ReadTimeout: t.ReadTimeout, WriteTimeout: t.WriteTimeout, PoolTimeout: t.PoolTimeout,
			MaxRetries: t.MaxRetries, MinRetryBackoff: t.MinRetryBackoff, MaxRetryBackoff: t.MaxRetryBackoff,
			DialerRetries: t.DialerRetries,
		})
	case Cluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password, PoolSize: c.PoolSize, TLSConfig: c.tls(),
			DialTimeout: t.DialTimeout, ReadTimeout: t.ReadTimeout, WriteTimeout: t.WriteTimeout, PoolTimeout: t.PoolTimeout,
			MaxRetries: t.MaxRetries, MinRetryBackoff: t.MinRetryBackoff, MaxRetryBackoff: t.MaxRetryBackoff,
			DialerRetries: t.DialerRetries,
		})
	default:
		return redis.NewClient(&redis.Options{
			Network: c.Network, Addr: c.Addrs[0],
			Username: c.Username, Password: c.Password, DB: c.DB, PoolSize: c.PoolSize, TLSConfig: c.tls(),
			DialTimeout: t.DialTimeout, ReadTimeout: t.ReadTimeout, WriteTimeout: t.WriteTimeout, PoolTimeout: t.PoolTimeout,
			MaxRetries: t.MaxRetries, MinRetryBackoff: t.MinRetryBackoff, MaxRetryBackoff: t.MaxRetryBackoff,
			DialerRetries: t.DialerRetries,
		})
	}
}

// tls returns a copy of c's TLS settings: go-redis's cluster and failover
// clients set ServerName on the config they are given.
func (c *Conn) tls() *tls.Config {
	if c.TLS == nil {
		return nil
	}
	return c.TLS.Clone()
}

// MakeRedisClient implements asynq.RedisConnOpt: asynq and asynqmon get a
// client with the same settings as Client.
func (c *Conn) MakeRedisClient() any { return c.Client() }

// String describes c for logs, without secrets.
func (c *Conn) String() string {
	s := fmt.Sprintf("%s %s", c.Mode, strings.Join(c.Addrs, ","))
	if c.MasterName != "" {
		s += " master " + c.MasterName
	}
	if c.DB != 0 {
		s += " db " + strconv.Itoa(c.DB)
	}
	if c.TLS != nil {
		s += " tls"
	}
	if c.Username != "" {
		s += " user " + c.Username
	}
	return s
}

// redact hides the password of a URL that may not parse.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(malformed)"
	}
	// Nothing of the user info is shown: a password typed as is may hold
	// '/', '?', '#' or '@', and a user name is not for logs either.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = "xxxxx" + rest[at:]
	}
	return scheme + "://" + rest
}

// splitUserinfo takes "user:password@" off the rest of a URL (after the
// scheme). Passwords are often written as typed, not escaped, and may hold
// '/', '?', '#' or '@': the user info ends at the last '@' before the
// query, which begins at the first '?' that can begin it (see queryAt).
func splitUserinfo(rest string) (userinfo, remainder string) {
	q := len(rest)
	for i := 0; i < len(rest); i++ {
		if rest[i] == '?' && queryAt(rest[i+1:]) {
			q = i
			break
		}
	}
	if at := strings.LastIndex(rest[:q], "@"); at >= 0 {
		return rest[:at], rest[at+1:]
	}
	return "", rest
}

// queryAt reports whether s can be the URL's query: it begins with a
// parameter Parse knows, and an '@' in it is inside a sentinel's user name
// or password, the only values that may hold one. Otherwise the '?' before
// s belongs to a password typed as is (say "p?db=1", before the '@').
func queryAt(s string) bool {
	s, _, _ = strings.Cut(s, "#")
	for i, kv := range strings.Split(s, "&") {
		name, v, _ := strings.Cut(kv, "=")
		if i == 0 && !knownParam(name) || strings.Contains(name, "@") ||
			strings.Contains(v, "@") && name != "sentinel_username" && name != "sentinel_password" {
			return false
		}
	}
	return true
}

// knownParam reports whether Parse takes a query parameter.
func knownParam(name string) bool {
	switch name {
	case "master", "master_name", "sentinel_username", "sentinel_password", "db", "dial_timeout", "read_timeout",
		"write_timeout", "max_retries", "pool_size":
		return true
	}
	return false
}

// unescape decodes %-escapes in a user name or password, and keeps it as
// written when it is not validly escaped (a '%' typed as is).
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// Transient reports whether err is one that a Redis failover, restart or
// network blip causes and that goes away on its own: a connection refused,
// reset or timed out, a server still loading its data, a replica not yet
// promoted, a cluster resharding. Bad credentials, a wrong URL or a
// script error are not.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"LOADING ", "READONLY ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN ", "MOVED ", "ASK ", "redis: connection pool timeout", "redis: all sentinels", "redis: nil master"} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, ": "+p) {
			return true
		}
	}
	return false
}

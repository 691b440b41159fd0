package redisurl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/envflag"
)

func TestParse(t *testing.T) {
	tests := []struct {
		url  string
		opts Options
		want Conn // TLS and Timeouts are checked apart
		tls  bool
	}{
		{url: "redis://127.0.0.1:6379", want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"127.0.0.1:6379"}}},
		{url: "redis://redis.internal", want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"redis.internal:6379"}}},
		{url: "redis://:pw@h:1/3", want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"h:1"}, DB: 3, Password: "pw"}},
		{url: "redis://rekey:pw@h:1/0", want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"h:1"}, Username: "rekey", Password: "pw"}},
		{url: "redis://h:1", opts: Options{Username: "u", Password: "p"},
			want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"h:1"}, Username: "u", Password: "p"}},
		{url: "redis://[::1]:7000", want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"[::1]:7000"}}},
		{url: "rediss://h:6380", tls: true, want: Conn{Mode: Standalone, Network: "tcp", Addrs: []string{"h:6380"}}},
		{url: "redis-sentinel://s1:26379,s2:26380,s3?master=mymaster",
			want: Conn{Mode: Sentinel, Network: "tcp", Addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, MasterName: "mymaster"}},
		{url: "redis-sentinel://u:p@s1/2?master_name=m&sentinel_password=sp",
			want: Conn{Mode: Sentinel, Network: "tcp", Addrs: []string{"s1:26379"}, MasterName: "m", DB: 2, Username: "u", Password: "p", SentinelPassword: "sp"}},
		{url: "redis-sentinel://s1?master=m&db=4",
			want: Conn{Mode: Sentinel, Network: "tcp", Addrs: []string{"s1:26379"}, MasterName: "m", DB: 4}},
		{url: "rediss-sentinel://s1?master=m", tls: true,
			want: Conn{Mode: Sentinel, Network: "tcp", Addrs: []string{"s1:26379"}, MasterName: "m"}},
		{url: "redis-cluster://n1:7000,n2:7001,n3:7002",
			want: Conn{Mode: Cluster, Network: "tcp", Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}}},
		{url: "rediss-cluster://u:p@n1:7000?pool_size=50", tls: true,
			want: Conn{Mode: Cluster, Network: "tcp", Addrs: []string{"n1:7000"}, Username: "u", Password: "p", PoolSize: 50}},
		{url: "redis-socket:///run/redis.sock?db=1", want: Conn{Mode: Standalone, Network: "unix", Addrs: []string{"/run/redis.sock"}, DB: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := Parse(tt.url, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if (c.TLS != nil) != tt.tls {
				t.Errorf("TLS = %v, want %v", c.TLS != nil, tt.tls)
			}
			if c.Timeouts != Defaults {
				t.Errorf("timeouts = %+v, want the defaults", c.Timeouts)
			}
			got := *c
			got.TLS, got.Timeouts = nil, Timeouts{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q) =\n %+v, want\n %+v", tt.url, got, tt.want)
			}
		})
	}
}

func TestParseTimeouts(t *testing.T) {
	c, err := Parse("redis://h?dial_timeout=1&read_timeout=500ms&write_timeout=2s&max_retries=-1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults
	want.DialTimeout, want.ReadTimeout, want.WriteTimeout, want.MaxRetries = time.Second, 500*time.Millisecond, 2*time.Second, -1
	if c.Timeouts != want {
		t.Fatalf("timeouts = %+v, want %+v", c.Timeouts, want)
	}
}

// TestParseErrors checks that every bad URL is refused with an error naming
// the bad part, and that no error shows the password.
func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	tests := []struct {
		url  string
		opts Options
		want string
	}{
		{"", Options{}, "empty"},
		{"127.0.0.1:6379", Options{}, "scheme"},
		{"http://h", Options{}, `scheme "http"`},
		{"mysql://u:secret@h", Options{}, `scheme "mysql"`},
		{"redis://", Options{}, "no host"},
		{"redis://h:0", Options{}, `port "0"`},
		{"redis://h:99999", Options{}, `port "99999"`},
		{"redis://h:1/x", Options{}, `path "/x"`},
		{"redis://a:1,b:2", Options{}, "several hosts"},
		{"redis://h?master=m", Options{}, "master: only for redis-sentinel"},
		{"redis://h?bogus=1", Options{}, `"bogus": unknown`},
		{"redis://h?dial_timeout=soon", Options{}, "dial_timeout"},
		{"redis://h?pool_size=0", Options{}, "pool_size"},
		{"redis-sentinel://s1,s2", Options{}, "no master name"},
		{"redis-sentinel://s1,,s2?master=m", Options{}, "empty host"},
		{"redis-cluster://n1/2", Options{}, "only database 0"},
		{"redis-socket://", Options{}, "no socket path"},
		{"redis://user@h", Options{}, "user name is given (in the URL or --redis-username) but no password"},
		{"redis://h", Options{CAFile: "ca.pem"}, "not TLS"},
		{"rediss://h", Options{CAFile: filepath.Join(dir, "missing.pem")}, "CA file"},
		{"rediss://h", Options{CAFile: notPEM}, "no PEM certificate"},
		{"rediss://h", Options{CertFile: "c.pem"}, "both the certificate and the key"},
		{"rediss://h", Options{CertFile: notPEM, KeyFile: notPEM}, "client certificate"},
		{"redis://u:secret@h:1/x", Options{}, "path"},
		{"redis://u:secret@h:bad", Options{}, `port "bad"`},
		{"redis://u:secret@h/%zz", Options{}, "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := Parse(tt.url, tt.opts)
			if err == nil {
				t.Fatalf("Parse(%q) accepted it", tt.url)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %q, want it to name %q", tt.url, err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("Parse(%q) = %q shows the password", tt.url, err)
			}
		})
	}
}

func TestStringHidesPassword(t *testing.T) {
	c, err := Parse("redis-sentinel://u:secret@s1?master=m&sentinel_password=secret2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.String(); strings.Contains(s, "secret") || !strings.Contains(s, "sentinel") || !strings.Contains(s, "user u") {
		t.Fatalf("String() = %q", s)
	}
}

// TestClients checks the client type of every mode and that asynq takes a
// Conn as its RedisConnOpt.
func TestClients(t *testing.T) {
	m := miniredis.RunT(t)
	m.RequireUserAuth("rekey", "pw")
	for _, tt := range []struct {
		url  string
		want any
	}{
		{"redis://rekey:pw@" + m.Addr() + "/0", &redis.Client{}},
		{"redis-sentinel://" + m.Addr() + "?master=m", &redis.Client{}},
		{"redis-cluster://" + m.Addr(), &redis.ClusterClient{}},
	} {
		c, err := Parse(tt.url, Options{})
		if err != nil {
			t.Fatal(err)
		}
		rdb := c.Client()
		if reflect.TypeOf(rdb) != reflect.TypeOf(tt.want) {
			t.Errorf("%s: client %T, want %T", tt.url, rdb, tt.want)
		}
		rdb.Close()
	}
	c, err := Parse("redis://"+m.Addr(), Options{Username: "rekey", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	var opt asynq.RedisConnOpt = c
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	if _, err := insp.Queues(); err != nil {
		t.Fatalf("asynq over the Conn, ACL user: %v", err)
	}
	bad, _ := Parse("redis://"+m.Addr(), Options{Username: "rekey", Password: "wrong"})
	rdb := bad.Client()
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("wrong password accepted")
	}
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	ca, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	c, err := Parse("rediss://redis.internal:6380", Options{CAFile: ca, CertFile: ca, KeyFile: kf})
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.RootCAs == nil || len(c.TLS.Certificates) != 1 || c.TLS.ServerName != "redis.internal" {
		t.Fatalf("TLS config: roots %v, %d certificates, server name %q", c.TLS.RootCAs != nil, len(c.TLS.Certificates), c.TLS.ServerName)
	}
	cl, err := Parse("rediss-cluster://n1:7000", Options{CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if cl.TLS.ServerName != "" {
		t.Fatalf("cluster TLS pins server name %q: every node would have to carry it", cl.TLS.ServerName)
	}
}

func TestFlags(t *testing.T) {
	fs := envflag.New("x", "REKEY_")
	f := AddFlags(fs, "redis://127.0.0.1:6379", "")
	env := map[string]string{"REDIS_URL": "redis-cluster://n1:7000,n2:7000", "REKEY_REDIS_USERNAME": "rekey", "REKEY_REDIS_PASSWORD": "pw"}
	if err := fs.Parse(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	c, err := f.Conn()
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != Cluster || c.Username != "rekey" || c.Password != "pw" {
		t.Fatalf("conn = %+v", c)
	}
	var help strings.Builder
	fs.PrintUsage(&help)
	for _, want := range []string{"REDIS_URL", "REKEY_REDIS_CA", "REKEY_REDIS_CERT", "REKEY_REDIS_KEY", "REKEY_REDIS_USERNAME", "REKEY_REDIS_PASSWORD", "redis-cluster://"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help does not mention %s:\n%s", want, help.String())
		}
	}

	fs = envflag.New("x", "REKEY_")
	f = AddFlags(fs, "redis://127.0.0.1:6379", "")
	if err := fs.Parse([]string{"--redis", "redis://h", "--redis-ca", "ca.pem"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Conn(); err == nil || !strings.Contains(err.Error(), "--redis (REDIS_URL)") || !strings.Contains(err.Error(), "not TLS") {
		t.Fatalf("Conn() = %v, want an error naming --redis (REDIS_URL) and the missing TLS", err)
	}
}

func TestTransient(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	m.Close() // nothing listens there now: connection refused
	c, _ := Parse("redis://"+addr, Options{})
	rdb := c.Client()
	defer rdb.Close()
	refused := rdb.Ping(context.Background()).Err()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{redis.ErrPoolTimeout, true},
		{errors.New("LOADING Redis is loading the dataset in memory"), true},
		{fmt.Errorf("read rotation: %w", errors.New("READONLY You can't write against a read only replica.")), true},
		{errors.New("CLUSTERDOWN The cluster is down"), true},
		{errors.New("redis: all sentinels specified in configuration are unreachable"), true},
		{errors.New("WRONGPASS invalid username-password pair or user is disabled."), false},
		{errors.New("NOSCRIPT No matching script"), false},
		{redis.ErrClosed, false},
		{nil, false},
	} {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestPasswordsAsTyped: a password written as typed may hold '/', '?',
// '#' or '@'; it is read whole, and no error shows any of the user info.
func TestPasswordsAsTyped(t *testing.T) {
	for _, c := range []struct {
		url, user, pass, addr string
		db                    int
	}{
		{"redis://u:Zx/9@h:6380/2", "u", "Zx/9", "h:6380", 2},
		{"redis://u:p?a#b@h", "u", "p?a#b", "h:6379", 0},
		{"redis://u:p@ss@h/1", "u", "p@ss", "h:6379", 1},
		{"redis://:p%2Fq@h", "", "p/q", "h:6379", 0},
		{"redis://h:6379/0?dial_timeout=1s", "", "", "h:6379", 0},
	} {
		conn, err := Parse(c.url, Options{})
		if err != nil {
			t.Errorf("Parse(%q): %v", c.url, err)
			continue
		}
		if conn.Username != c.user || conn.Password != c.pass || conn.Addrs[0] != c.addr || conn.DB != c.db {
			t.Errorf("Parse(%q) = user %q pass %q addrs %v db %d; want %q %q %s %d", c.url, conn.Username, conn.Password, conn.Addrs, conn.DB, c.user, c.pass, c.addr, c.db)
		}
	}
	conn, err := Parse("redis-sentinel://u:p/q@s1,s2/0?master=m&sentinel_password=a@b", Options{})
	if err != nil || conn.Password != "p/q" || conn.SentinelPassword != "a@b" || len(conn.Addrs) != 2 {
		t.Errorf("sentinel URL: %+v, %v; want password p/q, sentinel password a@b, two sentinels", conn, err)
	}
	for _, bad := range []string{"redis://secretuser:Zx/9@:notaport", "redis://secretuser:Zx/9@h/notadb", "redis://secretuser:Zx#9@h1,h2"} {
		_, err := Parse(bad, Options{})
		if err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
			continue
		}
		if strings.Contains(err.Error(), "Zx") || strings.Contains(err.Error(), "secretuser") {
			t.Errorf("Parse(%q): error %q shows the user info", bad, err)
		}
	}
}

// TestErrorsNeverShowUserInfo tries passwords holding every character that
// ends a URL part, in URLs that parse and in URLs wrong in every way Parse
// checks: each that parses has the password whole, and no error shows the
// password or the user name.
func TestErrorsNeverShowUserInfo(t *testing.T) {
	passwords := []string{"Zx/9", "p?a#b", "p@ss", "s3cr/t#x?y@z", "pa:ss:wd", "p%zz", "p%2Fq/r", "p?db=1", "p?master=m@x", "p,q"}
	for _, pass := range passwords {
		want := pass
		if pass == "p%2Fq/r" {
			want = "p/q/r"
		}
		conn, err := Parse("redis://secretuser:"+pass+"@h:6380/2", Options{})
		if err != nil {
			t.Errorf("password %q: %v", pass, err)
		} else if conn.Username != "secretuser" || conn.Password != want || conn.Addrs[0] != "h:6380" || conn.DB != 2 {
			t.Errorf("password %q: user %q password %q addrs %v db %d", pass, conn.Username, conn.Password, conn.Addrs, conn.DB)
		}
		for _, shape := range []string{
			"redis://secretuser:%s@:notaport",
			"redis://secretuser:%s@h:99999",
			"redis://secretuser:%s@h/notadb",
			"redis://secretuser:%s@h1,h2",
			"redis://secretuser:%s@",
			"redis://secretuser:%s@h?bogus=1",
			"redis://secretuser:%s@h?dial_timeout=soon",
			"redis://secretuser:%s@h?master=m",
			"redis-cluster://secretuser:%s@h/3",
			"redis-sentinel://secretuser:%s@s1,s2",
			"ftp://secretuser:%s@h",
			"secretuser:%s@h",
		} {
			raw := strings.Replace(shape, "%s", pass, 1)
			_, err := Parse(raw, Options{})
			if err == nil {
				t.Errorf("Parse(%q) succeeded", raw)
				continue
			}
			if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "secretuser") {
				t.Errorf("Parse(%q): error %q shows the user info", raw, err)
			}
		}
	}
	if _, err := Parse("redis://secretuser@h", Options{}); err == nil || strings.Contains(err.Error(), "secretuser") {
		t.Errorf("user without a password: %v, want an error not naming the user", err)
	}
}

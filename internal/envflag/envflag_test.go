package envflag

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantSize  int
		wantRedis string
		wantWait  time.Duration
	}{
		{name: "defaults", wantSize: 50, wantRedis: "redis://localhost:6379", wantWait: time.Second},
		{name: "env", env: map[string]string{"REKEY_CHUNK_SIZE": "80", "REDIS_URL": "redis://r:1", "REKEY_WAIT": "2s"},
			wantSize: 80, wantRedis: "redis://r:1", wantWait: 2 * time.Second},
		{name: "flag beats env", args: []string{"--chunk-size", "10"}, env: map[string]string{"REKEY_CHUNK_SIZE": "80"},
			wantSize: 10, wantRedis: "redis://localhost:6379", wantWait: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := New("test", "REKEY_")
			size := fs.Int("chunk-size", 50, "servers per chunk")
			redis := fs.String("redis", "redis://localhost:6379", "Redis URL")
			fs.Env("redis", "REDIS_URL")
			wait := fs.Duration("wait", time.Second, "wait")
			if err := fs.Parse(tt.args, func(k string) string { return tt.env[k] }); err != nil {
				t.Fatal(err)
			}
			if *size != tt.wantSize || *redis != tt.wantRedis || *wait != tt.wantWait {
				t.Fatalf("got %d %q %v", *size, *redis, *wait)
			}
		})
	}
}

func TestParseBadEnvNamesVariable(t *testing.T) {
	fs := New("test", "REKEY_")
	fs.Int("chunk-size", 50, "servers per chunk")
	err := fs.Parse(nil, func(k string) string {
		if k == "REKEY_CHUNK_SIZE" {
			return "many"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "REKEY_CHUNK_SIZE") {
		t.Fatalf("err = %v, want one naming REKEY_CHUNK_SIZE", err)
	}
}

func TestUsageNamesBoth(t *testing.T) {
	fs := New("test", "REKEY_")
	fs.Int("chunk-size", 50, "servers per `n` chunk")
	var b bytes.Buffer
	fs.PrintUsage(&b)
	if out := b.String(); !strings.Contains(out, "--chunk-size n") || !strings.Contains(out, "env REKEY_CHUNK_SIZE, default 50") {
		t.Fatalf("usage:\n%s", out)
	}
}

func TestUsageKeepsItsIndent(t *testing.T) {
	fs := New("test", "REKEY_")
	fs.Bool("dry-run", false, "print the plan,\nwrite nothing")
	var b bytes.Buffer
	fs.PrintUsage(&b)
	if out := b.String(); !strings.Contains(out, "\n    \tprint the plan,\n    \twrite nothing (env REKEY_DRY_RUN)") {
		t.Fatalf("usage:\n%s", out)
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args     []string
		wantArgs []string
		watch    bool
	}{
		{[]string{"r-1", "--watch"}, []string{"r-1"}, true},
		{[]string{"--watch", "r-1", "-"}, []string{"r-1", "-"}, true},
		{[]string{"r-1", "--", "--watch"}, []string{"r-1", "--watch"}, false},
		{nil, nil, false},
	}
	for _, tt := range tests {
		fs := New("test", "REKEY_")
		watch := fs.Bool("watch", false, "watch")
		if err := fs.Parse(tt.args, func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
		if strings.Join(fs.Args(), " ") != strings.Join(tt.wantArgs, " ") || *watch != tt.watch || fs.NArg() != len(tt.wantArgs) {
			t.Errorf("Parse(%q): args %q watch %v; want %q %v", tt.args, fs.Args(), *watch, tt.wantArgs, tt.watch)
		}
	}
}

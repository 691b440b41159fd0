package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// runCmd runs the CLI in-process and returns its exit code and output.
func runCmd(t *testing.T, envs map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string { return envs[k] }}
	code = run(context.Background(), args, e)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStartRejectsBadInput checks every input format's failures: exit 2, a
// message naming where and why, and nothing written to Redis.
func TestStartRejectsBadInput(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	long := strings.Repeat("a", 33)
	tests := []struct {
		name, input, format, want string
	}{
		{"empty id line", "aaa\n  \t x y\n", "lines", "line 2"},
		{"id over 32 bytes", "aaa\n" + long + "\n", "lines", "line 2"},
		{"duplicate id", "aaa\nbbb\naaa\n", "lines", "line 3"},
		{"csv without server_id", "name,keypair_name\nx,y\n", "csv", "server_id"},
		{"csv wrong field count", "server_id,keypair_name\na,b\nc,d,e\n", "csv", "line 3"},
		{"csv bad quote", "server_id\n\"abc\n", "csv", "line"},
		{"json malformed", `["a", "b"`, "json", "JSON"},
		{"json bad element", `["a", 7]`, "json", "element"},
		{"json duplicate", `["a", "a"]`, "json", "element"},
		{"empty input", "", "auto", "no target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, envs, tt.input, "start", "--keypair", "kp", "--skip-matching=false", "--format", tt.format, "-")
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q does not name %q", stderr, tt.want)
			}
			if stdout != "" {
				t.Fatalf("stdout %q, want nothing", stdout)
			}
			if keys := r.Mini.Keys(); len(keys) != 0 {
				t.Fatalf("Redis holds %v after bad input", keys)
			}
		})
	}
}

// TestFlagsRejectBadValues checks every flag that takes a value.
func TestFlagsRejectBadValues(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	file := writeFile(t, "servers.txt", "aaa\nbbb\n")
	tests := []struct {
		name string
		args []string
		envs map[string]string
	}{
		{"unknown command", []string{"rotate"}, nil},
		{"no keypair", []string{"start", "--skip-matching=false", file}, nil},
		{"keypair too long", []string{"start", "--skip-matching=false", "--keypair", strings.Repeat("k", 65), file}, nil},
		{"bad format", []string{"start", "--keypair", "kp", "--skip-matching=false", "--format", "xml", file}, nil},
		{"chunk size 0", []string{"start", "--keypair", "kp", "--skip-matching=false", "--chunk-size", "0", file}, nil},
		{"chunk size 101", []string{"start", "--keypair", "kp", "--skip-matching=false", "--chunk-size", "101", file}, nil},
		{"chunk size not a number", []string{"start", "--keypair", "kp", "--skip-matching=false", "--chunk-size", "ten", file}, nil},
		{"max attempts 0", []string{"start", "--keypair", "kp", "--skip-matching=false", "--max-attempts", "0", file}, nil},
		{"bad rotation id", []string{"start", "--keypair", "kp", "--skip-matching=false", "--rotation-id", "a{b}", file}, nil},
		{"bad status filter", []string{"start", "--keypair", "kp", "--discover", "--status", "normal", "--endpoint", "http://127.0.0.1:1"}, nil},
		{"name without discover", []string{"start", "--keypair", "kp", "--skip-matching=false", "--name", "x", file}, nil},
		{"skip matching without endpoint", []string{"start", "--keypair", "kp", file}, nil},
		{"missing file", []string{"start", "--keypair", "kp", "--skip-matching=false", filepath.Join(t.TempDir(), "nope")}, nil},
		{"two files", []string{"start", "--keypair", "kp", "--skip-matching=false", file, file}, nil},
		{"bad redis url", []string{"list", "--redis", "http://x"}, nil},
		{"bad redis env", []string{"list"}, map[string]string{"REDIS_URL": "mysql://x"}},
		{"bad chunk size env", []string{"start", "--keypair", "kp", "--skip-matching=false", file}, map[string]string{"REKEY_CHUNK_SIZE": "big"}},
		{"status interval", []string{"status", "--interval", "1ms", "r-1"}, nil},
		{"status bad interval", []string{"status", "--interval", "soon", "r-1"}, nil},
		{"status no rotation", []string{"status"}, nil},
		{"status missing rotation", []string{"status", "r-missing"}, nil},
		{"report bad format", []string{"report", "--format", "xml", "r-1"}, nil},
		{"report missing rotation", []string{"report", "r-missing"}, nil},
		{"list bad limit", []string{"list", "--limit", "0"}, nil},
		{"pause bad id", []string{"pause", "a b"}, nil},
		{"cancel missing rotation", []string{"cancel", "r-missing"}, nil},
		{"wave of 0", []string{"start", "--keypair", "kp", "--skip-matching=false", "--waves", "0,100%", file}, nil},
		{"wave not a size", []string{"start", "--keypair", "kp", "--skip-matching=false", "--waves", "1,ten", file}, nil},
		{"max errors over 100%", []string{"start", "--keypair", "kp", "--skip-matching=false", "--max-errors", "101%", file}, nil},
		{"max errors negative", []string{"start", "--keypair", "kp", "--skip-matching=false", "--max-errors", "-1", file}, nil},
		{"retention 0", []string{"start", "--keypair", "kp", "--skip-matching=false", "--retention", "0s", file}, nil},
		{"bad submit rate", []string{"start", "--keypair", "kp", "--skip-matching=false", "--submit-rate", "fast", file}, nil},
		{"dry run without reading", []string{"start", "--keypair", "kp", "--skip-matching=false", "--dry-run", file}, nil},
		{"resume bad max errors", []string{"resume", "--max-errors", "lots", "r-1"}, nil},
		{"resume missing rotation", []string{"resume", "r-missing"}, nil},
		{"rollback missing rotation", []string{"rollback", "--skip-matching=false", "r-missing"}, nil},
		{"rollback id too long", []string{"rollback", strings.Repeat("r", 60)}, nil},
		{"retire missing rotation", []string{"retire", "--endpoint", "http://127.0.0.1:1", "r-missing"}, nil},
		{"retire scheduled missing rotation", []string{"retire", "--after", "1h", "r-missing"}, nil},
		{"retire without endpoint", []string{"retire", "r-1"}, nil},
		{"retire negative after", []string{"retire", "--after", "-1h", "r-1"}, nil},
		{"retire dry run scheduled", []string{"retire", "--dry-run", "--after", "1h", "r-1"}, nil},
		{"retire bad after env", []string{"retire", "r-1"}, map[string]string{"REKEY_AFTER": "later"}},
		{"bad namespace", []string{"list", "--namespace", "a{b}"}, nil},
		{"bad namespace env", []string{"list"}, map[string]string{"REKEY_NAMESPACE": "a:b"}},
		{"actor with a control character", []string{"pause", "--actor", "bob\x1b[2J", "r-1"}, nil},
		{"actor too long", []string{"start", "--keypair", "kp", "--skip-matching=false", "--actor", strings.Repeat("a", 65), file}, nil},
		{"actor env with a line break", []string{"cancel", "r-1"}, map[string]string{"REKEY_ACTOR": "bob\nfinished"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range envs {
				e[k] = v
			}
			for k, v := range tt.envs {
				e[k] = v
			}
			code, _, stderr := runCmd(t, e, "", tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			if strings.Contains(stderr, "panic") || stderr == "" {
				t.Fatalf("stderr %q: want a clear message", stderr)
			}
		})
	}
	if keys := r.Mini.Keys(); len(keys) != 0 {
		t.Fatalf("Redis holds %v after bad usage", keys)
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"start", "--help"}, {"status", "-h"}} {
		code, _, stderr := runCmd(t, nil, "", args...)
		if code != exitOK || !strings.Contains(stderr, "Usage") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	_, _, stderr := runCmd(t, nil, "", "start", "--help")
	if !strings.Contains(stderr, "REKEY_CHUNK_SIZE") || !strings.Contains(stderr, "REDIS_URL") {
		t.Fatalf("start --help does not name the environment variables:\n%s", stderr)
	}
	_, _, stderr = runCmd(t, nil, "", "retire", "--help")
	for _, env := range []string{"REKEY_AFTER", "REKEY_DRY_RUN", "REKEY_ALLOW_INCOMPLETE", "REKEY_KPS_ENDPOINT", "kps:SSHKeyPair:delete"} {
		if !strings.Contains(stderr, env) {
			t.Errorf("retire --help does not name %s:\n%s", env, stderr)
		}
	}
}

// TestWaitExitCodes: status --wait tells the final states apart.
func TestWaitExitCodes(t *testing.T) {
	for st, want := range map[tasks.State]int{
		tasks.StateCompletedWithErrors: 3,
		tasks.StateFailed:              4,
		tasks.StateCancelled:           5,
	} {
		if got := (endedError{st}).exitCode(); got != want {
			t.Errorf("%s: exit %d, want %d", st, got, want)
		}
	}
}

// TestCancelTwiceExitsZero: cancelling a cancelled rotation is no error,
// so an operator whose cancel was cut short runs it again to finish it.
func TestCancelTwiceExitsZero(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	file := writeFile(t, "servers.txt", "aaa\nbbb\nccc\n")
	code, stdout, stderr := runCmd(t, envs, "", "start", "--keypair", "kp", "--skip-matching=false", "--rotation-id", "r-twice", file)
	if code != 0 || strings.TrimSpace(stdout) != "r-twice" {
		t.Fatalf("start: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	for i, want := range []string{"3 servers recorded cancelled", "0 servers recorded cancelled"} {
		code, stdout, stderr := runCmd(t, envs, "", "cancel", "r-twice")
		if code != 0 || !strings.Contains(stdout, want) {
			t.Fatalf("cancel #%d: exit %d, stdout %q, stderr %s; want exit 0 and %q", i+1, code, stdout, stderr, want)
		}
	}
}

// TestDiscard: a start refused because an interrupted one froze another
// plan names discard; discard removes that plan (exit 0), the start goes
// through, and a discard of a rotation that exists, or of nothing, is
// refused with exit 2.
func TestDiscard(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL()}
	// What a start cut short after freezing its plan leaves: the plan
	// (digest, chunks, servers, skipped) and some of its keys.
	r.Mini.Set("cph-rekey:{r-cut}:plan", "0123abcd\t2\t150\t0")
	r.Mini.HSet("cph-rekey:{r-cut}:pages", "1:0", "100")
	file := writeFile(t, "servers.txt", "aaa\nbbb\nccc\n")
	start := []string{"start", "--keypair", "kp", "--skip-matching=false", "--rotation-id", "r-cut", file}
	code, _, stderr := runCmd(t, envs, "", start...)
	if code != exitUsage || !strings.Contains(stderr, "enqueue discard r-cut") {
		t.Fatalf("start over another frozen plan: exit %d, stderr %q; want 2 and the way out named", code, stderr)
	}
	code, stdout, stderr := runCmd(t, envs, "", "discard", "r-cut")
	if code != exitOK || !strings.Contains(stdout, "r-cut discarded") || !strings.Contains(stdout, "2 chunks (150 servers") {
		t.Fatalf("discard: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, k := range r.Mini.Keys() {
		if strings.Contains(k, "{r-cut}") {
			t.Fatalf("discard left %s", k)
		}
	}
	if code, stdout, stderr := runCmd(t, envs, "", start...); code != exitOK || strings.TrimSpace(stdout) != "r-cut" {
		t.Fatalf("start after the discard: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, tt := range []struct{ id, want string }{
		{"r-cut", "cancel it instead"},
		{"r-none", "no interrupted start to discard"},
	} {
		if code, _, stderr := runCmd(t, envs, "", "discard", tt.id); code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("discard %s: exit %d, stderr %q; want 2 and %q", tt.id, code, stderr, tt.want)
		}
	}
}

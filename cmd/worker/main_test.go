package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func runWorkerCmd(t *testing.T, envs map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := run(ctx, args, func(k string) string { return envs[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

// TestFlagsRejectBadValues checks every flag that takes a value, from the
// command line and from its environment variable.
func TestFlagsRejectBadValues(t *testing.T) {
	creds := map[string]string{"HUAWEICLOUD_SDK_AK": "AK", "HUAWEICLOUD_SDK_SK": "SK", "HUAWEICLOUD_SDK_PROJECT_ID": "p"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"redis url", []string{"--redis", "http://x", "--region", "cn-east-3"}, nil, "--redis"},
		{"redis env", []string{"--region", "cn-east-3"}, map[string]string{"REDIS_URL": "mysql://x"}, "REDIS_URL"},
		{"redis cluster url", []string{"--redis", "redis-cluster://n1:7000/3", "--region", "cn-east-3"}, nil, "only database 0"},
		{"redis sentinel no master", []string{"--redis", "redis-sentinel://s1,s2", "--region", "cn-east-3"}, nil, "master"},
		{"redis ca without tls", []string{"--redis-ca", "ca.pem", "--region", "cn-east-3"}, nil, "not TLS"},
		{"redis ca missing", []string{"--redis", "rediss://h", "--redis-ca", "/nonexistent/ca.pem", "--region", "cn-east-3"}, nil, "CA file"},
		{"redis user env", []string{"--region", "cn-east-3"}, map[string]string{"REDIS_URL": "redis://u@h"}, "no password"},
		{"no endpoint", nil, nil, "--region"},
		{"submit rate", []string{"--submit-rate", "fast"}, nil, "--submit-rate"},
		{"submit rate zero", []string{"--submit-rate", "0/s"}, nil, "--submit-rate"},
		{"poll rate", []string{"--poll-rate", "10/fortnight"}, nil, "--poll-rate"},
		{"read rate", []string{"--read-rate", "1/y"}, nil, "--read-rate"},
		{"poll rate env", nil, map[string]string{"REKEY_POLL_RATE": "x"}, "REKEY_POLL_RATE"},
		{"concurrency", []string{"--concurrency", "0"}, nil, "--concurrency"},
		{"concurrency not a number", []string{"--concurrency", "many"}, nil, "concurrency"},
		{"shutdown timeout", []string{"--shutdown-timeout", "-1s"}, nil, "--shutdown-timeout"},
		{"shutdown timeout env", nil, map[string]string{"REKEY_SHUTDOWN_TIMEOUT": "soon"}, "REKEY_SHUTDOWN_TIMEOUT"},
		{"job timeout", []string{"--job-timeout", "0s"}, nil, "--job-timeout"},
		{"first poll", []string{"--first-poll", "never"}, nil, "first-poll"},
		{"poll cap", []string{"--poll-cap", "0"}, nil, "--poll-cap"},
		{"call timeout", []string{"--call-timeout", "-5s"}, nil, "--call-timeout"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"demo servers", []string{"--demo", "--demo-servers", "0"}, nil, "--demo-servers"},
		{"positional", []string{"extra"}, nil, "extra"},
		{"queues syntax", []string{"--queues", "rekey-poll"}, nil, "--queues"},
		{"queues unknown", []string{"--queues", "default=1"}, nil, "default"},
		{"queues weight", []string{"--queues", "rekey-poll=-1"}, nil, "weight"},
		{"queues all zero", []string{"--queues", "rekey-poll=0,rekey-submit=0"}, nil, "no task"},
		{"queues env", nil, map[string]string{"REKEY_QUEUES": "x=1"}, "REKEY_QUEUES"},
		{"limiter", []string{"--limiter", "global"}, nil, "--limiter"},
		{"namespace hash tag", []string{"--namespace", "a{b}"}, nil, "--namespace"},
		{"namespace separator", []string{"--namespace", "blue:green"}, nil, "blue:green"},
		{"namespace env", nil, map[string]string{"REKEY_NAMESPACE": "blue.green"}, "REKEY_NAMESPACE"},
		{"unknown flag", []string{"--turbo"}, nil, "turbo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range creds {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			code, _, stderr := runWorkerCmd(t, env, tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q does not name %q", stderr, tt.want)
			}
		})
	}
}

func TestMissingCredentialsFailClearly(t *testing.T) {
	code, _, stderr := runWorkerCmd(t, nil, "--endpoint", "http://127.0.0.1:1", "--admin-addr", "")
	if code != exitFailure || !strings.Contains(stderr, "HUAWEICLOUD_SDK") {
		t.Fatalf("exit %d, stderr %q: want a runtime failure naming the credential variables", code, stderr)
	}
}

func TestAdminBeyondLoopbackNeedsToken(t *testing.T) {
	env := map[string]string{"HUAWEICLOUD_SDK_AK": "AK", "HUAWEICLOUD_SDK_SK": "SK", "HUAWEICLOUD_SDK_PROJECT_ID": "p"}
	code, _, stderr := runWorkerCmd(t, env, "--endpoint", "http://127.0.0.1:1", "--admin-addr", "0.0.0.0:0")
	if code != exitFailure || !strings.Contains(stderr, "token") {
		t.Fatalf("exit %d, stderr %q: want a failure asking for a token", code, stderr)
	}
}

// TestDemo runs the README's first command on a small fleet.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs a whole rotation")
	}
	code, stdout, stderr := runWorkerCmd(t, nil, "--demo", "--demo-exit", "--demo-servers", "300", "--admin-addr", "127.0.0.1:0")
	if code != exitOK {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"asynq web UI:  http://127.0.0.1:", "rotation r-", "cn-east-3   part r-", "report checked against both simulators"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
}

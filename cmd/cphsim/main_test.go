package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/iam"
)

const (
	testAK      = "TESTAK"
	testSK      = "test-sk"
	testProject = "0123456789abcdef0123456789abcdef"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// listServers makes a signed ListServers call and returns the count.
func listServers(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/v1/"+testProject+"/cloud-phone/servers?limit=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(cph.HeaderProjectID, testProject)
	cph.NewSigner(testAK, testSK).Sign(req, nil, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out cph.ListServersResponse
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Count
}

// syncBuffer is a bytes.Buffer safe to write from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunPrintsURLAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr syncBuffer
	code := make(chan int, 1)
	args := []string{"--addr", "127.0.0.1:0", "--ak", testAK, "--project-id", testProject, "--quota-list", "5", "--region", "cn-east-3"}
	go func() {
		code <- run(ctx, args, env(map[string]string{"CPHSIM_SK": testSK, "CPHSIM_SERVERS": "7"}), outW, &stderr)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL: %v; stderr: %s", err, stderr.String())
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("first line %q", line)
	}
	if n := listServers(t, url); n != 7 {
		t.Errorf("count %d, want the 7 from CPHSIM_SERVERS", n)
	}
	ic, err := iam.NewClient(iam.Config{Endpoint: url, Credentials: cph.Credentials{AccessKey: testAK, SecretKey: testSK}})
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := ic.AuthProjects(ctx); err != nil || len(ps) != 2 || ps[0].ID != testProject || ps[0].Name != "cn-east-3" || ps[1].Name != cphsim.GlobalProject {
		t.Errorf("IAM's projects = %+v, %v; want the project, named after --region, and %s", ps, err, cphsim.GlobalProject)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d; stderr: %s", c, stderr.String())
	}
	if !strings.Contains(stderr.String(), "cphsim stopped") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

func TestBadUsage(t *testing.T) {
	fleet := filepath.Join(t.TempDir(), "fleet.csv")
	if err := os.WriteFile(fleet, []byte("server_id\na\na\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := []string{"--ak", "a", "--sk", "s", "--project-id", "p"}
	tests := []struct {
		name string
		args []string
		vars map[string]string
		want string
	}{
		{"no credentials", nil, nil, "missing --ak (or CPHSIM_AK), --sk (or CPHSIM_SK), --project-id (or CPHSIM_PROJECT_ID)"},
		{"unknown flag", append([]string{"--nope"}, creds...), nil, "flag provided but not defined: -nope"},
		{"argument", append(creds, "extra"), nil, `unexpected argument "extra"`},
		{"rate", append(creds, "--5xx-rate", "1.5"), nil, "--5xx-rate 1.5: want a fraction in [0, 1]"},
		{"env", creds, map[string]string{"CPHSIM_SERVERS": "many"}, "CPHSIM_SERVERS"},
		{"kind", append(creds, "--bad-server-kind", "odd"), nil, `--bad-server-kind "odd"`},
		{"log format", append(creds, "--log-format", "xml"), nil, `--log-format "xml"`},
		{"missing fleet", append(creds, "--fleet-file", "/nonexistent/f.csv"), nil, "/nonexistent/f.csv"},
		{"duplicate in fleet", append(creds, "--fleet-file", fleet), nil, "server_id a repeats"},
		{"negative servers", append(creds, "--servers", "-1"), nil, "Servers -1 is negative"},
		{"negative create rate", append(creds, "--create-rate", "-1"), nil, "CreateRate -1"},
		{"NaN delete rate", creds, map[string]string{"CPHSIM_DELETE_RATE": "NaN"}, "DeleteRate NaN"},
		{"unknown API denied", append(creds, "--deny", "ListJobs,ListPhones"), nil, `--deny "ListJobs,ListPhones": want APIs among UpdateKeypair, ShowJob`},
		{"negative latency", append(creds, "--latency", "-1s"), nil, "Latency"},
		{"bad latency", creds, map[string]string{"CPHSIM_LATENCY_JITTER": "soon"}, "CPHSIM_LATENCY_JITTER"},
		{"bad region", creds, map[string]string{"CPHSIM_REGION": "North"}, `--region "North": want a region name like cn-north-4`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if c := run(context.Background(), tt.args, env(tt.vars), &stdout, &stderr); c != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", c, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q", stdout.String())
			}
		})
	}
}

// The churn, deny and latency flags reach the options, from flags or their
// variables.
func TestParseMovingFleetFlags(t *testing.T) {
	args := []string{"--ak", "a", "--sk", "s", "--project-id", "p",
		"--create-rate", "5", "--deny", "ListJobs, ShowServer", "--latency-jitter", "200ms"}
	vars := map[string]string{"CPHSIM_DELETE_RATE": "1.5", "CPHSIM_LATENCY": "300ms"}
	var stderr bytes.Buffer
	c, err := parse(args, env(vars), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.CreateRate != 5 || o.DeleteRate != 1.5 || o.Latency != 300*time.Millisecond || o.LatencyJitter != 200*time.Millisecond ||
		!slices.Equal(o.Deny, []cphsim.API{cphsim.APIListJobs, cphsim.APIShowServer}) {
		t.Errorf("options %+v", o)
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if c := run(context.Background(), []string{"--help"}, env(nil), &stdout, &stderr); c != 0 {
		t.Fatalf("exit %d", c)
	}
	for _, want := range []string{"--addr", "CPHSIM_ADDR", "--5xx-rate", "CPHSIM_5XX_RATE", "--quota-update", "CPHSIM_QUOTA_UPDATE",
		"--fleet-file", "--seed", "/_sim/stats", "--create-rate", "CPHSIM_CREATE_RATE", "--delete-rate", "--deny", "CPHSIM_DENY",
		"--latency", "--latency-jitter", "/_sim/churn", "/_sim/deny"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--help does not mention %s:\n%s", want, stderr.String())
		}
	}
}

// TestProcess builds the command and runs it as a real process: it prints
// its URL first, serves, and exits 0 on SIGTERM.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "cphsim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--servers", "3")
	cmd.Env = append(os.Environ(), "CPHSIM_AK="+testAK, "CPHSIM_SK="+testSK, "CPHSIM_PROJECT_ID="+testProject)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL: %v; stderr: %s", err, stderr.String())
	}
	if n := listServers(t, strings.TrimSpace(line)); n != 3 {
		t.Errorf("count %d", n)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; stderr: %s", err, stderr.String())
	}
}

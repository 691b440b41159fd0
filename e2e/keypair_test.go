package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// TestStartRefusesMissingKeypair: a keypair the project's KPS does not
// hold makes start and its dry run exit 2 naming the keypair and the
// project, before the fleet is read and with nothing enqueued;
// --skip-keypair-check lets the dry run through.
func TestStartRefusesMissingKeypair(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 20, Seed: 3, Keypairs: []string{"kp-old"}})
	env := baseEnv(r, f)
	file := writeTargets(t, f)
	for _, args := range [][]string{
		{"start", "--keypair", newKeypair, file},
		{"start", "--dry-run", "--keypair", newKeypair, file},
		{"start", "--skip-matching=false", "--keypair", newKeypair, file},
	} {
		out, code, stderr := enqueueCode(t, env, args...)
		if code != 2 || out != "" {
			t.Errorf("enqueue %v: exit %d, stdout %q; want 2 and nothing", args, code, out)
		}
		if !strings.Contains(stderr, "keypair "+newKeypair+" does not exist in project "+testProject) {
			t.Errorf("enqueue %v: stderr %q does not name the keypair and the project", args, stderr)
		}
	}
	if n := r.Client(t).DBSize(context.Background()).Val(); n != 0 {
		t.Errorf("Redis holds %d keys after refused starts", n)
	}
	if st := f.sim.Stats(); st.Calls[cphsim.APIListServers]+st.Writes() != 0 {
		t.Errorf("simulator calls %v: the refused starts read or wrote the fleet", st.Calls)
	}
	enqueue(t, env, "start", "--dry-run", "--skip-keypair-check", "--keypair", newKeypair, file)
}

// TestGenerateKeypair: start --generate-keypair writes the private key to
// a new 0600 file, imports the public half into the project's KPS, and the
// rotation puts every server on it; the private key is then nowhere else:
// not in Redis (task payloads included), the worker's logs, the commands'
// output, the console's API or /metrics.
func TestGenerateKeypair(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 150, Seed: 4, JobLatency: 200 * time.Millisecond, Keypairs: []string{"kp-old"}})
	env := baseEnv(r, f)
	addr := freeAddr(t)
	w := startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr)
	base := "http://" + addr
	waitHTTP(t, base+"/readyz")

	keyFile := filepath.Join(t.TempDir(), "kp.pem")
	file := writeTargets(t, f)
	out, code, stderr := enqueueCode(t, env, "start", "--json", "--generate-keypair", "--private-key-out", keyFile, "--keypair", newKeypair, file)
	if code != 0 {
		t.Fatalf("start --generate-keypair: exit %d: %s", code, stderr)
	}
	var st started
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("start output %q: %v", out, err)
	}
	rot := waitFinished(t, r.Client(t), st.Rotation, time.Minute)
	if rot.State != tasks.StateSucceeded {
		t.Fatalf("rotation %s: %s (%s)", rot.ID, rot.State, rot.Reason)
	}

	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key file mode %v, want 0600", fi.Mode().Perm())
	}
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatalf("the private key file does not parse: %v", err)
	}
	held, ok := f.sim.ProjectKeypair(testProject, newKeypair)
	if !ok {
		t.Fatalf("KPS holds no %s", newKeypair)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(held.PublicKey))
	if err != nil || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) || held.Scope != "domain" {
		t.Fatalf("KPS holds %+v (%v): not the file's public half in scope domain", held, err)
	}

	// A second run never overwrites the file.
	if _, code, stderr := enqueueCode(t, env, "start", "--generate-keypair", "--private-key-out", keyFile, "--keypair", newKeypair, file); code != 2 || !strings.Contains(stderr, "never overwritten") {
		t.Errorf("second run: exit %d, %q; want 2, refusing to overwrite", code, stderr)
	}
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, pem) {
		t.Error("the private key file changed")
	}

	pages := []string{out, stderr}
	for _, path := range []string{"/metrics", "/api/v1/rotations", "/api/v1/rotations/" + st.Rotation} {
		code, body := get(t, base+path)
		if code != http.StatusOK {
			t.Fatalf("%s = %d", path, code)
		}
		pages = append(pages, body)
	}
	pages = append(pages, enqueue(t, env, "status", "--json", st.Rotation), enqueue(t, env, "report", st.Rotation))
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.wait()
	pages = append(pages, w.logs.String(), redisDump(t, r.Client(t)))
	// Every line of the key's PEM body, and the raw private key in the
	// encodings a leak would take.
	var secrets []string
	for _, line := range strings.Split(string(pem), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	raw, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	seed := raw.(*ed25519.PrivateKey).Seed()
	secrets = append(secrets, hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), base64.RawURLEncoding.EncodeToString(seed), string(seed))
	if len(secrets) < 5 {
		t.Fatalf("only %d secrets to look for", len(secrets))
	}
	for i, p := range pages {
		for _, s := range secrets {
			if strings.Contains(p, s) {
				t.Fatalf("private key material %.6s… found in output %d", s, i)
			}
		}
	}
}

// TestStartRefusesKeypairMissingInOneProject: a rotation over three
// (region, project) pairs whose keypair is missing in one of them exits 2
// naming that project only, before any pair's fleet is read, with nothing
// enqueued.
func TestStartRefusesKeypairMissingInOneProject(t *testing.T) {
	r := testredis.Mini(t)
	both := []string{"kp-old", newKeypair}
	north := startRegion(t, "cn-north-4", testProject, cphsim.Options{Servers: 30, Seed: 31, Keypairs: both})
	east := startRegion(t, "cn-east-3", "11111111111111111111111111111111", cphsim.Options{Servers: 20, Seed: 32, Keypairs: []string{"kp-old"}})
	south := startRegion(t, "ap-southeast-1", "22222222222222222222222222222222", cphsim.Options{Servers: 25, Seed: 33, Keypairs: both})
	env := regionsEnv(r.URL(), north, east, south)
	var b strings.Builder
	b.WriteString("server_id,region,project_id\n")
	for _, rg := range []*region{north, east, south} {
		for _, s := range rg.fleet.sim.Servers() {
			b.WriteString(s.ServerID + "," + rg.name + "," + rg.project + "\n")
		}
	}
	list := filepath.Join(t.TempDir(), "fleet.csv")
	if err := os.WriteFile(list, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{false, true} {
		args := []string{"start", "--keypair", newKeypair, list}
		if dry {
			args = append([]string{"start", "--dry-run"}, args[1:]...)
		}
		out, code, stderr := enqueueCode(t, env, args...)
		if code != 2 || out != "" {
			t.Fatalf("enqueue %v: exit %d, stdout %q, stderr %q; want 2 and nothing", args, code, out, stderr)
		}
		want := "keypair " + newKeypair + " does not exist in project " + east.project + " (cn-east-3):"
		if !strings.Contains(stderr, want) || strings.Contains(stderr, north.project) || strings.Contains(stderr, south.project) {
			t.Errorf("enqueue %v: stderr %q; want it to name %s only", args, stderr, east.project)
		}
	}
	if n := r.Client(t).DBSize(context.Background()).Val(); n != 0 {
		t.Errorf("Redis holds %d keys after refused starts", n)
	}
	for _, rg := range []*region{north, east, south} {
		if st := rg.fleet.sim.Stats(); st.Calls[cphsim.APIListServers]+st.Writes() != 0 {
			t.Errorf("%s: simulator calls %v: the refused starts read or wrote the fleet", rg.name, st.Calls)
		}
	}
}

// TestGenerateKeypairTwoProjects: --generate-keypair over targets in two
// (region, project) pairs imports the public key into both projects' KPS
// before the pre-flight finds it there.
func TestGenerateKeypairTwoProjects(t *testing.T) {
	r := testredis.Mini(t)
	north := startRegion(t, "cn-north-4", testProject, cphsim.Options{Servers: 10, Seed: 41, Keypairs: []string{"kp-old"}})
	east := startRegion(t, "cn-east-3", "11111111111111111111111111111111", cphsim.Options{Servers: 10, Seed: 42, Keypairs: []string{"kp-old"}})
	env := append(os.Environ(),
		"REDIS_URL="+r.URL(),
		"REKEY_REGION="+north.name,
		"REKEY_ENDPOINT="+north.fleet.url+",cn-east-3="+east.fleet.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
	var b strings.Builder
	b.WriteString("server_id,region,project_id\n")
	for _, rg := range []*region{north, east} {
		for _, s := range rg.fleet.sim.Servers() {
			b.WriteString(s.ServerID + "," + rg.name + "," + rg.project + "\n")
		}
	}
	list := filepath.Join(t.TempDir(), "fleet.csv")
	if err := os.WriteFile(list, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "kp.pem")
	id := strings.TrimSpace(enqueue(t, env, "start", "--actor", "alice", "--generate-keypair", "--private-key-out", keyFile,
		"--keypair-scope", "user", "--keypair", newKeypair, list))
	// Each part's history says who imported the keypair, and where.
	var st struct {
		History []rekey.HistoryEntry `json:"history"`
	}
	if err := json.Unmarshal([]byte(enqueue(t, env, "status", "--json", id)), &st); err != nil {
		t.Fatal(err)
	}
	imported := 0
	want := "keypair " + newKeypair + " imported into KPS in 2 projects: cn-north-4/" + testProject + ", cn-east-3/11111111111111111111111111111111"
	for _, h := range st.History {
		if h.Kind == rekey.HistoryKeypairImported && h.Actor == "alice" && h.Detail == want {
			imported++
		}
	}
	if imported != 2 {
		t.Errorf("history %+v: want each part to say alice imported the keypair: %q", st.History, want)
	}
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range []*region{north, east} {
		held, ok := rg.fleet.sim.ProjectKeypair(rg.project, newKeypair)
		if !ok {
			t.Errorf("%s: KPS of project %s holds no %s", rg.name, rg.project, newKeypair)
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(held.PublicKey))
		if err != nil || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) || held.Scope != "user" {
			t.Errorf("%s: KPS holds %+v (%v), not the file's public half in scope user", rg.name, held, err)
		}
	}
}

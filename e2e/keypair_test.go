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
	pem, signer := readKey(t, keyFile)
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
	noPrivateKey(t, pem, pages)
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
	env := twoRegionsEnv(r.URL(), north, east)
	list := placesList(t, []*region{north, east}, nil)
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
	_, signer := readKey(t, keyFile)
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

// noPrivateKey fails t if any of pages holds material of the private key
// in pem: a line of its PEM body, or its raw seed in the encodings a leak
// would take.
func noPrivateKey(t *testing.T, pem []byte, pages []string) {
	t.Helper()
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

// twoRegionsEnv is the environment of commands over north, the default
// place, and east, reached by --endpoint's REGION=URL (its KPS too).
func twoRegionsEnv(redisURL string, north, east *region) []string {
	return append(os.Environ(),
		"REDIS_URL="+redisURL,
		"REKEY_REGION="+north.name,
		"REKEY_ENDPOINT="+north.fleet.url+","+east.name+"="+east.fleet.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
}

// placesList writes a CSV target list of the regions' servers, with
// their region and project, but those in leaveOut.
func placesList(t *testing.T, regions []*region, leaveOut map[string]bool) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("server_id,region,project_id\n")
	for _, rg := range regions {
		for _, s := range rg.fleet.sim.Servers() {
			if !leaveOut[s.ServerID] {
				b.WriteString(s.ServerID + "," + rg.name + "," + rg.project + "\n")
			}
		}
	}
	list := filepath.Join(t.TempDir(), "fleet.csv")
	if err := os.WriteFile(list, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return list
}

// TestRetireOldKeypairTwoProjects is the key's whole life over two
// (region, project) pairs, with real worker processes: --generate-keypair
// writes a 0600 private key and imports its public half into both
// projects' KPS; the rotation moves every target onto it and verifies;
// the retire, scheduled on the workers, deletes the old keypair in the
// project where no server is on it any more and keeps it, naming the
// server, in the project where one outside the rotation still is. Rollback
// is refused after it, and the private key is nowhere in Redis (task
// payloads included), the worker's logs, the commands' output, the
// console's API or /metrics.
func TestRetireOldKeypairTwoProjects(t *testing.T) {
	r := testredis.Mini(t)
	north := startRegion(t, "cn-north-4", testProject, cphsim.Options{Servers: 10, Seed: 51, JobLatency: 200 * time.Millisecond, Keypairs: []string{"kp-old"}})
	east := startRegion(t, "cn-east-3", "11111111111111111111111111111111", cphsim.Options{Servers: 10, Seed: 52, JobLatency: 200 * time.Millisecond, Keypairs: []string{"kp-old"}})
	env := twoRegionsEnv(r.URL(), north, east)
	outsider := east.fleet.sim.Servers()[3].ServerID
	list := placesList(t, []*region{north, east}, map[string]bool{outsider: true})
	addr := freeAddr(t)
	w := startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr)
	base := "http://" + addr
	waitHTTP(t, base+"/readyz")

	keyFile := filepath.Join(t.TempDir(), "kp.pem")
	out := enqueue(t, env, "start", "--json", "--generate-keypair", "--private-key-out", keyFile, "--keypair", newKeypair, list)
	var st started
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Servers != 19 {
		t.Fatalf("start output %q (%v): want 19 servers", out, err)
	}
	pages := []string{out}
	if _, code, stderr := enqueueCode(t, env, "status", "--wait", "--interval", "250ms", st.Rotation); code != 0 {
		t.Fatalf("status --wait: exit %d (%s), want the rotation to succeed", code, stderr)
	}

	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key file mode %v, want 0600", fi.Mode().Perm())
	}
	pem, signer := readKey(t, keyFile)
	for _, rg := range []*region{north, east} {
		held, ok := rg.fleet.sim.ProjectKeypair(rg.project, newKeypair)
		pub, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(held.PublicKey))
		if !ok || perr != nil || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) {
			t.Fatalf("%s: KPS holds %+v (%v, %v): not the file's public half", rg.name, held, ok, perr)
		}
		for _, s := range rg.fleet.sim.Servers() {
			if kp, _ := rg.fleet.sim.Keypair(s.ServerID); (kp == newKeypair) == (s.ServerID == outsider) {
				t.Errorf("%s: server %s on %s", rg.name, s.ServerID, kp)
			}
		}
	}

	// The dry run says what the retire will do and does nothing.
	dry := enqueue(t, env, "retire", "--dry-run", st.Rotation)
	keptWhy := "kp-old in cn-east-3/" + east.project + ": 1 server still uses it: " + outsider
	keptLine := "kept " + keptWhy
	if !strings.Contains(dry, "would delete kp-old in cn-north-4/"+testProject) || !strings.Contains(dry, "would keep "+keptWhy) {
		t.Fatalf("dry run:\n%s", dry)
	}
	if _, ok := north.fleet.sim.ProjectKeypair(north.project, "kp-old"); !ok {
		t.Fatal("the dry run deleted kp-old")
	}

	// Scheduled on the workers, twice: enqueued once.
	sched := enqueue(t, env, "retire", "--after", "1s", st.Rotation)
	if again := enqueue(t, env, "retire", "--after", "1h", st.Rotation); !strings.Contains(again, "already scheduled") {
		t.Errorf("second --after: %q, want it left as scheduled", again)
	}
	var status struct {
		Retired *struct {
			Places []struct {
				Region    string `json:"region"`
				ProjectID string `json:"project_id"`
				Deleted   []struct {
					Keypair string `json:"keypair"`
				} `json:"deleted"`
				Kept []struct {
					Keypair string   `json:"keypair"`
					Servers int      `json:"servers"`
					Sample  []string `json:"sample"`
				} `json:"kept"`
			} `json:"places"`
		} `json:"retired"`
		RetireError string `json:"retire_error"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for status.Retired == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no retire outcome 30s after %q (error %q)", sched, status.RetireError)
		}
		time.Sleep(200 * time.Millisecond)
		if err := json.Unmarshal([]byte(enqueue(t, env, "status", "--json", st.Rotation)), &status); err != nil {
			t.Fatal(err)
		}
	}
	if p := status.Retired.Places; len(p) != 2 || p[0].ProjectID != testProject || len(p[0].Deleted) != 1 || len(p[0].Kept) != 0 ||
		p[1].ProjectID != east.project || len(p[1].Deleted) != 0 || len(p[1].Kept) != 1 || p[1].Kept[0].Sample[0] != outsider {
		t.Fatalf("status's retire: %+v", p)
	}
	if _, ok := north.fleet.sim.ProjectKeypair(north.project, "kp-old"); ok {
		t.Error("cn-north-4 still holds kp-old, which no server uses")
	}
	if _, ok := east.fleet.sim.ProjectKeypair(east.project, "kp-old"); !ok {
		t.Error("cn-east-3 lost kp-old, which a server still uses")
	}
	for _, rg := range []*region{north, east} {
		if _, ok := rg.fleet.sim.ProjectKeypair(rg.project, newKeypair); !ok {
			t.Errorf("%s lost the target keypair", rg.name)
		}
	}

	// Run again here: nothing changes; status shows it.
	again := enqueue(t, env, "retire", st.Rotation)
	if !strings.Contains(again, "deleted kp-old in cn-north-4/"+testProject+"\n") || !strings.Contains(again, keptLine) {
		t.Errorf("retire run again:\n%s", again)
	}
	text := enqueue(t, env, "status", st.Rotation)
	if !strings.Contains(text, "old keypairs retired at") || !strings.Contains(text, keptLine) {
		t.Errorf("status:\n%s", text)
	}
	_, code, stderr := enqueueCode(t, env, "rollback", st.Rotation)
	if code != 2 || !strings.Contains(stderr, "kp-old in cn-north-4/"+testProject) {
		t.Errorf("rollback after the retire: exit %d, %q; want 2 naming the deleted keypair", code, stderr)
	}

	pages = append(pages, dry, sched, again, text, stderr)
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
	if !strings.Contains(w.logs.String(), "old keypairs retired") {
		t.Error("the worker's logs do not tell the retire")
	}
	pages = append(pages, w.logs.String(), redisDump(t, r.Client(t)))
	noPrivateKey(t, pem, pages)
}

// readKey reads the private key --generate-keypair wrote: its PEM, and it
// parsed.
func readKey(t *testing.T, keyFile string) ([]byte, ssh.Signer) {
	t.Helper()
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatalf("the private key file does not parse: %v", err)
	}
	return pem, signer
}

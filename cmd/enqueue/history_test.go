package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// TestControlsRecordTheActor: start, pause, resume and cancel name who ran
// them in the rotation's history (--actor, REKEY_ACTOR, else $USER), which
// status shows: its last entries as text, all of it with --json.
func TestControlsRecordTheActor(t *testing.T) {
	r := testredis.Mini(t)
	envs := map[string]string{"REDIS_URL": r.URL(), "USER": "os-user"}
	file := writeFile(t, "servers.txt", "aaa\nbbb\nccc\n")
	steps := []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"start", "--keypair", "kp", "--skip-matching=false", "--rotation-id", "r-who", "--actor", "alice", file}, nil},
		{[]string{"pause", "r-who"}, map[string]string{"REKEY_ACTOR": "bob"}},
		{[]string{"resume", "--max-errors", "2", "--actor", "carol", "r-who"}, nil},
		{[]string{"cancel", "r-who"}, nil},
	}
	for _, s := range steps {
		e := map[string]string{}
		for k, v := range envs {
			e[k] = v
		}
		for k, v := range s.env {
			e[k] = v
		}
		if code, _, stderr := runCmd(t, e, "", s.args...); code != 0 {
			t.Fatalf("%v: exit %d, stderr %s", s.args, code, stderr)
		}
	}
	code, stdout, stderr := runCmd(t, envs, "", "status", "--json", "r-who")
	if code != 0 {
		t.Fatalf("status --json: exit %d, stderr %s", code, stderr)
	}
	var st struct {
		History []rekey.HistoryEntry `json:"history"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	var got []string
	for _, h := range st.History {
		got = append(got, string(h.Kind)+" by "+h.Actor)
	}
	want := []string{"created by alice", "wave_started by cph-rekey", "paused by bob", "resumed by carol", "cancelled by os-user",
		"finished by cph-rekey"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("history %v\nwant %v", got, want)
	}
	if d := st.History[3].Detail; !strings.Contains(d, "max errors 0 -> 2") {
		t.Fatalf("resume's detail %q: want the new budget", d)
	}
	code, stdout, _ = runCmd(t, envs, "", "status", "r-who")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || len(lines) != 7 || !strings.HasPrefix(lines[1], "history (last 5 of 6") {
		t.Fatalf("status: exit %d, want the status line and the last 5 entries:\n%s", code, stdout)
	}
	if f := strings.Fields(lines[5]); len(f) < 4 || f[2] != "cancelled" || f[3] != "os-user" {
		t.Fatalf("status: line %q, want the cancel by os-user", lines[5])
	}
}

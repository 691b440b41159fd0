package rekey_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExternalModule runs the test of testdata/tool, a module outside
// this one that imports only rekey and rekey/rekeytest and drives a
// rotation to completion: the proof that a tool needs nothing internal
// (the compiler refuses an internal import across modules). The module is
// copied to a temporary directory with its replace directive pointed back
// here, so the tree is never written; it is built offline from the module
// cache when it can be (GOPROXY=off), and with the environment's proxy
// otherwise.
func TestExternalModule(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"go.mod", "go.sum", "tool_test.go"} {
		b, err := os.ReadFile(filepath.Join(root, "testdata", "tool", name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "go.mod" {
			if !strings.Contains(string(b), "=> ../..") {
				t.Fatal("testdata/tool/go.mod has no replace directive pointing at this module")
			}
			b = []byte(strings.ReplaceAll(string(b), "=> ../..", "=> "+root))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"test", "-count=1", "./..."}
	if raceEnabled {
		args = append(args, "-race") // the packages are then in the build cache already
	}
	run := func(proxy string) (string, error) {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
		if proxy != "" {
			cmd.Env = append(cmd.Env, "GOPROXY="+proxy)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("off")
	if err != nil && strings.Contains(out, "GOPROXY=off") {
		t.Logf("not all modules are in the cache; building with the environment's proxy:\n%s", out)
		out, err = run("")
	}
	if err != nil {
		t.Fatalf("go test in the external module: %v\n%s", err, out)
	}
	t.Logf("external module:\n%s", out)
}

package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
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

package rekey

import (
	"context"
	"fmt"
	"slices"

	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// KeypairReadAction is the IAM action the keypair pre-flight needs
// (ShowKeypair); credentials without it start rotations with
// Request.SkipKeypairCheck.
const KeypairReadAction = "kps:SSHKeyPair:get"

// MissingKeypairError is the pre-flight's refusal of a rotation whose
// keypair does not exist in the project: CPH would fail every server
// naming it. It is an input problem: errors.As finds it and an
// *InputError around it.
type MissingKeypairError struct {
	// Keypairs are the missing keypairs, sorted.
	Keypairs []string
	// ProjectID is the project whose KPS does not hold them.
	ProjectID string
}

func (e *MissingKeypairError) Error() string {
	what := "keypair " + e.Keypairs[0] + " does not"
	if len(e.Keypairs) > 1 {
		what = fmt.Sprintf("keypairs %v do not", e.Keypairs)
	}
	return fmt.Sprintf("%s exist in project %s: import it into KPS (DEW key pairs) first; nothing was enqueued", what, e.ProjectID)
}

// checkKeypairs is the pre-flight: it asks the project's KPS for each
// distinct keypair the rotation sets (ShowKeypair, one call each) and
// refuses the rotation when any is missing, before the fleet is read and
// before anything is written. names may repeat and hold "" (a target on
// the rotation's keypair); a name that is not a keypair name is left to
// the plan's validation, which says where it is.
func checkKeypairs(ctx context.Context, kc *kps.Client, names []string) error {
	seen := map[string]bool{}
	var missing []string
	for _, name := range names {
		if seen[name] || kps.CheckName(name) != nil {
			continue
		}
		seen[name] = true
		_, err := kc.Show(ctx, name)
		switch {
		case err == nil:
		case kps.IsNotFound(err):
			missing = append(missing, name)
		case kps.IsDenied(err):
			return wrap(fmt.Errorf("check keypair %s in project %s: %w (the credentials need %s, or skip the check)",
				name, kc.ProjectID(), err, KeypairReadAction))
		default:
			return wrap(fmt.Errorf("check keypair %s in project %s: %w", name, kc.ProjectID(), err))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return &InputError{Err: &MissingKeypairError{Keypairs: missing, ProjectID: kc.ProjectID()}}
	}
	return nil
}

// targetKeypairs lists the keypairs of spec's targets other than its own.
func targetKeypairs(spec tasks.Spec) []string {
	var names []string
	for _, t := range spec.Targets {
		if t.Keypair != "" && t.Keypair != spec.Keypair {
			names = append(names, t.Keypair)
		}
	}
	return names
}

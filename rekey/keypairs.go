package rekey

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// KeypairReadAction is the IAM action the keypair pre-flight needs
// (ShowKeypair); credentials without it start rotations with
// Request.SkipKeypairCheck.
const KeypairReadAction = "kps:SSHKeyPair:get"

// MissingKeypair is a keypair a rotation sets that a project's KPS does
// not hold.
type MissingKeypair struct {
	Keypair string
	// Region and ProjectID are the place; empty: the client's own
	// (Options.CPH).
	Region, ProjectID string
}

// MissingKeypairError is the pre-flight's refusal of a rotation whose
// keypairs do not all exist in the projects of their servers: CPH would
// fail every server naming one. It is an input problem: errors.As finds it
// and an *InputError around it.
type MissingKeypairError struct {
	// Missing are the keypairs not found, by keypair, then region and
	// project.
	Missing []MissingKeypair
}

// Error names each missing keypair and the projects it is missing in.
func (e *MissingKeypairError) Error() string {
	var parts []string
	for i := 0; i < len(e.Missing); {
		kp := e.Missing[i].Keypair
		var where []string
		for ; i < len(e.Missing) && e.Missing[i].Keypair == kp; i++ {
			m := e.Missing[i]
			w := "project " + m.ProjectID
			if m.Region != "" {
				w += " (" + m.Region + ")"
			}
			where = append(where, w)
		}
		parts = append(parts, fmt.Sprintf("keypair %s does not exist in %s", kp, strings.Join(where, ", ")))
	}
	return strings.Join(parts, "; ") + ": import it into KPS (DEW key pairs) there first; nothing was enqueued"
}

// kpsAt is the KPS client of place p, made the first time it is asked for,
// on the region's KPS endpoint (CPH.KPSEndpoint) and the place's project,
// with the client's credentials.
func (c *Client) kpsAt(p tasks.Place) (*kps.Client, error) {
	if c.cph == nil {
		return nil, badInput("asking KPS needs the client's Options.CPH")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if kc := c.kps[p]; kc != nil {
		return kc, nil
	}
	project := c.cph.ProjectID
	if p.ProjectID != "" {
		project = p.ProjectID
	}
	kc, err := kps.NewClient(kps.Config{Endpoint: c.cph.kpsEndpoint(p.Region), ProjectID: project,
		Credentials: c.cph.credentials(), HTTPClient: c.cph.HTTPClient, ReadRetries: 3})
	if err != nil {
		return nil, &InputError{Err: fmt.Errorf("KPS client of %s: %w", p, err)}
	}
	if c.kps == nil {
		c.kps = map[tasks.Place]*kps.Client{}
	}
	c.kps[p] = kc
	return kc, nil
}

// checkKeypairs is the pre-flight: in the place of each spec it asks KPS
// for each distinct keypair the spec's servers are to end on (ShowKeypair,
// one call each) and refuses the rotation when any is missing anywhere,
// naming them all, before the fleet is read and before anything is
// written. A name that is not a keypair name is left to the plan's
// validation, which says where it is.
func (c *Client) checkKeypairs(ctx context.Context, specs []tasks.Spec) error {
	var missing []MissingKeypair
	for _, spec := range specs {
		kc, err := c.kpsAt(spec.Place)
		if err != nil {
			return err
		}
		for _, name := range keypairsOf(spec) {
			_, err := kc.Show(ctx, name)
			switch {
			case err == nil:
			case kps.IsNotFound(err):
				region := spec.Place.Region
				if region == "" {
					region = c.cph.Region
				}
				missing = append(missing, MissingKeypair{Keypair: name, Region: region, ProjectID: kc.ProjectID()})
			case kps.IsDenied(err):
				return wrap(fmt.Errorf("check keypair %s in project %s: %w (the credentials need %s, or skip the check)",
					name, kc.ProjectID(), err, KeypairReadAction))
			default:
				return wrap(fmt.Errorf("check keypair %s in project %s: %w", name, kc.ProjectID(), err))
			}
		}
	}
	if len(missing) > 0 {
		slices.SortFunc(missing, func(a, b MissingKeypair) int {
			return strings.Compare(a.Keypair+" "+a.Region+" "+a.ProjectID, b.Keypair+" "+b.Region+" "+b.ProjectID)
		})
		return &InputError{Err: &MissingKeypairError{Missing: missing}}
	}
	return nil
}

// keypairsOf lists, once each, the keypairs spec's servers are to end on.
func keypairsOf(spec tasks.Spec) []string {
	seen := map[string]bool{}
	var names []string
	add := func(name string) {
		if !seen[name] && kps.CheckName(name) == nil {
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(spec.Targets) == 0 {
		add(spec.Keypair)
	}
	for _, t := range spec.Targets {
		add(cmp.Or(t.Keypair, spec.Keypair))
	}
	return names
}

package rekey

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Keypair scopes for ImportKeypair.
const (
	// ScopeDomain makes the keypair usable by every IAM user of the
	// account: the default, since the workers may run as another user
	// than the one importing the key.
	ScopeDomain = kps.ScopeDomain
	// ScopeUser keeps it to the importing user.
	ScopeUser = kps.ScopeUser
)

// KeypairImportAction is the IAM action ImportKeypair needs.
const KeypairImportAction = "kps:SSHKeyPair:create"

// GeneratedKeypair is an ed25519 keypair made on this machine. Only its
// public half is meant to leave it: the private key can only be written to
// a file of its own (WritePrivateKey), and the type prints without it.
type GeneratedKeypair struct {
	// PublicKey is the OpenSSH authorized_keys line, "ssh-ed25519 AAAA…
	// comment": what ImportKeypair sends to KPS.
	PublicKey string
	// Fingerprint is the public key's SHA256 fingerprint, as ssh-keygen -l
	// shows it.
	Fingerprint string
	private     []byte // PEM, OpenSSH format
}

// GenerateKeypair makes an ed25519 keypair with comment (e.g. the
// keypair's name) in both halves.
func GenerateKeypair(comment string) (*GeneratedKeypair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate an ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("generate an ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode the private key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return &GeneratedKeypair{PublicKey: line, Fingerprint: ssh.FingerprintSHA256(sshPub), private: pem.EncodeToMemory(block)}, nil
}

// String shows the public half only.
func (k *GeneratedKeypair) String() string {
	return "GeneratedKeypair{" + k.Fingerprint + ", private key not shown}"
}

// GoString is String, so %#v does not print the private key either.
func (k *GeneratedKeypair) GoString() string { return k.String() }

// WritePrivateKey writes the private key, in OpenSSH format, to a new file
// at path with mode 0600. It never overwrites: an existing path is an
// error for which errors.Is(err, fs.ErrExist) holds.
func (k *GeneratedKeypair) WritePrivateKey(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("private key file %s exists: it is never overwritten: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("private key file: %w", err)
	}
	if _, err := f.Write(k.private); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write private key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write private key file %s: %w", path, err)
	}
	return nil
}

// KeypairImport says what ImportKeypair imports, and where.
type KeypairImport struct {
	// Name is the keypair's name in KPS, the rotation's Keypair.
	Name string
	// PublicKey is an OpenSSH authorized_keys line
	// (GeneratedKeypair.PublicKey).
	PublicKey string
	// Scope is ScopeDomain or ScopeUser. Empty: ScopeDomain.
	Scope string
	// Targets are the rotation's targets: the keypair is imported into the
	// project of each (region, project) they are in. Empty: the client's
	// own project (Options.CPH's), or Discover's places.
	Targets []Target
	// Discover, for a rotation that discovers its targets, imports into
	// each place the discovery reads (Discover's Regions, Projects or
	// AllProjects, resolved as Plan does); its filters play no part. Set
	// Targets or Discover, not both.
	Discover *Discover
}

// ImportKeypair imports k.PublicKey under k.Name into the KPS of every
// (region, project) of k.Targets, in the order they first appear (or of
// k.Discover's places, in the order it reads them), and
// returns those places ("region/project", "-" for the client's own).
// Importing the same key again is a no-op; another key under the name is
// an *InputError naming the project, and that keypair is left alone. It
// stops at the first place that fails, having imported into the places
// before it. It needs Options.CPH and the IAM action KeypairImportAction.
func (c *Client) ImportKeypair(ctx context.Context, k KeypairImport) ([]string, error) {
	if err := kps.CheckName(k.Name); err != nil {
		return nil, &InputError{Err: err}
	}
	if k.Scope != "" && k.Scope != ScopeDomain && k.Scope != ScopeUser {
		return nil, badInput("keypair scope %q: want %s or %s", k.Scope, ScopeDomain, ScopeUser)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.PublicKey)); err != nil {
		return nil, badInput("keypair %s: the public key is not an OpenSSH public key: %v", k.Name, err)
	}
	places := []tasks.Place{{}}
	switch {
	case len(k.Targets) > 0 && k.Discover != nil:
		return nil, badInput("keypair %s: both Targets and Discover are set: import into the places of one", k.Name)
	case k.Discover != nil:
		var err error
		if places, _, err = c.discoverPlaces(ctx, *k.Discover); err != nil {
			return nil, err
		}
	case len(k.Targets) > 0:
		places = places[:0]
		seen := map[tasks.Place]bool{}
		for _, t := range k.Targets {
			if p := c.placeOf(t); !seen[p] {
				seen[p] = true
				places = append(places, p)
			}
		}
	}
	var done []string
	for _, p := range places {
		if err := c.importAt(ctx, p, k); err != nil {
			return done, err
		}
		done = append(done, p.String())
	}
	return done, nil
}

// importedPlace names a place ImportKeypair returned with the client's own
// region and project for its "-".
func (c *Client) importedPlace(place string) string {
	region, project, ok := strings.Cut(place, "/")
	if !ok || c.cph == nil {
		return place
	}
	if region == "-" && c.cph.Region != "" {
		region = c.cph.Region
	}
	if project == "-" && c.cph.ProjectID != "" {
		project = c.cph.ProjectID
	}
	return region + "/" + project
}

// importAt imports k into the KPS of place p.
func (c *Client) importAt(ctx context.Context, p tasks.Place, k KeypairImport) error {
	kc, err := c.kpsAt(p)
	if err != nil {
		return err
	}
	_, err = kc.Import(ctx, kps.ImportRequest{Name: k.Name, PublicKey: k.PublicKey, Scope: k.Scope})
	switch {
	case err == nil:
		return nil
	case kps.IsConflict(err):
		return &InputError{Err: fmt.Errorf("import keypair %s into project %s: %w: pick another name, or delete that keypair first", k.Name, kc.ProjectID(), err)}
	case kps.IsDenied(err):
		return wrap(fmt.Errorf("import keypair %s into project %s: %w (the credentials need %s)", k.Name, kc.ProjectID(), err, KeypairImportAction))
	}
	return wrap(fmt.Errorf("import keypair %s into project %s: %w", k.Name, kc.ProjectID(), err))
}

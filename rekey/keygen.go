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

// ImportKeypair imports publicKey (an OpenSSH authorized_keys line) into
// the KPS of the client's own project (Options.CPH's) under name, with scope ScopeDomain or
// ScopeUser (empty: ScopeDomain). Importing the same key again is a no-op;
// another key under the name is an *InputError naming it, and the keypair
// in KPS is left alone. It needs Options.CPH and the IAM action
// KeypairImportAction.
func (c *Client) ImportKeypair(ctx context.Context, name, publicKey, scope string) error {
	kc, err := c.kpsAt(tasks.Place{})
	if err != nil {
		return err
	}
	if err := kps.CheckName(name); err != nil {
		return &InputError{Err: err}
	}
	if scope != "" && scope != ScopeDomain && scope != ScopeUser {
		return badInput("keypair scope %q: want %s or %s", scope, ScopeDomain, ScopeUser)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey)); err != nil {
		return badInput("keypair %s: the public key is not an OpenSSH public key: %v", name, err)
	}
	_, err = kc.Import(ctx, kps.ImportRequest{Name: name, PublicKey: publicKey, Scope: scope})
	switch {
	case err == nil:
		return nil
	case kps.IsConflict(err):
		return &InputError{Err: fmt.Errorf("import keypair %s into project %s: %w: pick another name, or delete that keypair first", name, kc.ProjectID(), err)}
	case kps.IsDenied(err):
		return wrap(fmt.Errorf("import keypair %s into project %s: %w (the credentials need %s)", name, kc.ProjectID(), err, KeypairImportAction))
	}
	return wrap(fmt.Errorf("import keypair %s into project %s: %w", name, kc.ProjectID(), err))
}

package kps

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// Scopes of a keypair.
const (
	// ScopeDomain is an account keypair: every IAM user of the account can
	// use it, which a rotation needs when its workers run as another IAM
	// user than the one who imported the key.
	ScopeDomain = "domain"
	// ScopeUser is a private keypair, usable only by the user who made it.
	ScopeUser = "user"
)

// TypeSSH is the type of an SSH keypair (the other, x509, is not used here).
const TypeSSH = "ssh"

// Keypair is a keypair as KPS shows it. KPS never shows an imported pair's
// private key, and this client never asks it to generate one.
type Keypair struct {
	Name        string `json:"name"`
	Type        string `json:"type,omitempty"`
	Scope       string `json:"scope,omitempty"`
	PublicKey   string `json:"public_key,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	UserID      string `json:"user_id,omitempty"`
}

// ImportRequest imports a public key into KPS under a name.
type ImportRequest struct {
	// Name is the keypair's name (see CheckName).
	Name string
	// PublicKey is the public key in OpenSSH authorized_keys form, e.g.
	// "ssh-ed25519 AAAA… comment".
	PublicKey string
	// Scope is ScopeDomain or ScopeUser. Empty: ScopeDomain.
	Scope string
}

// ListPageSize is the page size List asks for; KPS's default differs
// between its documents (50 or 1000), so it is always sent.
const ListPageSize = 100

// maxListPages stops List on a server that never ends its pages.
const maxListPages = 10000

// keypairPath is the path of the project's keypairs, or of one of them.
func (c *Client) keypairPath(name string) string {
	p := "/v3/" + c.projectID + "/keypairs"
	if name != "" {
		p += "/" + cph.Escape(name)
	}
	return p
}

// Show returns the keypair called name (ShowKeypair, GET
// /v3/{project_id}/keypairs/{name}). A keypair that does not exist gives
// an error for which IsNotFound is true.
func (c *Client) Show(ctx context.Context, name string) (*Keypair, error) {
	const op = "ShowKeypair"
	if err := CheckName(name); err != nil {
		return nil, &cph.Error{Op: op, Kind: cph.KindPermanent, Err: err}
	}
	var resp struct {
		Keypair *Keypair `json:"keypair"`
	}
	if err := c.api.Call(ctx, op, http.MethodGet, c.keypairPath(name), nil, nil, &resp); err != nil {
		return nil, err
	}
	if resp.Keypair == nil || resp.Keypair.Name != name {
		return nil, &cph.Error{Op: op, StatusCode: http.StatusOK, Kind: cph.KindTransient,
			Err: fmt.Errorf("answer: no keypair %q in it", name)}
	}
	return resp.Keypair, nil
}

// listResponse is a ListKeypairs page.
type listResponse struct {
	Keypairs []struct {
		Keypair Keypair `json:"keypair"`
	} `json:"keypairs"`
	PageInfo struct {
		NextMarker   string `json:"next_marker"`
		CurrentCount int    `json:"current_count"`
	} `json:"page_info"`
}

// List returns every keypair of the project (ListKeypairs, GET
// /v3/{project_id}/keypairs?limit&marker), following next_marker until a
// page names none.
func (c *Client) List(ctx context.Context) ([]Keypair, error) {
	const op = "ListKeypairs"
	var all []Keypair
	q := url.Values{"limit": {strconv.Itoa(ListPageSize)}}
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page == maxListPages {
			return nil, &cph.Error{Op: op, Kind: cph.KindTransient, Err: fmt.Errorf("more than %d pages of keypairs", maxListPages)}
		}
		var resp listResponse
		if err := c.api.Call(ctx, op, http.MethodGet, c.keypairPath(""), q, nil, &resp); err != nil {
			return nil, err
		}
		for _, k := range resp.Keypairs {
			all = append(all, k.Keypair)
		}
		next := resp.PageInfo.NextMarker
		if next == "" || len(resp.Keypairs) == 0 {
			return all, nil
		}
		if seen[next] {
			return nil, &cph.Error{Op: op, Kind: cph.KindTransient,
				Err: fmt.Errorf("page %d names marker %q again: the API ignores the marker", page+1, next)}
		}
		seen[next] = true
		q.Set("marker", next)
	}
}

// Import creates the keypair req.Name from req.PublicKey (CreateKeypair
// with a public_key, POST /v3/{project_id}/keypairs) and returns it. It is
// idempotent: when the name already holds the same public key (compared
// without the comment), the existing keypair is returned; a different key
// under the name is refused with an error for which IsConflict is true,
// and the existing keypair is left alone.
func (c *Client) Import(ctx context.Context, req ImportRequest) (*Keypair, error) {
	const op = "CreateKeypair"
	if req.Scope == "" {
		req.Scope = ScopeDomain
	}
	if err := checkImport(req); err != nil {
		return nil, &cph.Error{Op: op, Kind: cph.KindPermanent, Err: err}
	}
	body := struct {
		Keypair struct {
			Name      string `json:"name"`
			Type      string `json:"type"`
			PublicKey string `json:"public_key"`
			Scope     string `json:"scope"`
		} `json:"keypair"`
	}{}
	body.Keypair.Name, body.Keypair.Type = req.Name, TypeSSH
	body.Keypair.PublicKey, body.Keypair.Scope = strings.TrimSpace(req.PublicKey), req.Scope
	var resp struct {
		Keypair *Keypair `json:"keypair"`
	}
	err := c.api.Call(ctx, op, http.MethodPost, c.keypairPath(""), nil, body, &resp)
	if err == nil && resp.Keypair != nil {
		return resp.Keypair, nil
	}
	if err != nil && cph.KindOf(err) != cph.KindPermanent {
		return nil, err
	}
	// Refused (most likely: the name is taken) or an answer without the
	// keypair: what KPS holds now decides.
	kp, showErr := c.Show(ctx, req.Name)
	switch {
	case showErr == nil && SamePublicKey(kp.PublicKey, req.PublicKey):
		return kp, nil
	case showErr == nil:
		return nil, &cph.Error{Op: op, Kind: cph.KindPermanent,
			Err: fmt.Errorf("keypair %q exists in project %s with another public key (%s): %w", req.Name, c.projectID, kp.Fingerprint, ErrConflict)}
	case err != nil:
		return nil, err
	}
	return nil, showErr
}

func checkImport(req ImportRequest) error {
	if err := CheckName(req.Name); err != nil {
		return err
	}
	if req.Scope != ScopeDomain && req.Scope != ScopeUser {
		return fmt.Errorf("keypair %q: scope %q: want %q or %q", req.Name, req.Scope, ScopeDomain, ScopeUser)
	}
	if len(strings.Fields(req.PublicKey)) < 2 {
		return fmt.Errorf("keypair %q: public key is not in OpenSSH form (\"ssh-ed25519 AAAA…\")", req.Name)
	}
	if strings.Contains(req.PublicKey, "PRIVATE KEY") {
		// Refused before anything is sent, so a mixed-up file never leaves.
		return fmt.Errorf("keypair %q: a private key was given as the public key", req.Name)
	}
	return nil
}

// SamePublicKey reports whether two OpenSSH public keys are the same key:
// the same type and base64 body, whatever their comments.
func SamePublicKey(a, b string) bool {
	fa, fb := strings.Fields(a), strings.Fields(b)
	return len(fa) >= 2 && len(fb) >= 2 && fa[0] == fb[0] && fa[1] == fb[1]
}

// Delete deletes the keypair called name (DeleteKeypair, DELETE
// /v3/{project_id}/keypairs/{name}). Deleting a keypair that does not
// exist gives an error for which IsNotFound is true.
func (c *Client) Delete(ctx context.Context, name string) error {
	const op = "DeleteKeypair"
	if err := CheckName(name); err != nil {
		return &cph.Error{Op: op, Kind: cph.KindPermanent, Err: err}
	}
	return c.api.Call(ctx, op, http.MethodDelete, c.keypairPath(name), nil, nil, nil)
}

// ErrConflict is wrapped by Import's error when the name holds another key.
var ErrConflict = errors.New("keypair name taken by another key")

// IsNotFound reports whether err is KPS's answer that the keypair does not
// exist (HTTP 404, other than the gateway's "API does not exist", which
// means a wrong endpoint).
func IsNotFound(err error) bool {
	var e *cph.Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound && e.Code != cph.CodeAPINotFound
}

// IsConflict reports whether err is Import's refusal of a different key
// under a name already taken.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsDenied reports whether err is a refusal of the credentials (HTTP 401)
// or of their permissions (HTTP 403), e.g. an IAM policy without the
// kps:SSHKeyPair actions.
func IsDenied(err error) bool {
	var e *cph.Error
	return errors.As(err, &e) && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden)
}

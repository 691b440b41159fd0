package cphsim

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The simulated Key Pair Service (KPS) calls, served under
// /v3/{project_id}/keypairs as on DEW's KMS host. They go through
// authentication, the project check and Options.Deny like the CPH calls,
// but neither quotas nor injected faults, which are the CPH API's.
const (
	APIShowKeypair   API = "ShowKeypair"   // GET /v3/{project_id}/keypairs/{name}
	APIListKeypairs  API = "ListKeypairs"  // GET /v3/{project_id}/keypairs?limit&marker
	APICreateKeypair API = "CreateKeypair" // POST /v3/{project_id}/keypairs
	APIDeleteKeypair API = "DeleteKeypair" // DELETE /v3/{project_id}/keypairs/{name}
)

// KPSAPIs lists the simulated KPS calls.
func KPSAPIs() []API {
	return []API{APIShowKeypair, APIListKeypairs, APICreateKeypair, APIDeleteKeypair}
}

func (a API) kps() bool { return slices.Contains(KPSAPIs(), a) }

// Error codes of the simulated KPS. Its documents show only "KPS.XXX", so
// these codes are the simulator's; the statuses (400, and 404 for an
// unknown keypair, which Terraform's provider reads as "gone") are what the
// documents and the provider show.
const (
	KPSCodeBadRequest      = "KPS.0001" // 400: a bad name, type, scope or body
	KPSCodeKeypairExists   = "KPS.0002" // 400: the name is taken
	KPSCodeKeypairNotFound = "KPS.0003" // 404: no keypair of that name
)

// kpsPageDefault is ListKeypairs' page size when no limit is sent (the
// documents say 50 or 1000).
const kpsPageDefault = 50

var kpsName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// keypairs is the KPS store: each project's keypairs by name. Projects
// start with Options.Keypairs. Without Options.Keypairs every name exists
// until deleted, as a phantom keypair with no public key, so that fleets
// rotated to any name keep working; keypairs created through KPS are real
// in either mode. s.mu guards it.
type keypairs struct {
	seeds    []string
	open     bool
	projects map[string]*projectKeypairs
}

type projectKeypairs struct {
	byName  map[string]*storedKeypair
	deleted map[string]bool // open mode: phantom names deleted
}

type storedKeypair struct {
	name, scope, publicKey string
}

func newKeypairs(o Options) keypairs {
	return keypairs{seeds: o.Keypairs, open: len(o.Keypairs) == 0, projects: map[string]*projectKeypairs{}}
}

func (k *keypairs) project(id string) *projectKeypairs {
	p := k.projects[id]
	if p == nil {
		p = &projectKeypairs{byName: map[string]*storedKeypair{}, deleted: map[string]bool{}}
		for _, name := range k.seeds {
			p.byName[name] = &storedKeypair{name: name, scope: "domain", publicKey: seedPublicKey(name)}
		}
		k.projects[id] = p
	}
	return p
}

// find returns the keypair name in project, a phantom one in open mode.
func (k *keypairs) find(project, name string) (*storedKeypair, bool) {
	p := k.project(project)
	if kp, ok := p.byName[name]; ok {
		return kp, true
	}
	if k.open && !p.deleted[name] && kpsName.MatchString(name) {
		return &storedKeypair{name: name, scope: "domain"}, true
	}
	return nil, false
}

// exists reports whether UpdateKeypair may set name in project.
func (k *keypairs) exists(project, name string) bool {
	_, ok := k.find(project, name)
	return ok
}

// seedPublicKey is a made-up but well-formed ed25519 public key for a
// seeded keypair, the same for the same name.
func seedPublicKey(name string) string {
	sum := sha256.Sum256([]byte("cphsim seed " + name))
	blob := append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), sum[:]...)
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob)
}

// fingerprint is the OpenSSH SHA256 fingerprint of an authorized_keys line.
func fingerprint(publicKey string) string {
	f := strings.Fields(publicKey)
	if len(f) < 2 {
		return ""
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// keypairWire is a keypair in KPS answers.
type keypairWire struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Scope       string `json:"scope"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
}

func (kp *storedKeypair) wire() keypairWire {
	return keypairWire{Name: kp.name, Type: "ssh", Scope: kp.scope, PublicKey: kp.publicKey, Fingerprint: fingerprint(kp.publicKey)}
}

// serveKPS does the work of one KPS call.
func (s *Sim) serveKPS(api API, r *request) (any, int, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch api {
	case APIShowKeypair:
		kp, ok := s.kps.find(r.project, r.param)
		if !ok {
			return nil, 0, errorf(http.StatusNotFound, KPSCodeKeypairNotFound, "The keypair %s does not exist.", r.param)
		}
		return map[string]keypairWire{"keypair": kp.wire()}, http.StatusOK, nil
	case APIListKeypairs:
		return s.listKeypairs(r)
	case APICreateKeypair:
		return s.createKeypair(r)
	case APIDeleteKeypair:
		p := s.kps.project(r.project)
		if _, ok := s.kps.find(r.project, r.param); !ok {
			return nil, 0, errorf(http.StatusNotFound, KPSCodeKeypairNotFound, "The keypair %s does not exist.", r.param)
		}
		delete(p.byName, r.param)
		p.deleted[r.param] = true
		return nil, http.StatusNoContent, nil
	}
	return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "unsupported call")
}

// listKeypairs pages the project's stored keypairs in name order; a marker
// is the last name of the previous page.
func (s *Sim) listKeypairs(r *request) (any, int, *apiError) {
	limit := kpsPageDefault
	if v := first(r.query, "limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "Parameter limit %q is invalid.", v)
		}
		limit = n
	}
	p := s.kps.project(r.project)
	names := make([]string, 0, len(p.byName))
	for name := range p.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	start := 0
	if m := first(r.query, "marker"); m != "" {
		start, _ = slices.BinarySearch(names, m)
		if start < len(names) && names[start] == m {
			start++
		}
	}
	page := names[start:min(start+limit, len(names))]
	type entry struct {
		Keypair keypairWire `json:"keypair"`
	}
	out := struct {
		Keypairs []entry `json:"keypairs"`
		PageInfo struct {
			NextMarker   string `json:"next_marker,omitempty"`
			CurrentCount int    `json:"current_count"`
		} `json:"page_info"`
	}{Keypairs: make([]entry, 0, len(page))}
	for _, name := range page {
		out.Keypairs = append(out.Keypairs, entry{p.byName[name].wire()})
	}
	out.PageInfo.CurrentCount = len(page)
	if start+limit < len(names) {
		out.PageInfo.NextMarker = page[len(page)-1]
	}
	return out, http.StatusOK, nil
}

// createKeypair imports a public key. The simulator refuses to generate a
// pair: no caller of this project asks it to, and a generated private key
// is what a rotation must never receive.
func (s *Sim) createKeypair(r *request) (any, int, *apiError) {
	var in struct {
		Keypair struct {
			Name      string `json:"name"`
			Type      string `json:"type"`
			PublicKey string `json:"public_key"`
			Scope     string `json:"scope"`
		} `json:"keypair"`
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The request body is invalid: %v", err)
	}
	k := in.Keypair
	switch {
	case !kpsName.MatchString(k.Name):
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The keypair name is invalid.")
	case k.Type != "" && k.Type != "ssh" && k.Type != "x509":
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The keypair type is invalid.")
	case k.Scope != "" && k.Scope != "domain" && k.Scope != "user":
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The keypair scope is invalid.")
	case k.PublicKey == "":
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The simulator does not generate keypairs: give a public_key.")
	case fingerprint(k.PublicKey) == "":
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeBadRequest, "The public key is invalid.")
	}
	p := s.kps.project(r.project)
	if _, ok := p.byName[k.Name]; ok {
		return nil, 0, errorf(http.StatusBadRequest, KPSCodeKeypairExists, "The keypair %s already exists.", k.Name)
	}
	kp := &storedKeypair{name: k.Name, scope: k.Scope, publicKey: strings.TrimSpace(k.PublicKey)}
	if kp.scope == "" {
		kp.scope = "user"
	}
	p.byName[k.Name] = kp
	delete(p.deleted, k.Name)
	w := kp.wire()
	return map[string]any{"keypair": map[string]string{
		"name": w.Name, "type": w.Type, "public_key": w.PublicKey, "fingerprint": w.Fingerprint, "user_id": "",
	}}, http.StatusOK, nil
}

// KeypairInfo is a keypair the simulated KPS holds.
type KeypairInfo struct {
	Name, Scope, PublicKey string
}

// ProjectKeypair returns the keypair name of project as KPS holds it
// (ok false if KPS would answer 404; a phantom keypair of the open mode
// has no public key).
func (s *Sim) ProjectKeypair(project, name string) (KeypairInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kp, ok := s.kps.find(project, name)
	if !ok {
		return KeypairInfo{}, false
	}
	return KeypairInfo{Name: kp.name, Scope: kp.scope, PublicKey: kp.publicKey}, true
}

package cphsim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Place is a project a Cloud serves, in a region: a Sim of its own, whose
// Options.ProjectID is the project's id.
type Place struct {
	Region string
	// Name is the project's name in IAM: "" is Region, the region's own
	// (system) project; a sub-project is named Region_suffix.
	Name string
	Sim  *Sim
}

// GlobalProject is the name of the project a Cloud's IAM lists in no
// region, as IAM lists the account's global projects beside the regional
// ones: a discovery across projects must skip it.
const GlobalProject = "MOS"

// Cloud serves several projects, in one or more regions, behind one
// endpoint, each a Sim with its own fleet, quotas and faults: a CPH or KPS
// call goes to the Sim of the project in its path. It also serves IAM's
// KeystoneListAuthProjects (GET /v3/auth/projects), the projects the
// credentials reach: its places, each region's own project (an empty
// fleet, when no place is it) and GlobalProject. Point every region's
// endpoint and the IAM endpoint at it:
//
//	cloud := cphsim.NewCloud(
//		cphsim.Place{Region: "cn-north-4", Sim: north},
//		cphsim.Place{Region: "cn-north-4", Name: "cn-north-4_web", Sim: web},
//	)
//	srv := httptest.NewServer(cloud)
//
// The places share credentials: IAM authenticates with the first's.
// Requests for a project the cloud does not serve, and the /_sim test
// aids, go to the first place's Sim (which answers 403 CPS.0001 for
// another project); each Sim is inspected directly.
type Cloud struct {
	places   []Place // the places given, then the regions' own projects added
	projects []iamProject
	byID     map[string]*Sim
}

// iamProject is a project as KeystoneListAuthProjects shows it.
type iamProject struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	ParentID    string   `json:"parent_id"`
	DomainID    string   `json:"domain_id"`
	IsDomain    bool     `json:"is_domain"`
	Enabled     bool     `json:"enabled"`
	Description string   `json:"description"`
	Links       iamLinks `json:"links"`
}

type iamLinks struct {
	Self string `json:"self"`
}

// pageLinks are a list's links; IAM sends null for the pages it does not
// have, and this list is one page.
type pageLinks struct {
	Self     string  `json:"self"`
	Previous *string `json:"previous"`
	Next     *string `json:"next"`
}

// NewCloud returns a Cloud of places. It needs at least one, each a Sim
// serving one project of its own, with a region and a name IAM can show.
func NewCloud(places ...Place) (*Cloud, error) {
	c := &Cloud{byID: map[string]*Sim{}}
	if len(places) == 0 {
		return nil, errors.New("cphsim: a cloud needs a place")
	}
	own := map[string]string{} // region → its own project's id
	for i, p := range places {
		switch {
		case p.Sim == nil || p.Sim.opts.ProjectID == "":
			return nil, fmt.Errorf("cphsim: place %d: want a Sim serving one project (Options.ProjectID)", i+1)
		case c.byID[p.Sim.opts.ProjectID] != nil:
			return nil, fmt.Errorf("cphsim: place %d: project %s served twice", i+1, p.Sim.opts.ProjectID)
		case p.Region == "" || p.Name != "" && p.Name != p.Region && !strings.HasPrefix(p.Name, p.Region+"_"):
			return nil, fmt.Errorf("cphsim: place %d: name %q is not its region %q or %s_{suffix}", i+1, p.Name, p.Region, p.Region)
		}
		c.byID[p.Sim.opts.ProjectID] = p.Sim
		if p.Name == "" || p.Name == p.Region {
			own[p.Region] = p.Sim.opts.ProjectID
		}
	}
	first := places[0].Sim.opts
	for _, p := range places {
		if _, ok := own[p.Region]; !ok {
			// IAM always has a region's own project; here it holds no
			// servers.
			sim := New(Options{ProjectID: derivedID("project:" + p.Region), AccessKey: first.AccessKey, SecretKey: first.SecretKey,
				SecurityToken: first.SecurityToken, AuthToken: first.AuthToken, Clock: first.Clock, Keypairs: first.Keypairs})
			own[p.Region] = sim.opts.ProjectID
			places = append(places, Place{Region: p.Region, Sim: sim})
		}
	}
	domain := derivedID("domain")
	for _, p := range places {
		id := p.Sim.opts.ProjectID
		c.byID[id] = p.Sim
		name, parent := p.Name, own[p.Region]
		if name == "" || name == p.Region {
			name, parent = p.Region, domain
		}
		c.projects = append(c.projects, iamProject{ID: id, Name: name, ParentID: parent, DomainID: domain, Enabled: true})
	}
	c.projects = append(c.projects, iamProject{ID: derivedID("project:" + GlobalProject), Name: GlobalProject,
		ParentID: domain, DomainID: domain, Enabled: true})
	c.places = places
	return c, nil
}

// derivedID is a stable 32-hex id named by what.
func derivedID(what string) string {
	sum := sha256.Sum256([]byte("cphsim " + what))
	return hex.EncodeToString(sum[:16])
}

// Places are the places the cloud serves: those given to NewCloud, then
// the regions' own projects it added.
func (c *Cloud) Places() []Place { return append([]Place(nil), c.places...) }

// ServeHTTP answers IAM's project list, and passes every other request to
// the Sim of the project in its path.
func (c *Cloud) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.TrimSuffix(r.URL.Path, "/") == "/v3/auth/projects" {
		c.serveAuthProjects(w, r)
		return
	}
	sim := c.places[0].Sim
	if parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3); len(parts) >= 2 && (parts[0] == "v1" || parts[0] == "v3") {
		if s := c.byID[parts[1]]; s != nil {
			sim = s
		}
	}
	sim.ServeHTTP(w, r)
}

// serveAuthProjects answers GET /v3/auth/projects as IAM documents it
// (iam_06_0003): every project the caller reaches, with its links. It
// authenticates as the API gateway does, and needs no IAM policy.
func (c *Cloud) serveAuthProjects(w http.ResponseWriter, r *http.Request) {
	s := c.places[0].Sim
	at := s.now()
	s.mu.Lock()
	reqID := newID(s.rng)
	s.mu.Unlock()
	w.Header().Set("X-Request-Id", reqID)
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet {
		writeError(w, reqID, errorf(http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment"))
		return
	}
	body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if e := s.authenticate(r, body, at); e != nil {
		writeError(w, reqID, e)
		return
	}
	base := "https://iam.myhuaweicloud.com/v3"
	projects := make([]iamProject, len(c.projects))
	for i, p := range c.projects {
		p.Links = iamLinks{Self: base + "/projects/" + p.ID}
		projects[i] = p
	}
	writeJSON(w, http.StatusOK, struct {
		Projects []iamProject `json:"projects"`
		Links    pageLinks    `json:"links"`
	}{projects, pageLinks{Self: base + "/auth/projects"}})
}

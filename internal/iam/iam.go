// Package iam is the client of the one Identity and Access Management call
// a rotation across projects needs: the projects the credentials can reach
// (KeystoneListAuthProjects, GET /v3/auth/projects), and the region each
// project is in, read from its name.
//
//	c, err := iam.NewClient(iam.Config{Endpoint: iam.EndpointFrom(os.Getenv), Credentials: creds})
//	projects, err := c.AuthProjects(ctx)
//	for _, p := range projects {
//		region, ok := iam.RegionOf(p.Name, known)
//		…
//	}
//
// It signs with the CPH client's AK/SK signer and shares its transport and
// errors (internal/cph): IAM is a global service, so no project is sent.
package iam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// EnvEndpoint names the official SDK's IAM endpoint override.
const EnvEndpoint = "HUAWEICLOUD_SDK_IAM_ENDPOINT"

// DefaultEndpoint is the global IAM endpoint, the SDK's default.
const DefaultEndpoint = "https://iam.myhuaweicloud.com"

// EndpointFrom is the IAM endpoint as the SDK finds it: EnvEndpoint when
// set, else DefaultEndpoint.
func EndpointFrom(getenv func(string) string) string {
	if v := strings.TrimSpace(getenv(EnvEndpoint)); v != "" {
		return v
	}
	return DefaultEndpoint
}

// Config configures a Client. Endpoint and Credentials are required.
type Config struct {
	// Endpoint is IAM's scheme and host (EndpointFrom), or the simulator's.
	Endpoint string
	// Credentials sign every request.
	Credentials cph.Credentials
	// HTTPClient, Timeout and ReadRetries are as in cph.Config.
	HTTPClient  *http.Client
	Timeout     time.Duration
	ReadRetries int
}

// Client calls IAM. It is safe for concurrent use.
type Client struct {
	api *cph.Client
}

// NewClient checks cfg and returns a Client. Errors name the offending
// Config field and never contain credentials.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("iam config: empty Endpoint (set " + EnvEndpoint + ")")
	}
	api, err := cph.NewClient(cph.Config{Endpoint: cfg.Endpoint, Global: true, Credentials: cfg.Credentials,
		HTTPClient: cfg.HTTPClient, Timeout: cfg.Timeout, ReadRetries: cfg.ReadRetries})
	if err != nil {
		return nil, fmt.Errorf("iam config: %w", errors.Unwrap(err))
	}
	return &Client{api: api}, nil
}

// Project is a project as IAM lists it. A region's own (system) project
// is named after the region, e.g. cn-north-4; a sub-project
// {region}_{suffix}, with ParentID the region's project; other projects
// (such as the global MOS) are in no region.
type Project struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	ParentID    string `json:"parent_id"`
	DomainID    string `json:"domain_id"`
	Enabled     bool   `json:"enabled"`
	Description string `json:"description"`
}

// projectsResponse is the answer of GET /v3/auth/projects.
type projectsResponse struct {
	Projects []Project `json:"projects"`
}

// AuthProjects returns the projects the credentials can reach
// (KeystoneListAuthProjects, GET /v3/auth/projects), in IAM's order. The
// call needs no IAM policy; a project without an id or a name is an error,
// since nothing could be done with it.
func (c *Client) AuthProjects(ctx context.Context) ([]Project, error) {
	const op = "KeystoneListAuthProjects"
	var resp projectsResponse
	if err := c.api.Call(ctx, op, http.MethodGet, "/v3/auth/projects", nil, nil, &resp); err != nil {
		return nil, err
	}
	for i, p := range resp.Projects {
		if p.ID == "" || p.Name == "" {
			return nil, &cph.Error{Op: op, StatusCode: http.StatusOK, Kind: cph.KindTransient,
				Err: fmt.Errorf("answer: project %d has no id or no name (%+v)", i+1, p)}
		}
	}
	return resp.Projects, nil
}

// RegionOf is the region of the project called name: name itself for a
// region's own project ("cn-north-4"), the part before the first '_' for
// a sub-project ("cn-north-4_web"). ok is false when that is not a region
// known reports true for (a global project such as MOS), or the suffix is
// empty.
func RegionOf(name string, known func(string) bool) (region string, ok bool) {
	region, suffix, sub := strings.Cut(name, "_")
	if sub && suffix == "" || !known(region) {
		return "", false
	}
	return region, true
}

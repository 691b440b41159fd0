package cph

import (
	"fmt"
	"slices"
	"strings"
)

// regions are the regions the CPH API is served in: the official Go SDK's
// region table (services/cph/v1/region) and the three regions the API
// reference lists besides (reference/kps-regions.md §2).
var regions = [...]string{
	"af-north-1", "ap-southeast-1", "ap-southeast-3", "cn-east-2", "cn-east-3", "cn-east-4",
	"cn-north-4", "cn-north-9", "cn-south-1", "cn-southwest-2", "la-north-2", "la-south-2",
	"ru-northwest-2",
}

// Regions returns the regions the CPH API is known to be served in, sorted.
// A region outside it can still be reached through an endpoint override.
func Regions() []string { return slices.Clone(regions[:]) }

// EnvRegionPrefix starts the environment variable that overrides a
// region's CPH endpoint, as the official SDKs read it:
// HUAWEICLOUD_SDK_REGION_CPH_CN_NORTH_4 for cn-north-4.
const EnvRegionPrefix = "HUAWEICLOUD_SDK_REGION_CPH_"

// RegionEnv names the environment variable that overrides region's
// endpoint: EnvRegionPrefix and the region upper-cased, '-' as '_'.
func RegionEnv(region string) string {
	return EnvRegionPrefix + strings.ToUpper(strings.ReplaceAll(region, "-", "_"))
}

// Endpoints resolves the endpoint of each region a rotation reaches. The
// zero value gives every region its conventional endpoint,
// https://cph.{region}.myhuaweicloud.com.
type Endpoints struct {
	// Region is the default region: the one a plain --endpoint URL (Plain)
	// and targets without a region of their own are in.
	Region string
	// Plain is the endpoint of the default region (a plain --endpoint
	// URL), as before rotations spanned regions.
	Plain string
	// Regions maps a region to its endpoint (--endpoint REGION=URL),
	// before the environment.
	Regions map[string]string
	// Getenv reads the SDK's per-region overrides (RegionEnv); nil reads
	// none.
	Getenv func(string) string
}

// Config returns base, the default region's configuration, for region:
// its endpoint is an explicit REGION=URL first, then the SDK's environment
// override, then the plain endpoint for the default region, then the
// convention. An empty region is the default region: base as it is.
func (e Endpoints) Config(base Config, region string) Config {
	if region == "" {
		return base
	}
	base.Region, base.Endpoint = region, e.endpoint(region)
	return base
}

func (e Endpoints) endpoint(region string) string {
	if u := e.Regions[region]; u != "" {
		return u
	}
	if e.Getenv != nil && region != "" {
		// The SDK accepts a comma-separated list and uses the first.
		if u, _, _ := strings.Cut(e.Getenv(RegionEnv(region)), ","); strings.TrimSpace(u) != "" {
			return strings.TrimSpace(u)
		}
	}
	if region == e.Region {
		return e.Plain
	}
	return ""
}

// Known reports whether region can be reached: a known CPH region, the
// default region, or one given an endpoint of its own.
func (e Endpoints) Known(region string) bool {
	if region == "" {
		return false
	}
	return slices.Contains(regions[:], region) || region == e.Region || e.endpoint(region) != ""
}

// KnownRegions returns the regions Known accepts, sorted.
func (e Endpoints) KnownRegions() []string {
	rs := Regions()
	for r := range e.Regions {
		rs = append(rs, r)
	}
	if e.Region != "" {
		rs = append(rs, e.Region)
	}
	slices.Sort(rs)
	return slices.Compact(rs)
}

// ParseEndpoints reads the values of a repeated --endpoint flag: at most
// one plain URL (the default region's endpoint) and any number of
// REGION=URL, one per region.
func ParseEndpoints(values []string) (plain string, perRegion map[string]string, err error) {
	for _, v := range values {
		v = strings.TrimSpace(v)
		region, u, ok := strings.Cut(v, "=")
		if !ok || strings.Contains(region, "/") {
			if plain != "" {
				return "", nil, fmt.Errorf("endpoint %q: a plain URL is given twice (name the others' regions: REGION=URL)", v)
			}
			plain = v
			continue
		}
		if !regionPattern.MatchString(region) {
			return "", nil, fmt.Errorf("endpoint %q: %q is not a region name like cn-north-4", v, region)
		}
		if _, err := endpointURL("", u); err != nil {
			return "", nil, fmt.Errorf("endpoint of region %s: %w", region, err)
		}
		if perRegion == nil {
			perRegion = map[string]string{}
		}
		if _, dup := perRegion[region]; dup {
			return "", nil, fmt.Errorf("endpoint of region %s given twice", region)
		}
		perRegion[region] = u
	}
	if plain != "" {
		if _, err := endpointURL("", plain); err != nil {
			return "", nil, err
		}
	}
	return plain, perRegion, nil
}

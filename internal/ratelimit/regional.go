package ratelimit

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// RegionalLimit is a rate and the regions that have another: each
// region's API gateway has its own quota, and some are larger.
type RegionalLimit struct {
	Default Limit
	Regions map[string]Limit
}

var regionName = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)

// ParseRegionalLimit reads a rate as a flag writes it: "10/s:1" for every
// region, or with overrides before or after it, comma-separated:
// "cn-north-4=20/s:1,10/s:1". Without a plain rate, def is the default.
func ParseRegionalLimit(s string, def Limit) (RegionalLimit, error) {
	rl := RegionalLimit{Default: def}
	plain := false
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		region, spec, override := strings.Cut(part, "=")
		if !override {
			if plain {
				return RegionalLimit{}, fmt.Errorf("%q: two rates for every region (%s): give the others a region: region=rate", s, part)
			}
			l, err := ParseLimit(part)
			if err != nil {
				return RegionalLimit{}, err
			}
			rl.Default, plain = l, true
			continue
		}
		region = strings.TrimSpace(region)
		if !regionName.MatchString(region) {
			return RegionalLimit{}, fmt.Errorf("%q: %q is not a region name like cn-north-4", s, region)
		}
		if _, dup := rl.Regions[region]; dup {
			return RegionalLimit{}, fmt.Errorf("%q: region %s given twice", s, region)
		}
		l, err := ParseLimit(spec)
		if err != nil {
			return RegionalLimit{}, fmt.Errorf("region %s: %w", region, err)
		}
		if rl.Regions == nil {
			rl.Regions = map[string]Limit{}
		}
		rl.Regions[region] = l
	}
	return rl, nil
}

// For is region's rate.
func (r RegionalLimit) For(region string) Limit {
	if l, ok := r.Regions[region]; ok {
		return l
	}
	return r.Default
}

// String writes r as ParseRegionalLimit reads it, regions sorted.
func (r RegionalLimit) String() string {
	var parts []string
	for _, region := range slices.Sorted(maps.Keys(r.Regions)) {
		parts = append(parts, region+"="+r.Regions[region].String())
	}
	return strings.Join(append(parts, r.Default.String()), ",")
}

package cph

import (
	"strings"
	"testing"
)

func TestEndpoints(t *testing.T) {
	env := map[string]string{
		"HUAWEICLOUD_SDK_REGION_CPH_CN_EAST_3":      "https://cph-proxy.example:8443, https://unused",
		"HUAWEICLOUD_SDK_REGION_CPH_AP_SOUTHEAST_1": "https://env.example",
	}
	e := Endpoints{Region: "cn-north-4", Plain: "http://127.0.0.1:9000",
		Regions: map[string]string{"ap-southeast-1": "http://127.0.0.1:9001"},
		Getenv:  func(k string) string { return env[k] }}
	base := Config{Region: "cn-north-4", Endpoint: "http://127.0.0.1:9000", ProjectID: "p"}
	tests := []struct{ region, want string }{
		{"", "http://127.0.0.1:9000"},               // the default place is base
		{"cn-north-4", "http://127.0.0.1:9000"},     // the plain --endpoint is the default region's
		{"ap-southeast-1", "http://127.0.0.1:9001"}, // REGION=URL before the environment
		{"cn-east-3", "https://cph-proxy.example:8443"},
		{"cn-south-1", ""}, // the convention, from Region
	}
	for _, tc := range tests {
		c := e.Config(base, tc.region)
		if c.Endpoint != tc.want || c.ProjectID != "p" {
			t.Errorf("Config(%q) = endpoint %q project %q, want %q", tc.region, c.Endpoint, c.ProjectID, tc.want)
		}
		u, err := endpointURL(c.Region, c.Endpoint)
		if err != nil {
			t.Errorf("Config(%q): %v", tc.region, err)
		} else if tc.want == "" && u.Host != "cph."+tc.region+".myhuaweicloud.com" {
			t.Errorf("Config(%q) reaches %s, want the convention", tc.region, u)
		}
	}
	if !e.Known("ap-southeast-1") || !e.Known("cn-east-3") || e.Known("xx-nowhere-1") || e.Known("") {
		t.Errorf("Known: want the configured and listed regions only")
	}
	env["HUAWEICLOUD_SDK_REGION_CPH_XX_NOWHERE_1"] = "https://x.example"
	if !e.Known("xx-nowhere-1") {
		t.Errorf("Known(xx-nowhere-1) with an endpoint in the environment = false")
	}
}

func TestParseEndpoints(t *testing.T) {
	plain, per, err := ParseEndpoints([]string{"http://127.0.0.1:9000", "cn-east-3=http://127.0.0.1:9001"})
	if err != nil || plain != "http://127.0.0.1:9000" || per["cn-east-3"] != "http://127.0.0.1:9001" {
		t.Fatalf("ParseEndpoints = %q %v %v", plain, per, err)
	}
	for _, bad := range [][]string{
		{"http://a", "http://b"},
		{"cn-east-3=http://a", "cn-east-3=http://b"},
		{"East=http://a"},
		{"cn-east-3=ftp://a"},
	} {
		if _, _, err := ParseEndpoints(bad); err == nil {
			t.Errorf("ParseEndpoints(%q) accepted", strings.Join(bad, " "))
		}
	}
}

package cphsim

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// LoadFleet reads a fleet for Options.Fleet from a file: CSV when the name
// ends in .csv, JSON otherwise (see ReadFleetCSV and ReadFleetJSON).
func LoadFleet(path string) ([]cph.Server, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load fleet: %w", err)
	}
	var fleet []cph.Server
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		fleet, err = ReadFleetCSV(bytes.NewReader(data))
	} else {
		fleet, err = ReadFleetJSON(data)
	}
	if err != nil {
		return nil, fmt.Errorf("load fleet %s: %w", path, err)
	}
	return fleet, nil
}

// ReadFleetJSON parses a JSON array of servers, or a ListCloudPhoneServers
// answer ({"servers":[…]}), with the API's field names. A server without
// "status" is normal (5).
func ReadFleetJSON(data []byte) ([]cph.Server, error) {
	type entry struct {
		cph.Server
		Status *int `json:"status"`
	}
	var list []entry
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var page struct {
			Servers []entry `json:"servers"`
		}
		if err := json.Unmarshal(trimmed, &page); err != nil {
			return nil, fmt.Errorf("parse JSON: %w", err)
		}
		list = page.Servers
	} else if err := json.Unmarshal(trimmed, &list); err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	fleet := make([]cph.Server, len(list))
	for i, e := range list {
		fleet[i] = e.Server
		fleet[i].Status = cph.ServerStatusNormal
		if e.Status != nil {
			fleet[i].Status = *e.Status
		}
	}
	return fleet, nil
}

// ReadFleetCSV parses CSV whose header names columns with the API's field
// names (server_id is required; server_name, keypair_name, status,
// availability_zone, server_model_name, phone_model_name, network_version,
// enterprise_project_id, create_time and update_time are optional). An
// empty status is normal (5).
func ReadFleetCSV(r io.Reader) ([]cph.Server, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("CSV line 1: no header")
		}
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	setters := map[string]func(*cph.Server, string) error{
		"server_id":             func(s *cph.Server, v string) error { s.ServerID = v; return nil },
		"server_name":           func(s *cph.Server, v string) error { s.ServerName = v; return nil },
		"keypair_name":          func(s *cph.Server, v string) error { s.KeypairName = v; return nil },
		"availability_zone":     func(s *cph.Server, v string) error { s.AvailabilityZone = v; return nil },
		"server_model_name":     func(s *cph.Server, v string) error { s.ServerModelName = v; return nil },
		"phone_model_name":      func(s *cph.Server, v string) error { s.PhoneModelName = v; return nil },
		"network_version":       func(s *cph.Server, v string) error { s.NetworkVersion = v; return nil },
		"enterprise_project_id": func(s *cph.Server, v string) error { s.EnterpriseProjectID = v; return nil },
		"create_time":           func(s *cph.Server, v string) error { s.CreateTime = v; return nil },
		"update_time":           func(s *cph.Server, v string) error { s.UpdateTime = v; return nil },
		"status": func(s *cph.Server, v string) error {
			if v == "" {
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("status %q is not an integer", v)
			}
			s.Status = n
			return nil
		},
	}
	cols := make([]func(*cph.Server, string) error, len(header))
	hasID := false
	for i, name := range header {
		name = strings.TrimSpace(strings.TrimPrefix(name, "\ufeff"))
		set, ok := setters[name]
		if !ok {
			return nil, fmt.Errorf("CSV line 1: unknown column %q", name)
		}
		cols[i] = set
		hasID = hasID || name == "server_id"
	}
	if !hasID {
		return nil, errors.New("CSV line 1: no server_id column")
	}
	var fleet []cph.Server
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return fleet, nil
		}
		if err != nil {
			return nil, fmt.Errorf("CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		s := cph.Server{Status: cph.ServerStatusNormal}
		for i, v := range rec {
			if err := cols[i](&s, strings.TrimSpace(v)); err != nil {
				return nil, fmt.Errorf("CSV line %d: %w", line, err)
			}
		}
		fleet = append(fleet, s)
	}
}

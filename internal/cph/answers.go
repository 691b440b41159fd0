package cph

import "fmt"

// Ids and codes in an answer are checked before the answer leaves the
// client: callers put them in URL paths and in tab- and newline-separated
// records (a rotation's Redis records), so an endpoint that sends anything
// else, by mistake or to forge entries, must not get it through. An answer
// that fails the check is treated like one that is not JSON: a transient
// error that says the API may have acted. Ids are what checkID accepts
// (CPH's are 32 hex digits, older ones UUIDs); codes are a service prefix
// and a number (CPS.0004, APIGW.0308). Messages are free text, which
// callers must keep on one line themselves.

// checker is an answer whose fields are checked after decoding.
type checker interface {
	check() error
}

func (r *UpdateKeypairResponse) check() error {
	if err := optionalID("request_id", r.RequestID); err != nil {
		return err
	}
	for i, j := range r.Jobs {
		if err := j.check(); err != nil {
			return fmt.Errorf("jobs[%d]: %w", i, err)
		}
	}
	return nil
}

func (j ServerJob) check() error {
	if err := optionalID("server_id", j.ServerID); err != nil {
		return err
	}
	if err := optionalID("job_id", j.JobID); err != nil {
		return err
	}
	return checkCode(j.ErrorCode)
}

func (r *ListJobsResponse) check() error {
	if err := optionalID("request_id", r.RequestID); err != nil {
		return err
	}
	for i := range r.Jobs {
		if err := r.Jobs[i].check(); err != nil {
			return fmt.Errorf("jobs[%d]: %w", i, err)
		}
	}
	return nil
}

func (j *Job) check() error {
	for _, f := range [...]struct{ name, v string }{{"request_id", j.RequestID}, {"job_id", j.JobID}, {"server_id", j.ServerID}} {
		if err := optionalID(f.name, f.v); err != nil {
			return err
		}
	}
	return checkCode(j.ErrorCode)
}

func (r *ListServersResponse) check() error {
	if err := optionalID("request_id", r.RequestID); err != nil {
		return err
	}
	for i := range r.Servers {
		if err := r.Servers[i].check(); err != nil {
			return fmt.Errorf("servers[%d]: %w", i, err)
		}
	}
	return nil
}

// check checks the server's id. Its keypair_name is left as the API gave
// it: callers compare it with names they chose, and those that keep it
// check it as a keypair name (a server on a name no keypair can have is a
// server to rotate, not an answer to refuse).
func (s *Server) check() error {
	return optionalID("server_id", s.ServerID)
}

// optionalID checks an id an answer may leave empty.
func optionalID(what, id string) error {
	if id == "" {
		return nil
	}
	return checkID(what, id)
}

// maxCodeBytes bounds an error code; documented ones have about ten.
const maxCodeBytes = 64

// checkCode checks an error code an answer may leave empty: letters,
// digits, '.', '_' and '-', at most maxCodeBytes.
func checkCode(code string) error {
	if len(code) > maxCodeBytes {
		return fmt.Errorf("bad error_code: %d bytes, longer than %d", len(code), maxCodeBytes)
	}
	for i := 0; i < len(code); i++ {
		if !codeByte(code[i]) {
			return fmt.Errorf("bad error_code %q: contains %q; codes are letters, digits, '.', '_' or '-'", code, code[i])
		}
	}
	return nil
}

func codeByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// cleanCode keeps the bytes of an error answer's code that a code may
// hold, at most maxCodeBytes of them: the answer is an error whatever its
// code, so a bad one is cleaned rather than refused.
func cleanCode(code string) string {
	b := make([]byte, 0, min(len(code), maxCodeBytes))
	for i := 0; i < len(code) && len(b) < maxCodeBytes; i++ {
		if codeByte(code[i]) {
			b = append(b, code[i])
		}
	}
	return string(b)
}

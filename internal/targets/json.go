package targets

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// json reads a JSON array whose elements are server id strings or
// {"server_id":…,"keypair_name":…} objects, token by token so that only
// one element is held at a time.
func (p *parser) json(r io.Reader) error {
	dec := json.NewDecoder(r)
	dec.UseNumber() // a number too big for a float64 is still just a number here
	tok, err := dec.Token()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return p.jsonError(0, 0, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		p.problem(0, "JSON input must be an array of server ids or objects, not %s", jsonKind(tok))
		return nil
	}
	n := 0
	for dec.More() {
		n++
		at := dec.InputOffset()
		if err := p.element(n, dec); err != nil {
			return p.jsonError(n, at, err)
		}
	}
	at := dec.InputOffset()
	if _, err := dec.Token(); err != nil { // the closing ']'
		return p.jsonError(0, at, err)
	}
	at = dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return p.jsonError(0, at, err)
		}
		p.problem(0, "unexpected data after the JSON array, which ends at byte %d", at)
	}
	return nil
}

// jsonError records a syntax error found after byte offset at of the input
// as a problem at element n (0: not in an element), and returns any other
// error, which is a failure to read. The offset is where the decoder
// stood, since json.SyntaxError.Offset of a Decoder is not an offset into
// the input.
func (p *parser) jsonError(n int, at int64, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		p.problem(n, "malformed JSON after byte %d: %s", at, strings.TrimPrefix(se.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF), err == io.EOF:
		p.problem(n, "malformed JSON after byte %d: input ends inside the array", at)
	default:
		return err
	}
	return nil
}

// element reads element n. Only syntax and read errors are returned; a
// well-formed element of the wrong shape is a problem.
func (p *parser) element(n int, dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok := tok.(type) {
	case string:
		p.add(n, Target{ServerID: tok})
		return nil
	case json.Delim:
		if tok == '{' {
			return p.object(n, dec)
		}
		p.problem(n, "want a server id string or an object, not an array")
		return skip(dec)
	}
	p.problem(n, "want a server id string or an object, not %s", jsonKind(tok))
	return nil
}

// object reads the rest of an object element: server_id, and optionally
// keypair_name, region and project_id. Field names must match
// exactly and unknown fields are rejected: a typo such as "keypair" for
// "keypair_name" would otherwise move that server to the rotation's keypair
// without a word. A null field counts as absent.
func (p *parser) object(n int, dec *json.Decoder) error {
	var t Target
	var hasID, hasKeypair, hasRegion, hasProject bool
	var bad string // the first thing wrong with the element
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		val, err := dec.Token()
		if err != nil {
			return err
		}
		if _, ok := val.(json.Delim); ok {
			if err := skip(dec); err != nil {
				return err
			}
		}
		if bad != "" {
			continue
		}
		name := key.(string) // the decoder only yields string keys
		dst, has := &t.ServerID, &hasID
		switch name {
		case colServerID:
		case colKeypairName:
			dst, has = &t.KeypairName, &hasKeypair
		case colRegion:
			dst, has = &t.Region, &hasRegion
		case colProjectID:
			dst, has = &t.ProjectID, &hasProject
		default:
			bad = fmt.Sprintf("unknown field %s", quote(name))
			continue
		}
		switch v := val.(type) {
		case nil:
		case string:
			if *has {
				bad = fmt.Sprintf("field %s given twice", name)
			}
			*dst, *has = v, true
		default:
			bad = fmt.Sprintf("%s must be a string, not %s", name, jsonKind(v))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return err
	}
	switch {
	case bad != "":
		p.problem(n, "%s", bad)
	case !hasID:
		p.problem(n, "object has no %s", colServerID)
	default:
		p.add(n, t)
	}
	return nil
}

// skip reads the rest of an array or object whose opening token was just
// read.
func skip(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '[' || d == '{' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// jsonKind names the JSON type of a token.
func jsonKind(tok any) string {
	switch tok := tok.(type) {
	case string:
		return "a string"
	case json.Delim:
		if tok == '{' {
			return "an object"
		}
		return "an array"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

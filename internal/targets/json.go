package targets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// jsonTarget is an object element. Unknown fields are rejected: a typo
// such as "keypair" for "keypair_name" would otherwise rotate that server
// to the rotation's keypair without a word.
type jsonTarget struct {
	ServerID    *string `json:"server_id"`
	KeypairName *string `json:"keypair_name"`
}

// json reads a JSON array whose elements are server id strings or
// jsonTarget objects, one element at a time.
func (p *parser) json(r io.Reader) error {
	dec := json.NewDecoder(r)
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
		var raw json.RawMessage
		at := dec.InputOffset()
		if err := dec.Decode(&raw); err != nil {
			return p.jsonError(n, at, err)
		}
		p.element(n, raw)
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

func (p *parser) element(n int, raw json.RawMessage) {
	switch raw[0] {
	case '"':
		var id string
		if err := json.Unmarshal(raw, &id); err != nil {
			p.problem(n, "malformed JSON string: %v", err)
			return
		}
		p.add(n, id, "")
	case '{':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var t jsonTarget
		if err := dec.Decode(&t); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				p.problem(n, "%s must be a string, not %s", te.Field, te.Value)
			} else {
				p.problem(n, "%s", strings.TrimPrefix(err.Error(), "json: "))
			}
			return
		}
		if t.ServerID == nil {
			p.problem(n, "object has no %s", colServerID)
			return
		}
		keypair := ""
		if t.KeypairName != nil {
			keypair = *t.KeypairName
		}
		p.add(n, *t.ServerID, keypair)
	default:
		p.problem(n, "want a server id string or an object, not %s", rawKind(raw[0]))
	}
}

// jsonKind names the JSON type of a token other than '['.
func jsonKind(tok any) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '{' {
			return "an object"
		}
		return fmt.Sprintf("%q", tok.String())
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// rawKind names the JSON type of a value other than a string or an object
// from its first byte.
func rawKind(first byte) string {
	switch first {
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

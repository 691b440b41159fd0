package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// protect lets a request through to h only with the token, when the
// server has one. Without a token (the port is bound to loopback) it lets
// through only requests addressed to a loopback name: a web page the
// operator visits could otherwise rebind its own name to 127.0.0.1 and
// read or steer rotations from the operator's browser (DNS rebinding).
func (s *Server) protect(h http.Handler) http.Handler {
	if s.opts.Token == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !loopbackHost(r.Host) {
				http.Error(w, fmt.Sprintf("forbidden: Host %q is not a loopback name; without --admin-token the admin port answers only localhost, 127.0.0.1 and [::1]", r.Host), http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	want := sha256.Sum256([]byte(s.opts.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if given, ok := credential(r); ok {
			// Hashing first makes the comparison's time independent of
			// the token's length too.
			got := sha256.Sum256([]byte(given))
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="cph-rekey", charset="UTF-8"`)
		http.Error(w, "unauthorized: basic auth with the admin token as password, or Authorization: Bearer <token>", http.StatusUnauthorized)
	})
}

// credential returns the password of HTTP basic auth (whatever the user
// name) or a bearer token.
func credential(r *http.Request) (string, bool) {
	if _, pass, ok := r.BasicAuth(); ok {
		return pass, true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// isLoopback reports whether a listen address (host:port) accepts only
// connections from this machine.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("not host:port: %w", err)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback(), nil
}

// loopbackHost reports whether a request's Host (with or without a port)
// names this machine: localhost, a 127.0.0.0/8 address or ::1.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

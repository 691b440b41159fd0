package tasks

import (
	"fmt"
	"regexp"
)

// Namespace separates deployments that share one Redis: every key the
// Store and the fleet limiter write and every asynq queue of the pipeline
// carry it, so workers, clients and consoles of one namespace never see
// another's rotations, tasks or quotas. The empty namespace is the
// default and keeps the names of releases without namespaces, so
// rotations in flight are untouched by an upgrade.
//
// A namespace never puts braces in a key: the hash tags that keep a
// rotation's keys (and a limiter key's pair) on one Redis Cluster slot
// stay the rotation id's (and the limiter key's) own.
type Namespace string

var namespacePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}$`)

// Validate checks a namespace: empty, or 1-32 letters, digits, '_' and
// '-', starting with a letter or digit. The other characters are refused
// because they would change what a key means: '{' and '}' move a Redis
// Cluster hash tag, and '.' and ':' are the separators below.
func (ns Namespace) Validate() error {
	if ns == "" || namespacePattern.MatchString(string(ns)) {
		return nil
	}
	return fmt.Errorf("namespace %q: want 1-32 letters, digits, '_' or '-', starting with a letter or digit", string(ns))
}

// KeyPrefix is the prefix of the Store's keys in ns: DefaultPrefix
// ("cph-rekey:") in the default namespace, "cph-rekey.<ns>:" in another.
// The '.' keeps the two apart: no default key starts "cph-rekey.".
func (ns Namespace) KeyPrefix() string {
	if ns == "" {
		return DefaultPrefix
	}
	return "cph-rekey." + string(ns) + ":"
}

// LimiterPrefix is the prefix of the fleet limiter's keys in ns:
// "cph-rekey:rl:" in the default namespace, "cph-rekey.<ns>:rl:" in
// another, so each deployment paces its own calls. Deployments that call
// the same CPH project share its quota at the API, not in Redis: give each
// its share of the rate.
func (ns Namespace) LimiterPrefix() string { return ns.KeyPrefix() + "rl:" }

// Queue is the name in ns of one of the pipeline's queues (QueuePoll,
// QueueSubmit, QueueEvents): the name itself in the default namespace,
// "<ns>.<name>" in another, so asynq's web UI lists a deployment's queues
// together.
func (ns Namespace) Queue(name string) string {
	if ns == "" {
		return name
	}
	return string(ns) + "." + name
}

// Queues returns the worker's queue weights (see the package function
// Queues) under their names in ns.
func (ns Namespace) Queues() map[string]int {
	out := map[string]int{}
	for q, w := range Queues() {
		out[ns.Queue(q)] = w
	}
	return out
}

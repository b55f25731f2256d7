package registry

import (
	"slices"
	"sort"
	"strings"
)

// Actions of a repository scope.
const (
	Pull     = "pull"
	PushPull = "push,pull"
)

// Scope returns the token scope for actions on a repository path, e.g.
// Scope("library/redis", Pull) = "repository:library/redis:pull".
func Scope(path, actions string) string { return "repository:" + path + ":" + actions }

// maxShardScopes bounds the scope text of one token request. A token
// carries one access entry per scope, and it travels in an Authorization
// header: proxies and nginx (Harbor's front) refuse header lines over 8 KiB
// by default. An access entry in a token takes about 2.2 times the bytes
// of its scope, so 3 KiB of scopes keep a token below that.
const maxShardScopes = 3 << 10

// scopeSet is a set of scopes: resource ("repository:NAME") → actions.
type scopeSet map[string][]string

// splitScope splits "type:name:actions" at its last colon (a name may hold
// a host:port) into resource and sorted actions.
func splitScope(s string) (string, []string) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || strings.IndexByte(s[:i], ':') < 0 {
		return s, nil // not type:name:actions; compared whole
	}
	acts := strings.Split(s[i+1:], ",")
	acts = slices.DeleteFunc(acts, func(a string) bool { return a == "" })
	sort.Strings(acts)
	return s[:i], slices.Compact(acts)
}

// covers reports whether the set grants scope s (all of its actions).
func (ss scopeSet) covers(s string) bool {
	res, acts := splitScope(s)
	have, ok := ss[res]
	if !ok {
		return false
	}
	for _, a := range acts {
		if !slices.Contains(have, a) {
			return false
		}
	}
	return true
}

// add merges s into the set.
func (ss scopeSet) add(s string) {
	res, acts := splitScope(s)
	have := append(ss[res], acts...)
	sort.Strings(have)
	ss[res] = slices.Compact(have)
}

// list renders the set as scope strings, in a stable order.
func (ss scopeSet) list() []string {
	out := make([]string, 0, len(ss))
	for res, acts := range ss {
		if len(acts) == 0 {
			out = append(out, res)
			continue
		}
		out = append(out, res+":"+strings.Join(acts, ","))
	}
	sort.Strings(out)
	return out
}

// size is the length of the scope text a token request for the set sends.
func (ss scopeSet) size() int {
	n := 0
	for _, s := range ss.list() {
		n += len(s) + 1
	}
	return n
}

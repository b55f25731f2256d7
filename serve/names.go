package serve

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/ferry-airgap/ferry/mapping"
)

// SourceRepo splits an image's source reference (as ferry.json records it,
// e.g. "registry.hub.docker.com/redis:7.2" or "quay.io/org/app@sha256:…")
// into its registry host and repository path. Docker Hub is one registry
// whatever it is called: the host becomes "docker.io" and a one-segment
// repository there means "library/NAME". The host is lower-cased.
func SourceRepo(source string) (host, repo string, err error) {
	h, rest, ok := strings.Cut(source, "/")
	if !ok || h == "" || rest == "" {
		return "", "", fmt.Errorf("source %q has no registry host", source)
	}
	if i := strings.Index(rest, "@"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		rest = rest[:i]
	}
	if rest == "" {
		return "", "", fmt.Errorf("source %q has no repository", source)
	}
	host = mapping.CanonicalRegistry(h)
	if host == mapping.DockerHub && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	return host, rest, nil
}

// HostSegment turns a registry host into a repository path segment: a port
// is kept after an underscore ("127.0.0.1:5000" → "127.0.0.1_5000"), since
// a colon cannot appear in a repository name.
func HostSegment(host string) string { return strings.ReplaceAll(host, ":", "_") }

// SourceName is the name an image is served under with WithSourceNames:
// host segment, then the repository path (docker.io/library/redis).
func SourceName(source string) (string, error) {
	host, repo, err := SourceRepo(source)
	if err != nil {
		return "", err
	}
	return HostSegment(host) + "/" + repo, nil
}

// joinPath joins a prefix and a path, ignoring an empty prefix.
func joinPath(prefix, p string) string {
	if prefix == "" {
		return p
	}
	return prefix + "/" + p
}

// cleanPrefix checks and normalises a --prefix value.
// ErrOptions: an option of New cannot be used (a bad --prefix).
var ErrOptions = errors.New("bad serve options")

func cleanPrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	for _, seg := range strings.Split(p, "/") {
		if !validComponent(seg) {
			return "", fmt.Errorf("--prefix %q: %q is not a valid repository path component (lower-case letters, digits, and . _ - between them)", p, seg)
		}
	}
	return p, nil
}

// componentRE is the distribution spec's path component grammar.
var componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)

func validComponent(s string) bool { return componentRE.MatchString(s) }

package serve

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-airgap/ferry/internal/names"
)

// SourceRepo splits an image's source reference (as ferry.json records it,
// e.g. "registry.hub.docker.com/redis:7.2" or "quay.io/org/app@sha256:…")
// into its registry host and repository path, by the rules of
// names.ParseReference: Docker Hub is one registry whatever it is called
// (the host becomes "docker.io") and a one-segment repository there means
// "library/NAME". The host is lower-cased.
func SourceRepo(source string) (host, repo string, err error) {
	ref, err := names.ParseReference(source)
	if err != nil {
		return "", "", fmt.Errorf("source: %w", err)
	}
	return ref.Host, ref.Repository, nil
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
		if !names.ValidComponent(seg) {
			return "", fmt.Errorf("--prefix %q: %q is not a valid repository path component (lower-case letters, digits, and . _ - between them)", p, seg)
		}
	}
	return p, nil
}

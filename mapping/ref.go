package mapping

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-airgap/ferry/internal/names"
)

// DockerHub is the canonical name ferry uses for Docker Hub, whatever a
// mapping file calls it (names.DockerHub).
const DockerHub = names.DockerHub

// CanonicalRegistry returns host in the form ferry compares and records
// registries in (names.CanonicalHost): lower case, every Docker Hub alias as
// "docker.io", the default ":443" dropped and any other ":port" kept. A path after the host (dregsy lets `registry:` carry one,
// e.g. "harbor.example.com/team") is kept as written after the canonical host.
func CanonicalRegistry(host string) string {
	h, rest, _ := strings.Cut(strings.TrimSpace(host), "/")
	h = names.CanonicalHost(h)
	if rest == "" {
		return h
	}
	return h + "/" + rest
}

// SourceRepository joins a task's registry and a mapping's path the way
// dregsy does (registry + "/" + path) and returns the full repository name
// with a canonical registry: SourceRepository("registry.hub.docker.com",
// "redis") is "docker.io/library/redis".
//
// The path may start with "/" (dregsy writes paths so). It must be a plain
// repository name in the OCI distribution grammar: no tag (":1.0"), no
// digest ("@sha256:..."), no "regex:" expression. A one-segment name on
// Docker Hub means "library/NAME". Despite its name the function serves
// target paths too: it does nothing source-specific.
func SourceRepository(registry, from string) (string, error) {
	host, prefix, err := splitRegistry(registry)
	if err != nil {
		return "", err
	}
	path, err := cleanRepoPath(from)
	if err != nil {
		return "", err
	}
	if prefix != "" {
		path = prefix + "/" + path
	}
	path = names.LibraryPath(host, path)
	name := host + "/" + path
	if len(name) > names.MaxNameLength {
		return "", fmt.Errorf("repository name %q is longer than %d characters", name, names.MaxNameLength)
	}
	return name, nil
}

// splitRegistry validates a `registry:` value and returns its canonical host
// and the repository path prefix after it, if any ("harbor.example.com/team").
func splitRegistry(registry string) (host, prefix string, err error) {
	reg := strings.TrimSpace(registry)
	if reg == "" {
		return "", "", errors.New("registry not set")
	}
	if i := strings.Index(reg, "://"); i >= 0 {
		return "", "", fmt.Errorf("registry %q is a URL; write the host only, e.g. %q", reg, strings.TrimRight(reg[i+3:], "/"))
	}
	host, prefix, _ = strings.Cut(CanonicalRegistry(reg), "/")
	if !names.ValidHost(host) {
		return "", "", fmt.Errorf("registry %q is not a host[:port]", reg)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" && !names.ValidRepository(prefix) {
		return "", "", fmt.Errorf("registry path %q is not a valid repository path (%s)", prefix, names.RepositoryRules)
	}
	return host, prefix, nil
}

// cleanRepoPath validates a mapping path and returns it without a leading
// "/". The messages say what is wrong in the user's terms.
func cleanRepoPath(p string) (string, error) {
	orig := p
	p = strings.TrimSpace(p)
	if strings.HasPrefix(p, regexPrefix) {
		return "", fmt.Errorf("%q is a regular expression; ferry needs a plain repository path", orig)
	}
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", errors.New("empty repository path")
	}
	if i := strings.IndexByte(p, '@'); i >= 0 {
		return "", fmt.Errorf("repository %q contains a digest; list repositories without digests (tags go under tags:)", orig)
	}
	last := p[strings.LastIndexByte(p, '/')+1:]
	if strings.Contains(last, ":") {
		return "", fmt.Errorf("repository %q contains a tag; list tags under the mapping's tags key", orig)
	}
	if len(p) > names.MaxNameLength {
		return "", fmt.Errorf("repository %q is longer than %d characters", orig, names.MaxNameLength)
	}
	if !names.ValidRepository(p) {
		return "", fmt.Errorf("repository %q is not a valid repository name (%s)", orig, names.RepositoryRules)
	}
	return p, nil
}

// looksLikeHost reports whether the first segment of a path looks like a
// registry host (names.LooksLikeHost).
func looksLikeHost(path string) bool { return names.LooksLikeHost(path) }

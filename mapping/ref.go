package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DockerHub is the canonical name ferry uses for Docker Hub, whatever a
// mapping file calls it.
const DockerHub = "docker.io"

// dockerHubAliases are the names under which Docker Hub is reached. They all
// denote one registry: the same repositories, tags and digests.
var dockerHubAliases = map[string]bool{
	"docker.io":               true,
	"index.docker.io":         true,
	"registry-1.docker.io":    true,
	"registry.hub.docker.com": true,
}

// maxNameLength is the longest repository name (host included) that the
// docker reference grammar accepts.
const maxNameLength = 255

var (
	// pathComponent is one path component of a repository name, from the OCI
	// distribution specification:
	// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
	pathComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	repoNameRE    = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)

	// hostRE is a registry host: a DNS name or IPv4 address, or a bracketed
	// IPv6 address, with an optional port.
	hostRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$`)
)

// IsDockerHub reports whether host names Docker Hub (docker.io,
// index.docker.io, registry-1.docker.io or registry.hub.docker.com, in any
// letter case). A host with an explicit port is not Docker Hub.
func IsDockerHub(host string) bool {
	return dockerHubAliases[strings.ToLower(strings.TrimSpace(host))]
}

// CanonicalRegistry returns host in the form ferry compares and records
// registries in: lower case, every Docker Hub alias as "docker.io", any
// ":port" kept. A path after the host (dregsy lets `registry:` carry one,
// e.g. "harbor.example.com/team") is kept as written after the canonical host.
func CanonicalRegistry(host string) string {
	host = strings.TrimSpace(host)
	h, rest, _ := strings.Cut(host, "/")
	h = strings.ToLower(h)
	if dockerHubAliases[h] {
		h = DockerHub
	}
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
	if host == DockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	name := host + "/" + path
	if len(name) > maxNameLength {
		return "", fmt.Errorf("repository name %q is longer than %d characters", name, maxNameLength)
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
	if !hostRE.MatchString(host) {
		return "", "", fmt.Errorf("registry %q is not a host[:port]", reg)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" && !repoNameRE.MatchString(prefix) {
		return "", "", fmt.Errorf("registry path %q is not a valid repository path (lower-case letters and digits, separated by '.', '_', '__', '-' or '/')", prefix)
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
	if !repoNameRE.MatchString(p) {
		return "", fmt.Errorf("repository %q is not a valid repository name (lower-case letters and digits, separated by '.', '_', '__', '-' or '/')", orig)
	}
	if len(p) > maxNameLength {
		return "", fmt.Errorf("repository %q is longer than %d characters", orig, maxNameLength)
	}
	return p, nil
}

// looksLikeHost reports whether the first segment of a path looks like a
// registry host (has a dot or a port, or is localhost), the way the docker
// reference grammar decides it.
func looksLikeHost(path string) bool {
	first, rest, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || rest == "" {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

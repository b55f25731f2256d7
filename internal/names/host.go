package names

import (
	"maps"
	"regexp"
	"slices"
	"strings"
)

// DockerHub is the one name ferry uses for Docker Hub in references,
// records and comparisons, whatever a user or a mapping file calls it.
const DockerHub = "docker.io"

// DockerHubAPI is the host that serves Docker Hub's registry API.
const DockerHubAPI = "registry-1.docker.io"

// dockerHubAliases are the names under which Docker Hub is reached. They all
// denote one registry: the same repositories, tags and digests.
// "hub.docker.com" (the web site) is not among them.
var dockerHubAliases = map[string]bool{
	"docker.io":               true,
	"index.docker.io":         true,
	"registry-1.docker.io":    true,
	"registry.hub.docker.com": true,
}

// DockerHubAliases returns, sorted, every name under which Docker Hub is
// reached (docker's certs.d, for one, may hold a folder under any of them).
func DockerHubAliases() []string {
	return slices.Sorted(maps.Keys(dockerHubAliases))
}

// hostRE is a registry host: a DNS name or IPv4 address, or a bracketed
// IPv6 address, with an optional port.
var hostRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$`)

// CanonicalHost returns the form ferry compares and records registry hosts
// in: surrounding space, an http:// or https:// scheme and anything from the
// first "/" removed, lower case, the default https port ":443" dropped, and
// every Docker Hub alias as DockerHub ("docker.io"). Any other port is kept:
// "Harbor.Example.com:8443" is "harbor.example.com:8443".
//
// CanonicalHost does not validate; see ValidHost.
func CanonicalHost(host string) string {
	h := strings.ToLower(host)
	// Each pass only removes bytes; repeat until nothing changes so that
	// the result is canonical too (" a:443 /x" and "a:443:443" end as "a").
	for {
		next := canonicalPass(h)
		if next == h {
			break
		}
		h = next
	}
	if dockerHubAliases[h] {
		return DockerHub
	}
	return h
}

func canonicalPass(h string) string {
	h = strings.TrimSpace(h)
	for _, scheme := range []string{"https://", "http://"} {
		h = strings.TrimPrefix(h, scheme)
	}
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ":443")
}

// IsDockerHub reports whether host names Docker Hub under any of its aliases
// (docker.io, index.docker.io, registry-1.docker.io,
// registry.hub.docker.com), in any letter case, with or without ":443".
func IsDockerHub(host string) bool { return CanonicalHost(host) == DockerHub }

// ValidHost reports whether h is a registry host[:port]: a DNS name, an IPv4
// address or a bracketed IPv6 address, with an optional port. No scheme, no
// path.
func ValidHost(h string) bool { return hostRE.MatchString(h) }

// LooksLikeHost reports whether a repository reference's first segment is a
// registry host, the way the docker reference grammar decides it: it has a
// "." or a ":" or is "localhost", and a path follows it.
func LooksLikeHost(ref string) bool {
	first, rest, ok := strings.Cut(strings.TrimPrefix(ref, "/"), "/")
	if !ok || rest == "" {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

// LibraryPath returns the repository path as host knows it: on Docker Hub a
// one-segment name means an official image, "library/NAME"; anywhere else,
// and for a path with a "/", the path is returned unchanged.
func LibraryPath(host, path string) string {
	if IsDockerHub(host) && path != "" && !strings.Contains(path, "/") {
		return "library/" + path
	}
	return path
}

package names

import (
	"errors"
	"fmt"
	"strings"
)

// ErrReference: a string is not a fully qualified image reference.
var ErrReference = errors.New("invalid image reference")

// Reference is a fully qualified image reference, split and canonical.
type Reference struct {
	Host       string // canonical host (CanonicalHost): "docker.io", "quay.io", "127.0.0.1:5000"
	Repository string // path with the library/ rule applied: "library/redis"
	Tag        string // empty when the reference has none
	Digest     string // "sha256:…"; empty when the reference has none
}

// Name is host/repository, without tag or digest.
func (r Reference) Name() string { return r.Host + "/" + r.Repository }

// String is the reference in canonical form: host/repository[:tag][@digest].
func (r Reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// ParseReference parses a fully qualified reference, as ferry records it
// (ferry.json's source): HOST/PATH[:TAG][@DIGEST]. The first segment is
// always the registry host, whatever it looks like, because ferry never
// records a reference without one. The host is canonicalised (every Docker
// Hub alias becomes "docker.io") and the library/ rule is applied, so
// "registry.hub.docker.com/redis:7.2" gives {docker.io library/redis 7.2 ""}.
// The path, tag and digest must follow the OCI grammar; errors wrap
// ErrReference.
func ParseReference(s string) (Reference, error) {
	rest, digest, hasDigest := strings.Cut(s, "@")
	if hasDigest && !ValidDigest(digest) {
		return Reference{}, fmt.Errorf("%w %q: bad digest", ErrReference, clip(s))
	}
	h, path, ok := strings.Cut(rest, "/")
	if !ok || h == "" {
		return Reference{}, fmt.Errorf("%w %q: no registry host", ErrReference, clip(s))
	}
	if !ValidHost(h) {
		return Reference{}, fmt.Errorf("%w %q: %q is not a registry host", ErrReference, clip(s), clip(h))
	}
	var tag string
	if i := strings.LastIndexByte(path, ':'); i >= 0 {
		path, tag = path[:i], path[i+1:]
		if !ValidTag(tag) {
			return Reference{}, fmt.Errorf("%w %q: bad tag", ErrReference, clip(s))
		}
	}
	if path == "" {
		return Reference{}, fmt.Errorf("%w %q: no repository", ErrReference, clip(s))
	}
	host := CanonicalHost(h)
	path = LibraryPath(host, path)
	if !ValidRepository(path) || len(host)+1+len(path) > MaxNameLength {
		return Reference{}, fmt.Errorf("%w %q: repository is not %s", ErrReference, clip(s), RepositoryRules)
	}
	return Reference{Host: host, Repository: path, Tag: tag, Digest: digest}, nil
}

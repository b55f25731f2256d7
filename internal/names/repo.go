package names

import "regexp"

// MaxNameLength is the longest repository name, registry host included,
// that the docker reference grammar accepts.
const MaxNameLength = 255

// MaxTagLength is the longest tag the distribution specification accepts.
const MaxTagLength = 128

var (
	// pathComponent is one component of a repository path, from the OCI
	// distribution specification: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
	pathComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	componentRE   = regexp.MustCompile(`^` + pathComponent + `$`)
	repositoryRE  = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)
	// tagRE is the distribution specification's tag grammar.
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// RepositoryRules says in words what ValidRepository accepts, for error
// messages.
const RepositoryRules = "lower-case letters and digits, separated by '.', '_', '__', '-' or '/'"

// ValidRepository reports whether p is a repository path in the OCI
// distribution grammar (lower-case components joined by "/", e.g.
// "cloudforet/spaceone/console"), at most MaxNameLength bytes long. It
// carries no host, tag or digest.
func ValidRepository(p string) bool {
	return p != "" && len(p) <= MaxNameLength && repositoryRE.MatchString(p)
}

// ValidComponent reports whether s is one component of a repository path
// (no "/").
func ValidComponent(s string) bool { return componentRE.MatchString(s) }

// ValidTag reports whether s is a tag in the OCI distribution grammar: a
// letter, digit or "_", then up to 127 letters, digits, ".", "_" or "-".
func ValidTag(s string) bool { return tagRE.MatchString(s) }

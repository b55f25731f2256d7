package filter

import (
	"fmt"
	"strings"
)

// Pattern is one name pattern written as a `regex:` item's expression:
// white space around it is trimmed, one leading '!' inverts it, and it is
// anchored as tag regexes are ('^' prepended unless it starts with one,
// '$' appended unless it ends with one), so it must match a whole name.
// Chart entries' `exclude:` lists use it for image names.
type Pattern struct {
	raw string
	m   *matcher
}

// ParsePattern parses a pattern; the error wraps ErrSyntax and names it.
func ParsePattern(s string) (*Pattern, error) {
	if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "!")) == "" {
		return nil, fmt.Errorf("%w %q: empty pattern", ErrSyntax, s)
	}
	m, err := parseMatcher(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrSyntax, s, err)
	}
	return &Pattern{raw: s, m: m}, nil
}

// Match reports whether the pattern selects a name: its expression matches
// one of names (or, for a '!' pattern, matches none of them).
func (p *Pattern) Match(names ...string) bool {
	hit := false
	for _, n := range names {
		hit = hit || p.m.re.MatchString(n)
	}
	return hit != p.m.inverted
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.raw }

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
		return nil, &patternError{s, "empty pattern"}
	}
	m, err := parseMatcher(s)
	if err != nil {
		return nil, &patternError{s, err.Error()}
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

// patternError is a bad pattern; it is an ErrSyntax.
type patternError struct{ pattern, reason string }

func (e *patternError) Error() string {
	return fmt.Sprintf("invalid name pattern %q: %s (a regular expression matched against the whole name; !PATTERN: the names it does not match)", e.pattern, e.reason)
}

func (e *patternError) Is(target error) bool { return target == ErrSyntax }

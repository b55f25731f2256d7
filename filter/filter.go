package filter

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/ferry-airgap/ferry/internal/names"
)

// ErrSyntax is wrapped by every error [Parse] returns. The message names the
// offending item and lists the accepted forms.
var ErrSyntax = errors.New("invalid tag filter item")

// Prefixes of the non-literal item forms. Matching is case-sensitive and the
// colon must follow the word directly, as in dregsy.
const (
	semverPrefix = "semver:"
	regexPrefix  = "regex:"
	keepPrefix   = "keep:"
	sha256Prefix = "sha256:"
)

// acceptedForms is appended to every syntax error.
const acceptedForms = "accepted forms: a tag (latest, 1.2.3), " +
	"[tag@]sha256:<64 lowercase hex>, 'regex: EXPR', 'regex: !EXPR', " +
	"'semver: RANGE', 'keep: REGEX', 'keep: latest N'"

// Pin is a digest pin written `sha256:<hex>` or `tag@sha256:<hex>`.
type Pin struct {
	Tag    string // "" when the item names only a digest
	Digest string // "sha256:<64 hex>"
}

// Filter is a parsed tags list. The zero value selects every tag.
type Filter struct {
	items     []string // trimmed items, input order, for String
	literals  []string // distinct literal tags, input order
	pins      []Pin    // distinct pins, input order
	semvers   []*semver.Constraints
	regexes   []*matcher
	keeps     []*matcher
	keepCount int // 0 means no limit (dregsy ignores 'keep: latest 0')
}

// matcher is a regex filter, possibly inverted with a leading '!'.
type matcher struct {
	re       *regexp.Regexp
	inverted bool
}

func (m *matcher) matches(tag string) bool {
	return m.re.MatchString(tag) != m.inverted
}

// Parse parses the items of a `tags:` list. Each item is trimmed of
// surrounding white space first. An empty list selects all tags.
func Parse(items []string) (*Filter, error) {
	f := &Filter{}
	for _, raw := range items {
		if err := f.add(raw); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func syntaxError(item, reason string) error {
	return fmt.Errorf("%w %q: %s; %s", ErrSyntax, item, reason, acceptedForms)
}

func (f *Filter) add(raw string) error {
	item := strings.TrimSpace(raw)
	switch {
	case item == "":
		return syntaxError(raw, "empty item")

	case strings.HasPrefix(item, semverPrefix):
		c, err := parseRange(item[len(semverPrefix):])
		if err != nil {
			return syntaxError(raw, err.Error())
		}
		f.semvers = append(f.semvers, c)

	case strings.HasPrefix(item, regexPrefix):
		m, err := parseMatcher(item[len(regexPrefix):])
		if err != nil {
			return syntaxError(raw, err.Error())
		}
		f.regexes = append(f.regexes, m)

	case strings.HasPrefix(item, keepPrefix):
		value := strings.TrimSpace(item[len(keepPrefix):])
		if n, ok, err := parseKeepLatest(value); err != nil {
			return syntaxError(raw, err.Error())
		} else if ok {
			f.keepCount = n // the last 'keep: latest' wins
			break
		}
		m, err := parseMatcher(value)
		if err != nil {
			return syntaxError(raw, err.Error())
		}
		f.keeps = append(f.keeps, m)

	case strings.HasPrefix(item, sha256Prefix) || strings.Contains(item, "@"):
		p, err := parsePin(item)
		if err != nil {
			return syntaxError(raw, err.Error())
		}
		if !slices.Contains(f.pins, p) {
			f.pins = append(f.pins, p)
		}

	case strings.Contains(item, ":"):
		prefix, _, _ := strings.Cut(item, ":")
		return syntaxError(raw, fmt.Sprintf("unknown prefix %q", prefix+":"))

	default:
		if !names.ValidTag(item) {
			return syntaxError(raw, "not a valid tag")
		}
		if !slices.Contains(f.literals, item) {
			f.literals = append(f.literals, item)
		}
	}
	f.items = append(f.items, item)
	return nil
}

// parseRange parses a semver range with Masterminds/semver. Pre-release tags
// are included in every range, as dregsy's blang/semver ranges include them.
// The blang-only operators '==' and '!' are rewritten to '=' and '!=' so that
// dregsy ranges written with them keep working.
func parseRange(s string) (*semver.Constraints, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty semver range")
	}
	c, err := semver.NewConstraint(rewriteBlangOps(s))
	if err != nil {
		return nil, fmt.Errorf("bad semver range: %v", err)
	}
	c.IncludePrerelease = true
	return c, nil
}

// rewriteBlangOps maps blang/semver's '==' to '=' and a lone '!' to '!='.
func rewriteBlangOps(s string) string {
	s = strings.ReplaceAll(s, "==", "=")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		if s[i] == '!' && (i+1 == len(s) || s[i+1] != '=') {
			b.WriteByte('=')
		}
	}
	return b.String()
}

// parseMatcher compiles a regex or keep expression the way dregsy does: the
// value is trimmed, one leading '!' inverts the match, and the expression is
// anchored by prepending '^' unless it starts with one and appending '$'
// unless it ends with one. Note that this is not the same as wrapping in
// ^(?:...)$: a top-level alternation 'a|b' becomes '^a|b$'.
func parseMatcher(value string) (*matcher, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, errors.New("empty regular expression")
	}
	m := &matcher{}
	if strings.HasPrefix(value, "!") {
		m.inverted = true
		value = value[1:]
	}
	if !strings.HasPrefix(value, "^") {
		value = "^" + value
	}
	if !strings.HasSuffix(value, "$") {
		value += "$"
	}
	re, err := regexp.Compile(value)
	if err != nil {
		return nil, fmt.Errorf("bad regular expression: %v", err)
	}
	m.re = re
	return m, nil
}

// parseKeepLatest recognises 'latest N' after 'keep:'. ok is false when value
// is a keep regex instead. 'keep: latest' alone stays a regex that keeps only
// the tag "latest", as in dregsy; 'latest' followed by white space and
// anything but one non-negative integer is an error.
func parseKeepLatest(value string) (n int, ok bool, err error) {
	rest, found := strings.CutPrefix(value, "latest")
	if !found || rest == "" || !isSpace(rest[0]) {
		return 0, false, nil
	}
	count := strings.TrimSpace(rest)
	if count == "" || strings.TrimLeft(count, "0123456789") != "" {
		return 0, false, fmt.Errorf("'keep: latest' needs a non-negative integer count, got %q", count)
	}
	n, err = strconv.Atoi(count)
	if err != nil {
		return 0, false, fmt.Errorf("'keep: latest' count %q out of range", count)
	}
	return n, true, nil
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

// parsePin parses '[tag@]sha256:<64 hex>'.
func parsePin(item string) (Pin, error) {
	tag, digest, hasTag := strings.Cut(item, "@")
	if !hasTag {
		tag, digest = "", item
	} else if !names.ValidTag(tag) {
		return Pin{}, fmt.Errorf("digest pin has invalid tag %q", tag)
	}
	hex, ok := strings.CutPrefix(digest, sha256Prefix)
	if !ok {
		return Pin{}, errors.New("digest pin must use the sha256 algorithm (sha256:<64 hex>)")
	}
	if !names.IsSHA256Hex(hex) {
		return Pin{}, errors.New("sha256 digest must be 64 lowercase hex characters")
	}
	return Pin{Tag: tag, Digest: digest}, nil
}

// Literals returns the literal tags in input order, without duplicates.
func (f *Filter) Literals() []string {
	return slices.Clone(f.literals)
}

// Pins returns the digest pins in input order, without duplicates.
func (f *Filter) Pins() []Pin {
	return slices.Clone(f.pins)
}

// NeedsList reports whether [Filter.Select] needs the repository's tag list:
// when there is a semver or regex item, or when there is no literal, pin,
// semver or regex item at all (an empty list, or only keep items, selects
// from all tags). Literals and pins alone never need the list, as in dregsy.
func (f *Filter) NeedsList() bool {
	return f.selectsAll() || len(f.semvers) > 0 || len(f.regexes) > 0
}

// selectsAll reports whether the filter starts from every available tag.
func (f *Filter) selectsAll() bool {
	return len(f.literals) == 0 && len(f.pins) == 0 &&
		len(f.semvers) == 0 && len(f.regexes) == 0
}

// Select applies the filter to available, the repository's tag list, and
// returns the selected tags sorted by string order. Literal tags are included
// even when absent from available (the caller reports those as missing
// upstream). Pins are not included. The steps, as in dregsy:
//
//  1. semver and regex items are ORed over available (all of available when
//     there is no literal, pin, semver or regex item);
//  2. every 'keep: REGEX' must match (ANDed);
//  3. 'keep: latest N' keeps every tag that is not a semver plus the N highest
//     semver tags; when no tag is a semver it keeps the last N by string order;
//  4. literal tags are added: a tag named explicitly is never dropped by a
//     keep item (the rule ferry's export issue pins; dregsy applies keep
//     items to literals too, see docs/filters.md).
func (f *Filter) Select(available []string) []string {
	set := make(map[string]struct{})
	if f.selectsAll() {
		for _, t := range available {
			set[t] = struct{}{}
		}
	} else if len(f.semvers) > 0 || len(f.regexes) > 0 {
		for _, t := range available {
			if f.matchesSemver(t) || f.matchesRegex(t) {
				set[t] = struct{}{}
			}
		}
	}
	for _, t := range f.literals {
		delete(set, t) // added back, untouched by keep items, below
	}

	out := make([]string, 0, len(set)+len(f.literals))
	for t := range set {
		if f.kept(t) {
			out = append(out, t)
		}
	}
	if f.keepCount > 0 {
		out = keepLatest(out, f.keepCount)
	}
	out = append(out, f.literals...)
	slices.Sort(out)
	return slices.Compact(out)
}

func (f *Filter) matchesSemver(tag string) bool {
	if len(f.semvers) == 0 {
		return false
	}
	v, ok := parseTag(tag)
	if !ok {
		return false
	}
	for _, c := range f.semvers {
		if c.Check(v) {
			return true
		}
	}
	return false
}

func (f *Filter) matchesRegex(tag string) bool {
	for _, m := range f.regexes {
		if m.matches(tag) {
			return true
		}
	}
	return false
}

func (f *Filter) kept(tag string) bool {
	for _, m := range f.keeps {
		if !m.matches(tag) {
			return false
		}
	}
	return true
}

// String returns the trimmed items joined by ", ", or "all tags" when the
// filter has no items.
func (f *Filter) String() string {
	if len(f.items) == 0 {
		return "all tags"
	}
	return strings.Join(f.items, ", ")
}

package filter

import (
	"cmp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// parseTag reads a tag as a semantic version with the same tolerance as
// dregsy, which uses blang/semver's ParseTolerant:
//
//   - surrounding white space and one leading "v" are removed;
//   - leading zeros are removed from each of the first three dot-separated
//     parts ("01.02.03" is 1.2.3);
//   - a missing minor or patch becomes 0 ("1" is 1.0.0, "1.2" is 1.2.0), but
//     only when that short form has no pre-release or build suffix;
//   - the result must then be a strict SemVer 2.0.0 version, so a suffix after
//     major.minor.patch is accepted only as a pre-release ("-rc1", "-alpine")
//     or build metadata ("+build.5").
//
// Anything else ("latest", "1.2.3_foo", "1.2-rc1") is not a semver tag.
func parseTag(tag string) (*semver.Version, bool) {
	s := strings.TrimSpace(tag)
	s = strings.TrimPrefix(s, "v")
	parts := strings.SplitN(s, ".", 3)
	for i, p := range parts {
		if len(p) > 1 {
			p = strings.TrimLeft(p, "0")
			if p == "" || p[0] < '0' || p[0] > '9' {
				p = "0" + p
			}
			parts[i] = p
		}
	}
	if len(parts) < 3 {
		if strings.ContainsAny(parts[len(parts)-1], "+-") {
			return nil, false
		}
		for len(parts) < 3 {
			parts = append(parts, "0")
		}
	}
	v, err := semver.StrictNewVersion(strings.Join(parts, "."))
	if err != nil {
		return nil, false
	}
	return v, true
}

// keepLatest implements 'keep: latest n' on the tags that survived the other
// filters, as dregsy's TagSet.reduce does: tags that are not semver are all
// kept and n limits only the semver tags, highest versions first (a
// pre-release ranks below its release and above the previous release). When
// no tag is a semver, the last n tags in string order are kept. Equal versions
// written differently ("1.2" and "1.2.0") are ordered by string so the result
// does not depend on input order. The result is not sorted.
func keepLatest(tags []string, n int) []string {
	type version struct {
		v   *semver.Version
		tag string
	}
	var plain []string
	var vers []version
	for _, t := range tags {
		if v, ok := parseTag(t); ok {
			vers = append(vers, version{v, t})
		} else {
			plain = append(plain, t)
		}
	}
	if len(vers) == 0 {
		slices.Sort(plain)
		if len(plain) > n {
			plain = plain[len(plain)-n:]
		}
		return plain
	}
	if len(vers) > n {
		slices.SortFunc(vers, func(a, b version) int {
			if c := b.v.Compare(a.v); c != 0 {
				return c // descending by version
			}
			return cmp.Compare(a.tag, b.tag)
		})
		vers = vers[:n]
	}
	for _, v := range vers {
		plain = append(plain, v.tag)
	}
	return plain
}

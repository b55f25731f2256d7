package filter

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// splitFuzz turns one fuzz string into a list of items (newline separated)
// or tags, so a single []byte input can drive a whole tags list.
func splitFuzz(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// checkSelect asserts the invariants of Select for one filter and tag list.
func checkSelect(t *testing.T, f *Filter, available []string) {
	t.Helper()
	got := f.Select(available)

	// Deterministic: same input, same output; input order does not matter.
	if again := f.Select(available); !slices.Equal(got, again) {
		t.Fatalf("Select not deterministic: %q then %q", got, again)
	}
	rev := slices.Clone(available)
	slices.Reverse(rev)
	if again := f.Select(rev); !slices.Equal(got, again) {
		t.Fatalf("Select depends on input order: %q vs %q", got, again)
	}

	// Sorted and without duplicates.
	if !slices.IsSorted(got) {
		t.Fatalf("Select output not sorted: %q", got)
	}
	if len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("Select output has duplicates: %q", got)
	}

	// Output ⊆ available ∪ literals.
	literals := f.Literals()
	for _, tag := range got {
		if !slices.Contains(available, tag) && !slices.Contains(literals, tag) {
			t.Fatalf("Select returned %q, neither available nor literal", tag)
		}
	}

	// Every literal is selected: keep items never drop a tag named
	// explicitly.
	for _, l := range literals {
		if !slices.Contains(got, l) {
			t.Fatalf("literal %q missing from %q", l, got)
		}
	}

	// keep: latest N never leaves more than N semver tags besides literals.
	if f.keepCount > 0 {
		n := 0
		for _, tag := range got {
			if _, ok := parseTag(tag); ok && !slices.Contains(literals, tag) {
				n++
			}
		}
		if n > f.keepCount {
			t.Fatalf("keep: latest %d left %d semver tags: %q", f.keepCount, n, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"latest",
		"latest\n1.2.3",
		"sha256:" + hexA,
		"v1@sha256:" + hexB,
		`regex: 1\.11\.(?:[0-9]?[0-9]).*`,
		"regex: !.*-rc.*",
		"semver: >=1.0.0 <1.99.0\nkeep: latest 2",
		"semver: ==1.0.0 || !2.0.0",
		"keep: latest x",
		"keep: latest",
		"foo: bar",
		"semver: banana",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		items := splitFuzz(s)
		flt, err := Parse(items)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse error %v does not wrap ErrSyntax", err)
			}
			if flt != nil {
				t.Fatal("Parse returned a filter and an error")
			}
			return
		}
		// Parsing is deterministic and String is stable.
		again, err := Parse(items)
		if err != nil || again.String() != flt.String() {
			t.Fatalf("Parse not deterministic: %v, %q vs %q", err, flt.String(), again.String())
		}
		for _, p := range flt.Pins() {
			if !strings.HasPrefix(p.Digest, "sha256:") || len(p.Digest) != len("sha256:")+64 {
				t.Fatalf("bad pin digest %q", p.Digest)
			}
		}
		// A filter whose items are only literals never needs the list.
		if len(flt.semvers) == 0 && len(flt.regexes) == 0 && len(flt.literals) > 0 && flt.NeedsList() {
			t.Fatal("literal-only filter needs the list")
		}
		checkSelect(t, flt, []string{
			"latest", "1.0.0", "1.4.1", "1.4.2-rc1", "v2", "1.10", "edge", "1.2.3+b",
		})
	})
}

func FuzzSelect(f *testing.F) {
	f.Add("semver: >=1.0.0 <1.99.0\nkeep: latest 2", "1.4.1\n1.4.2-rc1\n1.4.0\nlatest\n2.0.0")
	f.Add("regex: .*\nkeep: !.*-rc.*\nkeep: latest 1", "a\nb\n1.0\n1.0.0\nv1")
	f.Add("", "c\nb\na")
	f.Add("keep: latest 2", "b\nd\na\nc")
	f.Fuzz(func(t *testing.T, items, tags string) {
		flt, err := Parse(splitFuzz(items))
		if err != nil {
			return
		}
		checkSelect(t, flt, splitFuzz(tags))
	})
}

package mapping_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/mapping"
)

// aliasBomb is a small file whose expansion is huge: one mapping with
// `regexes` distinct regex tags, referenced `refs` times through an alias.
// Expanded, it asks for refs*regexes regex compilations; read once per
// node, it costs `regexes`.
func aliasBomb(regexes, refs int) string {
	var b strings.Builder
	b.WriteString("tasks:\n- name: t\n  source: {registry: r.io}\n  mappings:\n  - &m\n    from: a/b\n    tags:\n")
	for i := range regexes {
		fmt.Fprintf(&b, "    - 'regex: %s%d'\n", strings.Repeat("(a|b)", 20), i)
	}
	b.WriteString("  - " + strings.Repeat("*m\n  - ", refs-1) + "*m\n")
	return b.String()
}

// TestParseAliasBomb: 100 regexes referenced 1,000 times used to mean
// 100,000 compilations (minutes); each aliased mapping is now read once.
func TestParseAliasBomb(t *testing.T) {
	cfg, err := mapping.Parse("bomb.yaml", []byte(aliasBomb(100, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	ms := cfg.Tasks[0].Mappings
	if len(ms) != 1001 {
		t.Fatalf("%d mappings, want 1001", len(ms))
	}
	for _, m := range ms {
		if m.From != "a/b" || len(m.Tags) != 100 || m.Line != ms[0].Line {
			t.Fatalf("aliased mapping %+v differs from the anchored one", *m)
		}
	}
	if ms[1] == ms[2] {
		t.Error("aliased mappings share one *Mapping; a caller changing one would change all")
	}
}

// TestParseMergeFanOut: merge keys (<<) whose values merge eight copies of
// the level below, eight levels deep (8^8 entries if expanded).
func TestParseMergeFanOut(t *testing.T) {
	var b strings.Builder
	b.WriteString("x0: &a0 {registry: r.io}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "x%d: &a%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 8), ", "))
	}
	b.WriteString("tasks:\n- name: t\n  source: *a8\n  mappings: [{from: a}]\n")
	_, err := mapping.Parse("merge.yaml", []byte(b.String()))
	// The x0..x8 keys are unknown top-level keys; the source must still
	// have been read (no "has no source" error).
	if err == nil || strings.Contains(err.Error(), "source") || !strings.Contains(err.Error(), `unknown top-level key "x8"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseBounds(t *testing.T) {
	long := "tasks:\n- name: t\n  source: {registry: r.io}\n  mappings:\n  - from: a\n    tags: ['regex: " + strings.Repeat("a", 1100) + "']\n"
	var many strings.Builder
	many.WriteString("tasks:\n- name: t\n  source: {registry: r.io}\n  mappings:\n  - from: a\n    tags:\n")
	for i := range 30 {
		fmt.Fprintf(&many, "    - 'regex: %s%d'\n", strings.Repeat(`\pL`, 300), i)
	}
	huge := "tasks: []\n#" + strings.Repeat("x", 1<<20)
	for _, tc := range []struct{ name, data, want string }{
		{"long tag item", long, "bounds.yaml:6: task \"t\": tag filter item of 1107 bytes; at most 1024"},
		{"regex text", many.String(), "tag regexes total more than 16 KiB; split it into several files"},
		{"file size", huge, "larger than the 1 MiB a mapping file may be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mapping.Parse("bounds.yaml", []byte(tc.data))
			if err == nil || !errors.Is(err, mapping.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// BenchmarkParseAliasBomb measures the bomb of TestParseAliasBomb: about as
// long as reading 100 regexes once.
func BenchmarkParseAliasBomb(b *testing.B) {
	data := []byte(aliasBomb(100, 1000))
	for b.Loop() {
		if _, err := mapping.Parse("bomb.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseExample is the published Cloudforet file, for comparison.
func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile(coreExample)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := mapping.Parse("small.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

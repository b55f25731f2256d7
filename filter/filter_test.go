package filter

import (
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// cloudforet is a tag list shaped like a Cloudforet plugin repository.
var cloudforet = []string{
	"latest", "0.9.0", "1.0.0", "1.4.0", "1.4.1", "1.4.2-rc1",
	"1.11.0", "1.11.5", "1.11.12", "1.11.100", "1.11.3-rc.1", "1.12.0",
	"1.99.0", "2.0.0",
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name      string
		items     []string
		available []string
		want      []string
	}{
		// No items, keep-only items.
		{"no items selects all", nil,
			[]string{"b", "a", "1.0.0"}, []string{"1.0.0", "a", "b"}},
		{"empty list selects all", []string{},
			[]string{"x"}, []string{"x"}},
		{"duplicates in available collapse", nil,
			[]string{"a", "a"}, []string{"a"}},
		{"keep only filters all tags", []string{"keep: .*-alpine"},
			[]string{"1.0-alpine", "1.0", "2.0-alpine"}, []string{"1.0-alpine", "2.0-alpine"}},

		// Literals.
		{"literal present", []string{"latest"},
			[]string{"latest", "1.0.0"}, []string{"latest"}},
		{"literal absent is still selected", []string{"1.2.3"},
			[]string{"latest"}, []string{"1.2.3"}},
		{"literal ignores available", []string{"latest", "1.0"},
			nil, []string{"1.0", "latest"}},
		{"surrounding spaces trimmed", []string{"  latest\t"},
			nil, []string{"latest"}},

		// Regex.
		{"regex anchored whole tag", []string{"regex: 1\\.2"},
			[]string{"1.2", "1.23", "11.2", "1.2.3"}, []string{"1.2"}},
		{"regex spaces around value", []string{"regex:    1\\.2.*   "},
			[]string{"1.2", "1.23", "2.1"}, []string{"1.2", "1.23"}},
		{"regex no space after colon", []string{"regex:a.*"},
			[]string{"abc", "bca"}, []string{"abc"}},
		{"regex explicit anchors kept", []string{"regex: ^v[0-9]+$"},
			[]string{"v1", "v12", "xv1", "v1x"}, []string{"v1", "v12"}},
		{"regex inverted", []string{"regex: !.*-rc.*"},
			[]string{"1.0", "1.1-rc1", "latest"}, []string{"1.0", "latest"}},
		// As in dregsy, only the text before '!' is trimmed: the expression is
		// " latest", which no tag matches, so the inversion selects every tag.
		{"regex inverted keeps space after bang", []string{"regex:  ! latest"},
			[]string{"latest", "x"}, []string{"latest", "x"}},
		{"regex top-level alternation anchored like dregsy", []string{"regex: 1\\.0|2\\.0"},
			[]string{"1.0", "2.0", "1.0.5", "3.2.0", "x1.0"}, []string{"1.0", "1.0.5", "2.0", "3.2.0"}},
		{"regex grouped alternation anchored", []string{"regex: (1\\.0|2\\.0)"},
			[]string{"1.0", "2.0", "1.0.5", "3.2.0"}, []string{"1.0", "2.0"}},
		{"cloudforet regex", []string{`regex: 1\.11\.(?:[0-9]?[0-9]).*`},
			cloudforet, []string{"1.11.0", "1.11.100", "1.11.12", "1.11.3-rc.1", "1.11.5"}},

		// Semver.
		{"semver range", []string{"semver: >=1.0.0 <1.5.0"},
			cloudforet, []string{"1.0.0", "1.4.0", "1.4.1", "1.4.2-rc1"}},
		{"semver leading v and short tags", []string{"semver: >=1.0.0 <2.0.0"},
			[]string{"v1.2.3", "1.2", "1", "v2", "0.9"}, []string{"1", "1.2", "v1.2.3"}},
		{"semver leading zeros tolerated", []string{"semver: =1.2.3"},
			[]string{"01.02.03", "1.2.3", "1.2.4"}, []string{"01.02.03", "1.2.3"}},
		{"semver suffix as pre-release", []string{"semver: >=1.31.0 <1.31.9"},
			[]string{"1.31.1-musl", "1.31.2-glibc", "1.31.9-musl", "1.31.9", "1.31_x"},
			[]string{"1.31.1-musl", "1.31.2-glibc", "1.31.9-musl"}}, // 1.31.9-musl < 1.31.9
		{"semver build metadata", []string{"semver: 1.2.3"},
			[]string{"1.2.3+build.7", "1.2.4"}, []string{"1.2.3+build.7"}},
		{"semver short with suffix is not semver", []string{"semver: >=0.0.0"},
			[]string{"1.2-rc1", "1-alpine", "1.2.3_x", "latest", "1.0.0"}, []string{"1.0.0"}},
		{"semver prerelease below upper bound counts", []string{"semver: >=1.0.0 <1.99.0"},
			[]string{"1.99.0-rc1", "1.99.0", "0.9.9"}, []string{"1.99.0-rc1"}},
		{"semver or", []string{"semver: <1.0.0 || >=2.0.0"},
			cloudforet, []string{"0.9.0", "2.0.0"}},
		{"semver blang == and !", []string{"semver: ==1.4.0", "semver: >=1.11.0 !1.11.5 <1.12.0"},
			cloudforet, []string{"1.11.0", "1.11.100", "1.11.12", "1.11.3-rc.1", "1.4.0"}},
		// Masterminds reads '>1.2.x' as minor > 2, so 1.3.0-rc1 counts; dregsy's
		// blang/semver reads it as >=1.3.0 and leaves 1.3.0-rc1 out. Documented.
		{"semver wildcard pre-release edge (differs from dregsy)", []string{"semver: >1.2.x"},
			[]string{"1.2.9", "1.3.0-rc1", "1.3.0"}, []string{"1.3.0", "1.3.0-rc1"}},
		{"semver wildcard", []string{"semver: 1.2.x"},
			[]string{"1.1.9", "1.2.0", "1.2.6-rc1", "1.3.0-rc1", "1.3.0"}, []string{"1.2.0", "1.2.6-rc1"}},
		{"semver tilde (Masterminds extension)", []string{"semver: ~1.4.0"},
			cloudforet, []string{"1.4.0", "1.4.1", "1.4.2-rc1"}},

		// OR of literal, regex, semver.
		{"literal regex semver ORed", []string{"latest", "regex: 2\\..*", "semver: <1.0.0"},
			cloudforet, []string{"0.9.0", "2.0.0", "latest"}},

		// keep: REGEX.
		{"keep applies after regex", []string{"regex: 1\\..*", "keep: .*-rc.*"},
			cloudforet, []string{"1.11.3-rc.1", "1.4.2-rc1"}},
		{"keep items ANDed", []string{"regex: .*", "keep: 1\\..*", "keep: .*\\.0"},
			cloudforet, []string{"1.0.0", "1.11.0", "1.12.0", "1.4.0", "1.99.0"}},
		{"keep inverted", []string{"semver: >=1.4.0 <1.5.0", "keep: !.*-rc.*"},
			cloudforet, []string{"1.4.0", "1.4.1"}},
		{"keep never prunes literals", []string{"latest", "1.0.0", "keep: [0-9].*"},
			nil, []string{"1.0.0", "latest"}},
		{"keep prunes regex matches but not literals", []string{"latest", "regex: 1\\..*", "keep: .*\\.0"},
			[]string{"1.0", "1.1", "1.2.0", "latest"}, []string{"1.0", "1.2.0", "latest"}},
		{"keep: latest without count is a regex", []string{"regex: .*", "keep: latest"},
			cloudforet, []string{"latest"}},

		// keep: latest N.
		{"keep latest semver desc with non-semver kept", []string{"keep: latest 2"},
			[]string{"latest", "1.0.0", "2.0.0", "1.5.0", "edge"}, []string{"1.5.0", "2.0.0", "edge", "latest"}},
		{"keep latest counts numeric, not string order", []string{"keep: latest 1"},
			[]string{"1.9.0", "1.10.0", "1.2.0"}, []string{"1.10.0"}},
		{"keep latest no semver takes last by string", []string{"keep: latest 2"},
			[]string{"b", "d", "a", "c"}, []string{"c", "d"}},
		{"keep latest larger than set", []string{"keep: latest 10"},
			[]string{"a", "1.0.0"}, []string{"1.0.0", "a"}},
		{"keep latest 0 is no limit", []string{"keep: latest 0"},
			[]string{"1.0.0", "2.0.0"}, []string{"1.0.0", "2.0.0"}},
		{"keep latest last wins", []string{"keep: latest 1", "keep: latest 3"},
			[]string{"1.0.0", "2.0.0", "3.0.0", "4.0.0"}, []string{"2.0.0", "3.0.0", "4.0.0"}},
		{"keep latest last wins smaller", []string{"keep: latest 3", "keep:  latest\t1"},
			[]string{"1.0.0", "2.0.0", "3.0.0"}, []string{"3.0.0"}},
		{"keep latest leaves literals alone", []string{"1.0.0", "2.0.0", "keep: latest 1"},
			nil, []string{"1.0.0", "2.0.0"}},
		{"keep latest counts only filtered tags", []string{"1.0.0", "semver: >=2.0.0", "keep: latest 1"},
			[]string{"1.0.0", "2.0.0", "2.1.0"}, []string{"1.0.0", "2.1.0"}},
		{"keep latest after keep regex", []string{"keep: .*-alpine", "keep: latest 1"},
			[]string{"1.0.0-alpine", "2.0.0-alpine", "3.0.0"}, []string{"2.0.0-alpine"}},
		{"keep latest v prefix and short tags", []string{"keep: latest 2"},
			[]string{"v1", "1.5", "v2.0.1", "1.4.9"}, []string{"1.5", "v2.0.1"}},
		{"keep latest tie broken by string", []string{"keep: latest 1"},
			[]string{"v1.0.0", "1.0", "1.0.0"}, []string{"1.0"}},
		{"keep latest prerelease ranks between releases", []string{"keep: latest 2"},
			[]string{"1.4.1", "1.4.2-rc1", "1.4.0"}, []string{"1.4.1", "1.4.2-rc1"}},
		{"keep latest prerelease below its release", []string{"keep: latest 1"},
			[]string{"1.4.2-rc1", "1.4.2"}, []string{"1.4.2"}},

		// The Cloudforet plugin file.
		{"cloudforet semver + keep latest 2", []string{"semver: >=1.0.0 <1.99.0", "keep: latest 2"},
			[]string{"1.3.0", "1.4.0", "1.4.1", "1.4.2-rc1", "1.99.0", "2.0.0", "latest"},
			[]string{"1.4.1", "1.4.2-rc1"}},
		{"cloudforet semver + keep latest 2 full list", []string{"semver: >=1.0.0 <1.99.0", "keep: latest 2"},
			cloudforet, []string{"1.11.100", "1.12.0"}},

		// Pins are never selected.
		{"pins only select nothing", []string{"sha256:" + hexA},
			[]string{"latest"}, []string{}},
		{"pins with literal", []string{"v1@sha256:" + hexA, "latest"},
			[]string{"v1", "latest"}, []string{"latest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.items)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.items, err)
			}
			got := f.Select(tt.available)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Parse(%q).Select(%q)\n got  %q\n want %q", tt.items, tt.available, got, tt.want)
			}
			// Select must not depend on the order of available.
			rev := slices.Clone(tt.available)
			slices.Reverse(rev)
			if again := f.Select(rev); !slices.Equal(again, got) {
				t.Errorf("Select on reversed input = %q, want %q", again, got)
			}
		})
	}
}

func TestSelectDoesNotModifyInput(t *testing.T) {
	f, err := Parse([]string{"keep: latest 1"})
	if err != nil {
		t.Fatal(err)
	}
	in := []string{"b", "2.0.0", "a", "1.0.0"}
	orig := slices.Clone(in)
	f.Select(in)
	if !slices.Equal(in, orig) {
		t.Errorf("Select changed its input: %q, was %q", in, orig)
	}
}

func TestNeedsList(t *testing.T) {
	tests := []struct {
		items []string
		want  bool
	}{
		{nil, true},
		{[]string{"latest"}, false},
		{[]string{"latest", "1.0"}, false},
		{[]string{"sha256:" + hexA}, false},
		{[]string{"latest", "keep: l.*"}, false}, // dregsy prunes literals without listing
		{[]string{"latest", "keep: latest 1"}, false},
		{[]string{"keep: .*"}, true},
		{[]string{"keep: latest 3"}, true},
		{[]string{"regex: .*"}, true},
		{[]string{"latest", "semver: >=1.0.0"}, true},
	}
	for _, tt := range tests {
		f, err := Parse(tt.items)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.items, err)
		}
		if got := f.NeedsList(); got != tt.want {
			t.Errorf("Parse(%q).NeedsList() = %v, want %v", tt.items, got, tt.want)
		}
	}
}

func TestLiteralsAndPins(t *testing.T) {
	items := []string{
		"latest", "regex: x", "1.0", " latest ",
		"sha256:" + hexA, "v1@sha256:" + hexB, "sha256:" + hexA, "1.0@sha256:" + hexA,
		"semver: >=1.0.0", "0.1",
	}
	f, err := Parse(items)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Literals(), []string{"latest", "1.0", "0.1"}; !slices.Equal(got, want) {
		t.Errorf("Literals() = %q, want %q", got, want)
	}
	wantPins := []Pin{
		{Digest: "sha256:" + hexA},
		{Tag: "v1", Digest: "sha256:" + hexB},
		{Tag: "1.0", Digest: "sha256:" + hexA},
	}
	if got := f.Pins(); !slices.Equal(got, wantPins) {
		t.Errorf("Pins() = %+v, want %+v", got, wantPins)
	}
	// Returned slices are copies.
	f.Literals()[0] = "changed"
	if f.Literals()[0] != "latest" {
		t.Error("Literals() exposes internal state")
	}
}

func TestString(t *testing.T) {
	f, err := Parse([]string{" latest ", "semver: >=1.0.0 <1.99.0", "keep: latest 2"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), "latest, semver: >=1.0.0 <1.99.0, keep: latest 2"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	empty, _ := Parse(nil)
	if got := empty.String(); got != "all tags" {
		t.Errorf("empty String() = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		item   string
		reason string // part of the message
	}{
		{"", "empty item"},
		{"   ", "empty item"},
		{"foo: bar", `unknown prefix "foo:"`},
		{"Regex: 1.0", `unknown prefix "Regex:"`},
		{"regex : 1.0", `unknown prefix "regex :"`},
		{"sha512:" + hexA, `unknown prefix "sha512:"`},
		{"semver:", "empty semver range"},
		{"semver:   ", "empty semver range"},
		{"semver: >=1.0.0 <", "bad semver range"},
		{"semver: banana", "bad semver range"},
		{"regex:", "empty regular expression"},
		{"regex: [", "bad regular expression"},
		{"regex: !(", "bad regular expression"},
		{"keep:", "empty regular expression"},
		{"keep: (?<", "bad regular expression"},
		{"keep: latest x", "non-negative integer"},
		{"keep: latest -1", "non-negative integer"},
		{"keep: latest 2 3", "non-negative integer"},
		{"keep: latest 99999999999999999999999", "out of range"},
		{"sha256:" + hexA[:63], "64 lowercase hex"},
		{"sha256:" + strings.ToUpper(hexA), "64 lowercase hex"},
		{"sha256:" + hexA + "a", "64 lowercase hex"},
		{"v1@sha256:zz", "64 lowercase hex"},
		{"v1@md5:abc", "must use the sha256 algorithm"},
		{"-bad@sha256:" + hexA, "invalid tag"},
		{"@sha256:" + hexA, "invalid tag"},
		{"has space", "not a valid tag"},
		{".dot", "not a valid tag"},
		{strings.Repeat("a", 129), "not a valid tag"},
	}
	for _, tt := range tests {
		t.Run(tt.item, func(t *testing.T) {
			_, err := Parse([]string{"latest", tt.item})
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error", tt.item)
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("error %v does not wrap ErrSyntax", err)
			}
			msg := err.Error()
			for _, want := range []string{strconv.Quote(tt.item), tt.reason, "accepted forms:", "semver: RANGE", "keep: latest N"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestParseAcceptsLongestTag(t *testing.T) {
	tag := strings.Repeat("a", 128)
	f, err := Parse([]string{tag})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Literals(); !slices.Equal(got, []string{tag}) {
		t.Errorf("Literals() = %q", got)
	}
}

func TestParseTag(t *testing.T) {
	tests := []struct {
		tag  string
		want string // "" when not a semver
	}{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"vv1.2.3", ""},
		{"1.2", "1.2.0"},
		{"1", "1.0.0"},
		{"v2", "2.0.0"},
		{"01.002.0003", "1.2.3"},
		{"1.2.3-rc1", "1.2.3-rc1"},
		{"1.2.3-rc.1+b.2", "1.2.3-rc.1+b.2"},
		{"1.2.3-alpine3.19", "1.2.3-alpine3.19"},
		{"1.2.3-01", ""}, // numeric pre-release with leading zero
		{"1.2-rc1", ""},
		{"1-alpine", ""},
		{"1.2.3.4", ""},
		{"1.2.3_x", ""},
		{"latest", ""},
		{"", ""},
		{"20240101", "20240101.0.0"},
	}
	for _, tt := range tests {
		v, ok := parseTag(tt.tag)
		got := ""
		if ok {
			got = v.String()
		}
		if got != tt.want {
			t.Errorf("parseTag(%q) = %q, want %q", tt.tag, got, tt.want)
		}
	}
}

// TestImports guards the package boundary: filter is pure and must not grow
// dependencies on the CLI, the network or the file system.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"cmp": true, "errors": true, "fmt": true, "regexp": true, "slices": true,
		"strconv": true, "strings": true,
		"github.com/Masterminds/semver/v3": true,
		// names is a pure leaf (the name grammar); the module's depcheck
		// test keeps it free of I/O.
		"github.com/ferry-airgap/ferry/internal/names": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %s; filter must stay free of I/O and CLI packages", name, path)
			}
		}
	}
}

func TestPattern(t *testing.T) {
	for _, c := range []struct {
		pattern string
		names   []string
		want    bool
	}{
		{"busybox", []string{"busybox", "docker.io/library/busybox"}, true},
		{"busybox", []string{"docker.io/library/busybox"}, false}, // anchored: the whole name
		{".*/busybox", []string{"busybox", "docker.io/library/busybox"}, true},
		{"!docker.io/bitnami/.*", []string{"nginx", "docker.io/library/nginx"}, true},
		{"!docker.io/bitnami/.*", []string{"bitnami/redis", "docker.io/bitnami/redis"}, false},
		{"  quay.io/(a|b)  ", []string{"quay.io/b"}, true},
	} {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(c.names...); got != c.want {
			t.Errorf("%q.Match(%q) = %v, want %v", c.pattern, c.names, got, c.want)
		}
	}
	for _, bad := range []string{"", "  ", "!", "a(b"} {
		if _, err := ParsePattern(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParsePattern(%q): %v, want ErrSyntax", bad, err)
		}
	}
}

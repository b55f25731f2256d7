package static

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/serve"
)

func TestPageFor(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 2, 5: 5, 9: 5, 10: 10, 19: 10, 20: 20, 49: 20, 50: 50, 99: 50, 100: 100, 101: 100, 5000: 100} {
		if got := pageFor(n); got != want {
			t.Errorf("pageFor(%d) = %d, want %d", n, got, want)
		}
	}
}

// Every page holds the tags the spec says (lexical order, after last, at
// most its size) and names the next page's last exactly when more remain.
func TestPages(t *testing.T) {
	var tags []string
	for i := range 250 {
		tags = append(tags, fmt.Sprintf("t%03d", i))
	}
	ps := pages(tags)
	if len(ps) != 1+len(pageSizes)*(len(tags)+1) {
		t.Fatalf("%d pages, want %d", len(ps), 1+len(pageSizes)*(len(tags)+1))
	}
	got := map[string]page{}
	for _, p := range ps {
		if _, dup := got[p.rel]; dup {
			t.Fatalf("page %s twice", p.rel)
		}
		got[p.rel] = p
	}
	if p := got["/tags/first/0"]; len(p.tags) != 0 || p.next != "" {
		t.Errorf("n=0: %v, next %q", p.tags, p.next)
	}
	for _, s := range pageSizes {
		for start := 0; start <= len(tags); start++ {
			rel := fmt.Sprintf("/tags/first/%d", s)
			if start > 0 {
				rel = fmt.Sprintf("/tags/after/%d/%s", s, tags[start-1])
			}
			p, ok := got[rel]
			end := min(start+s, len(tags))
			if !ok || !slices.Equal(p.tags, tags[start:end]) {
				t.Fatalf("%s: %v, want %v", rel, p.tags, tags[start:end])
			}
			wantNext := ""
			if end < len(tags) {
				wantNext = tags[end-1]
			}
			if p.next != wantNext {
				t.Errorf("%s: next %q, want %q", rel, p.next, wantNext)
			}
		}
	}
}

// Unpack writes the pages beside tags/list; a rerun rewrites none; a new
// tag updates the pages it belongs in; a page whose tag is gone is removed.
func TestUnpackWritesPages(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "paged")
	var tags []string
	for i := range 12 {
		tags = append(tags, fmt.Sprintf("1.%02d", i))
	}
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: tags, img: img})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	readList := func(rel string) []string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(out, "v2/proj/app", rel))
		if err != nil {
			t.Fatal(err)
		}
		var l struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(data, &l); err != nil || l.Name != "proj/app" || l.Tags == nil {
			t.Fatalf("%s: %v %s", rel, err, data)
		}
		return l.Tags
	}
	for rel, want := range map[string][]string{
		"tags/first/0": {}, "tags/first/5": tags[:5], "tags/first/100": tags,
		"tags/after/2/1.03": tags[4:6], "tags/after/100/1.05": tags[6:], "tags/after/1/1.11": {},
	} {
		if got := readList(rel); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", rel, got, want)
		}
	}
	ghost := filepath.Join(out, "v2/proj/app/tags/after/10/0.9")
	if err := os.WriteFile(ghost, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := mtimes(t, out)
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ghost); err == nil {
		t.Error("a page of a tag the repository does not have was kept")
	}
	for p, m := range mtimes(t, out) {
		if before[p] != m && !strings.HasPrefix(p, ".ferry") {
			t.Errorf("rerun rewrote %s", p)
		}
	}
	// A second bundle adds 1.035: the pages that reach it change.
	rd2 := writeBundle(t, dir, "c.tar", nil, entry{target: "proj/app", tags: []string{"1.035"}, img: img})
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd2}, out); err != nil {
		t.Fatal(err)
	}
	if got := readList("tags/after/2/1.03"); !slices.Equal(got, []string{"1.035", "1.04"}) {
		t.Errorf("after the new tag: %v", got)
	}
	if got := readList("tags/after/5/1.035"); !slices.Equal(got, tags[4:9]) {
		t.Errorf("the new tag's page: %v, want %v", got, tags[4:9])
	}
	if got := readList("tags/first/2"); !slices.Equal(got, tags[:2]) {
		t.Errorf("a page before the new tag changed: %v", got)
	}
}

// The generated configuration pages with maps: n to a page size, last
// checked against the tag grammar, each page to its Link; keys that
// differ only in case become case-sensitive regexes.
func TestNginxConfPaging(t *testing.T) {
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	st := &treeState{repos: map[string]*treeRepo{"proj/app": {tags: map[string]v1.Hash{}}}, names: []string{"proj/app"}}
	for _, tag := range []string{"Latest", "latest", "a", "b", "c", "z", "zz"} {
		st.repos["proj/app"].tags[tag] = h
	}
	conf, err := nginxConf("/srv/reg", st, DefaultNginx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"3" "2";`, `"100" "100";`, `"~^[1-9][0-9]{0,8}$" "100";`,
		`"~^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$" $arg_last;`,
		`"proj/app/tags/first/1" "Latest";`,
		`"~^proj/app/tags/after/1/Latest$" "a";`, // "latest" would collide
		`"~^proj/app/tags/after/1/latest$" "z";`,
		`"proj/app/tags/after/2/a" "c";`,
		`"~^/v2/proj/app/manifests/Latest$" "sha256:`,
		`try_files /v2/$ferry_name$ferry_tags_file /_ferry/last-unknown;`,
		`add_header Link $ferry_tags_link;`,
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("nginx.conf lacks %s", want)
		}
	}
	// No page after which nothing remains has a Link.
	for _, absent := range []string{`"proj/app/tags/after/1/z"`, `"proj/app/tags/first/100"`, `"~^proj/app/tags/after/10/Latest$"`, `"proj/app/tags/after/10/Latest"`} {
		if strings.Contains(string(conf), absent) {
			t.Errorf("nginx.conf has %s", absent)
		}
	}
}

// A repository whose folder would be a page file of another is refused.
func TestCheckPathsPages(t *testing.T) {
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	for _, cs := range [][]serve.Content{
		{{Name: "a", Tags: map[string]v1.Hash{"1": h}}, {Name: "a/tags/first/0", Tags: map[string]v1.Hash{"1": h}}},
		{{Name: "a", Tags: map[string]v1.Hash{"manifests": h}}, {Name: "a/tags/after/10", Tags: map[string]v1.Hash{"1": h}}},
	} {
		if err := checkPaths(cs); err == nil || !strings.Contains(err.Error(), "collide") {
			t.Errorf("%s beside %s: %v", cs[1].Name, cs[0].Name, err)
		}
	}
}

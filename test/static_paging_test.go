package test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// tagPage is one tags/list answer: status, tags, the Link header's URL.
type tagPage struct {
	status int
	name   string
	tags   []string
	next   string
	body   string
}

var linkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

func getTagPage(t *testing.T, addr, path string) tagPage {
	t.Helper()
	a := doHTTP(t, "GET", "http://"+addr+path)
	p := tagPage{status: a.status, body: a.body}
	if a.status != 200 {
		return p
	}
	var l struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal([]byte(a.body), &l); err != nil || l.Tags == nil {
		t.Fatalf("GET %s: not a tag list: %v %q", path, err, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	p.name, p.tags = l.Name, l.Tags
	if link := a.header.Get("Link"); link != "" {
		m := linkRE.FindStringSubmatch(link)
		if m == nil {
			t.Fatalf("GET %s: Link %q is not <URL>; rel=\"next\"", path, link)
		}
		p.next = m[1]
	}
	return p
}

// TestStaticTagPaging: nginx serving a static tree pages through a tag list
// as the distribution spec says: lexical order, ?last= exclusive, at most
// ?n= tags, a Link header to the next page while more remain; bad n and a
// last that is no tag of the repository (hostile paths included) get a 400
// with an OCI error body and never a file; crane lists every tag. The
// repository has more tags than the largest page, and two tags that differ
// only in case (nginx's maps ignore case unless told).
func TestStaticTagPaging(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	specs := []harness.FixtureSpec{{Repo: "app/many", Tag: "v000", Kind: harness.OCIImage, Bases: []string{"os"}}}
	for i := 1; i < 123; i++ {
		specs = append(specs, harness.FixtureSpec{Repo: "app/many", Tag: fmt.Sprintf("v%03d", i), Kind: harness.OCIImage, AliasOf: "v000"})
	}
	specs = append(specs,
		harness.FixtureSpec{Repo: "app/many", Tag: "Latest", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 3000},
		harness.FixtureSpec{Repo: "app/many", Tag: "latest", Kind: harness.OCIImage, AliasOf: "v000"})
	fixtures := harness.Seed(t, reg, "", harness.FixtureSet{Specs: specs})
	addr, _ := nginxOverTree(t, bin, reg, fixtures)

	var all []string
	for _, fx := range fixtures {
		all = append(all, fx.Tag)
	}
	slices.Sort(all) // Latest, latest, v000 … v122 in byte order: "L" < "l" < "v"
	repo := "proj/app/many"
	base := "/v2/" + repo + "/tags/list"

	whole := getTagPage(t, addr, base)
	if whole.status != 200 || !slices.Equal(whole.tags, all) || whole.next != "" || whole.name != repo {
		t.Fatalf("whole list: %d %s, Link %q; want %d tags, no Link", whole.status, whole.name, whole.next, len(all))
	}
	checkPages(t, addr, base, all)
	checkPagingErrors(t, addr, base)

	// Tags that differ only in case are two tags: each its own manifest;
	// a case the tree lacks is unknown.
	for tag, want := range map[string]string{"Latest": fixtureByRef(t, fixtures, "app/many:Latest").Digest, "latest": fixtureByRef(t, fixtures, "app/many:latest").Digest} {
		if st, d := headDigest(t, "http://"+addr+"/v2/"+repo+"/manifests/"+tag); st != 200 || d != want {
			t.Errorf("HEAD %s: %d %s, want %s", tag, st, d, want)
		}
	}
	if a := doHTTP(t, "GET", "http://"+addr+"/v2/"+repo+"/manifests/LATEST"); a.status != 404 || !strings.Contains(a.body, "MANIFEST_UNKNOWN") {
		t.Errorf("GET manifests/LATEST: %d %s, want 404 MANIFEST_UNKNOWN", a.status, a.body)
	}

	// Clients list every tag: crane pages with n and follows Link headers.
	home := t.TempDir()
	regctl := regctlPath(t)
	runTool(t, home, regctl, "registry", "set", addr, "--tls", "disabled")
	for tool, args := range map[string][]string{
		"crane ls":         {cranePath(t), "ls", "--insecure", addr + "/" + repo},
		"regctl tag ls":    {regctl, "tag", "ls", addr + "/" + repo},
		"skopeo list-tags": {skopeoPath(t), "list-tags", "--tls-verify=false", "docker://" + addr + "/" + repo},
	} {
		out := runTool(t, home, args[0], args[1:]...)
		if tool == "skopeo list-tags" {
			var l struct{ Tags []string }
			if err := json.Unmarshal([]byte(out), &l); err != nil {
				t.Fatalf("%s: %v\n%s", tool, err, out)
			}
			out = strings.Join(l.Tags, "\n")
		}
		got := strings.Fields(out)
		slices.Sort(got)
		if !slices.Equal(got, all) {
			t.Errorf("%s: %d tags %v…, want %d", tool, len(got), got[:min(3, len(got))], len(all))
		}
	}
}

// checkPages checks ?n=, ?last= and both, and follows Link headers.
func checkPages(t *testing.T, addr, base string, all []string) {
	t.Helper()
	for _, c := range []struct {
		query string
		want  []string
		next  string // the Link URL's query, "" for none
	}{
		{"n=2", all[:2], "n=2&last=" + all[1]},
		{"n=3", all[:2], "n=3&last=" + all[1]}, // page sizes 1, 2, 5, …: fewer than n, with a Link
		{"n=0", []string{}, ""},
		{"n=0&last=" + all[4], []string{}, ""},
		{"n=7&last=" + all[4], all[5:10], "n=7&last=" + all[9]},
		{"last=" + all[1], all[2:102], "last=" + all[101]}, // ?last= alone: a page of 100
		{"last=" + all[30], all[31:], ""},
		{"last=" + all[len(all)-1], []string{}, ""},
		{"n=1000", all[:100], "n=1000&last=" + all[99]},
		{"n=100&last=" + all[len(all)-3], all[len(all)-2:], ""},
		{"n=5&last=" + all[len(all)-6], all[len(all)-5:], ""}, // exactly the rest: no Link
		{"last=latest", all[2:102], "last=" + all[101]},       // case counts
		{"last=Latest", all[1:101], "last=" + all[100]},
	} {
		p := getTagPage(t, addr, base+"?"+c.query)
		next := ""
		if p.next != "" {
			u, err := url.Parse(p.next)
			if err != nil || u.Path != base {
				t.Errorf("?%s: Link to %q", c.query, p.next)
			}
			next = u.RawQuery
		}
		if p.status != 200 || !slices.Equal(p.tags, c.want) || next != c.next {
			t.Errorf("?%s: %d, %d tags %v…, Link ?%s; want %d tags from %v, Link ?%s", c.query, p.status, len(p.tags), p.tags[:min(2, len(p.tags))], next, len(c.want), c.want[:min(1, len(c.want))], c.next)
		}
	}
	// Following the Link headers lists every tag once, in order.
	for _, start := range []string{base + "?n=7", base + "?last=" + all[0], base + "?n=1"} {
		var got []string
		path := start
		for range 200 {
			p := getTagPage(t, addr, path)
			got = append(got, p.tags...)
			if p.next == "" {
				break
			}
			path = p.next
		}
		want := all
		if strings.Contains(start, "last=") {
			want = all[1:]
		}
		if !slices.Equal(got, want) {
			t.Errorf("following Link from %s: %d tags, want %d", start, len(got), len(want))
		}
	}
}

// checkPagingErrors: a bad n or a last that is no tag gets 400 and an OCI
// error body, never a file; an unknown repository is unknown whatever the
// query.
func checkPagingErrors(t *testing.T, addr, base string) {
	t.Helper()
	for _, c := range []struct{ query, code string }{
		{"n=-1", "PAGINATION_NUMBER_INVALID"},
		{"n=abc", "PAGINATION_NUMBER_INVALID"},
		{"n=1e3", "PAGINATION_NUMBER_INVALID"},
		{"n=01", "PAGINATION_NUMBER_INVALID"},
		{"n=9999999999", "PAGINATION_NUMBER_INVALID"},
		{"last=zzz", "UNSUPPORTED"},    // a valid tag name, not a tag here
		{"n=5&last=v5", "UNSUPPORTED"}, // sorts between tags, is none
		{"last=LATEST", "UNSUPPORTED"},
		{"last=../../../../nginx.conf", "UNSUPPORTED"},
		{"last=..%2F..%2F..%2F..%2Fnginx.conf", "UNSUPPORTED"},
		{"n=10&last=../../list", "UNSUPPORTED"},
		{"last=%2e%2e", "UNSUPPORTED"},
		{"last=.ferry", "UNSUPPORTED"},
		{"last=v001%00", "UNSUPPORTED"},
		{"last=v001/../../../../../nginx.conf", "UNSUPPORTED"},
	} {
		a := doHTTP(t, "GET", "http://"+addr+base+"?"+c.query)
		if a.status != 400 || !strings.Contains(a.body, `"code":"`+c.code+`"`) || a.header.Get("Content-Type") != "application/json" || a.header.Get("Link") != "" {
			t.Errorf("?%s: %d %q %s, want 400 %s", c.query, a.status, a.header.Get("Content-Type"), a.body, c.code)
		}
		if strings.Contains(a.body, "server") || strings.Contains(a.body, `"tags"`) {
			t.Errorf("?%s served a file: %s", c.query, a.body)
		}
	}
	for _, q := range []string{"", "?n=2", "?last=v001", "?n=2&last=v001"} {
		a := doHTTP(t, "GET", "http://"+addr+"/v2/proj/app/none/tags/list"+q)
		if a.status != 404 || !strings.Contains(a.body, "NAME_UNKNOWN") {
			t.Errorf("unknown repository %s: %d %s, want 404 NAME_UNKNOWN", q, a.status, a.body)
		}
	}
}

package static

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Tag list paging (GET /v2/NAME/tags/list?n=N&last=TAG) answered from
// files: nginx cannot cut a list, so every page it may serve is written
// beforehand, for a fixed set of page sizes:
//
//	v2/NAME/tags/first/S        the first S tags (S = 0 for ?n=0)
//	v2/NAME/tags/after/S/TAG    the S tags after TAG
//
// A request for n tags gets the largest page size not above n (at most
// maxPage), and a Link header to the next page when more tags remain, as
// the distribution spec allows ("fewer than n results … when a Link header
// is provided"). ?last= alone gets a page of maxPage. A last that is not a
// tag of the repository has no file: nginx answers 400.

// pageSizes are the pages written for every tag: a request for n tags gets
// at least n×2/5 of them (n ≤ maxPage), at most 7 files and 188 tag names
// per tag.
var pageSizes = []int{1, 2, 5, 10, 20, 50, 100}

// maxPage is the largest page: ?n= above it and ?last= alone get this many.
// n is accepted up to nine digits (999999999) without leading zeros; the
// template's regex says so, and anything else gets 400.
const maxPage = 100

// pageFor is the page size served for ?n=n (n ≥ 1).
func pageFor(n int) int {
	s := pageSizes[0]
	for _, p := range pageSizes {
		if p <= n {
			s = p
		}
	}
	return s
}

// listJSON is a tags/list answer: {"name":…,"tags":[…]} and a newline.
func listJSON(name string, tags []string) []byte {
	if tags == nil {
		tags = []string{}
	}
	data, _ := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, tags})
	return append(data, '\n')
}

// page is one file of a repository's tag list pages: its path under
// v2/NAME, its tags, and the last tag of the answer when more remain (the
// Link header's last), else "".
type page struct {
	rel  string
	tags []string
	next string
}

// pages lists the page files of a repository with sorted tags, in order.
func pages(tags []string) []page {
	out := []page{{rel: "/tags/first/0"}}
	for _, s := range pageSizes {
		ss := strconv.Itoa(s)
		// start is the index of the page's first tag: 0, then after each tag.
		for start := 0; start <= len(tags); start++ {
			rel := "/tags/first/" + ss
			if start > 0 {
				rel = "/tags/after/" + ss + "/" + tags[start-1]
			}
			end := min(start+s, len(tags))
			p := page{rel: rel, tags: tags[start:end]}
			if end < len(tags) {
				p.next = tags[end-1]
			}
			out = append(out, p)
		}
	}
	return out
}

// writePages writes a repository's page files where their content changes
// and removes page files of tags the repository no longer serves (a tag
// whose manifest became unreadable), so that no page outlives its tag.
func writePages(t *tree, name string, tags []string) error {
	base := "v2/" + name
	for _, p := range pages(tags) {
		if _, err := t.writeIfChanged(base+p.rel, listJSON(name, p.tags)); err != nil {
			return err
		}
	}
	known := make(map[string]bool, len(tags))
	for _, tag := range tags {
		known[tag] = true
	}
	for _, s := range pageSizes {
		dir, err := t.abs(base + "/tags/after/" + strconv.Itoa(s))
		if err != nil {
			return err
		}
		es, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTree, err)
		}
		for _, e := range es {
			if e.Type().IsRegular() && !known[e.Name()] && !isTemp(e.Name()) {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					return fmt.Errorf("%w: removing a stale tag list page: %v", ErrTree, err)
				}
			}
		}
	}
	return nil
}

// pagePaths adds the paths of a repository's page files to checkPaths'
// tables: those it needs as files and as folders.
func pagePaths(name string, tags []string, files, dirs map[string]string) {
	base := "v2/" + name + "/tags/"
	dirs[base+"first"], dirs[base+"after"] = name, name
	files[base+"first/0"] = name
	for _, s := range pageSizes {
		ss := strconv.Itoa(s)
		files[base+"first/"+ss] = name
		dirs[base+"after/"+ss] = name
		for _, tag := range tags {
			files[base+"after/"+ss+"/"+tag] = name + ":" + tag
		}
	}
}

// mapEntry is one line of an nginx map.
type mapEntry struct {
	Key, Value string
	// Regex: the key is written as a case-sensitive regular expression.
	// nginx compares a map's plain keys without regard to case and refuses
	// two keys that differ only in case; those are written as regexes.
	Regex bool
}

// caseSafe marks the entries whose keys differ from another's only in case
// as regexes (escaped), and sorts the entries by key.
func caseSafe(es []mapEntry) []mapEntry {
	seen := map[string]int{}
	for _, e := range es {
		seen[strings.ToLower(e.Key)]++
	}
	for i := range es {
		if seen[strings.ToLower(es[i].Key)] > 1 {
			es[i].Regex = true
			es[i].Key = "^" + regexp.QuoteMeta(es[i].Key) + "$"
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Key < es[j].Key })
	return es
}

// nextEntries is the map from a page file (name + its path under v2/NAME)
// to the last tag of the page, for the pages after which more tags remain:
// nginx builds the Link header from it.
func nextEntries(st *treeState) []mapEntry {
	var es []mapEntry
	for _, name := range st.names {
		for _, p := range pages(sortedTags(st.repos[name])) {
			if p.next != "" {
				es = append(es, mapEntry{Key: name + p.rel, Value: p.next})
			}
		}
	}
	return es
}

// nEntries maps each ?n= up to maxPage to its page size; larger numbers
// are matched by a regex in the template.
func nEntries() []mapEntry {
	es := []mapEntry{{Key: "0", Value: "0"}}
	for n := 1; n <= maxPage; n++ {
		es = append(es, mapEntry{Key: strconv.Itoa(n), Value: strconv.Itoa(pageFor(n))})
	}
	return es
}

func sortedTags(r *treeRepo) []string {
	tags := make([]string, 0, len(r.tags))
	for tag := range r.tags {
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	return tags
}

package test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

// The shortcuts of ferry unpack --static, each with the premise it trusts
// broken here through the real binary and nginx:
//   - the journal (.ferry/journal.json) vouches for a file whose size,
//     modification time, ctime, inode and device are as recorded when ferry
//     last hashed it: TestStaticShortcutJournal edits blobs in place (same
//     size, modification time put back), deletes, truncates and replaces
//     them, and nginx then serves every blob as its digest says;
//   - DIR/nginx.conf is ferry's to rewrite when its first line is ferry's:
//     TestStaticShortcutForeignDir gives a site's nginx.conf, a file and a
//     folder of other files as DIR;
//   - names checked once per run: TestStaticShortcutCollision collides
//     with what an earlier run left.

// staticFixtures are a few images with layers of their own (about 1 MiB
// of bundle): both manifest kinds and an index.
func staticFixtures() harness.FixtureSet {
	return harness.FixtureSet{Name: "static-shortcuts", Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os", "node-runtime"}, AppSize: 200 << 10},
		{Repo: "app/web", Tag: "latest", Kind: harness.OCIImage, AliasOf: "1.0"},
		{Repo: "app/api", Tag: "2.0", Kind: harness.DockerImage, Bases: []string{"os"}, AppSize: 300 << 10},
		{Repo: "lib/multi", Tag: "3.0", Kind: harness.OCIIndex, Bases: []string{"os"}, AppSize: 100 << 10},
	}}
}

// readJournal reads the tree's journal: path → stamp.
func readJournal(t *testing.T, tree string) map[string]journalStamp {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tree, ".ferry/journal.json"))
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	var j struct {
		Version int                     `json:"version"`
		Files   map[string]journalStamp `json:"files"`
	}
	if err := json.Unmarshal(data, &j); err != nil || j.Version != 1 {
		t.Fatalf("journal: %v\n%.300s", err, data)
	}
	return j.Files
}

type journalStamp struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	MTime  int64  `json:"mtime"`
	Inode  uint64 `json:"inode"`
}

// checkStaticTree hashes every file of a static tree that is named by a
// digest (the store, and blobs and manifests under v2/) against its name,
// checks that every tag holds one of its repository's manifests, and that
// the journal vouches for no file whose bytes differ from its digest (a
// stamp whose size, modification time and inode still match is taken as
// vouching: stricter than ferry, which also wants the ctime unchanged).
// It returns the tags found, as "name:tag" → digest.
func checkStaticTree(t *testing.T, tree string) map[string]string {
	t.Helper()
	tags := map[string]string{}
	hashed := 0
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		rel = filepath.ToSlash(rel)
		dir, base := filepath.Base(filepath.Dir(p)), d.Name()
		if strings.HasPrefix(base, ".") {
			t.Errorf("temporary file left in the tree: %s", rel)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got := "sha256:" + sha256Hex(data)
		switch {
		case strings.HasPrefix(rel, "blobs/sha256/"):
			if got != "sha256:"+base {
				t.Errorf("%s holds %s", rel, got)
			}
		case strings.HasPrefix(rel, "v2/") && (dir == "blobs" || dir == "manifests") && strings.HasPrefix(base, "sha256:"):
			if got != base {
				t.Errorf("%s holds %s", rel, got)
			}
		case strings.HasPrefix(rel, "v2/") && dir == "manifests":
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), got)); err != nil {
				t.Errorf("tag %s holds %s, which is not a manifest of its repository", rel, got)
			}
			name := strings.TrimSuffix(strings.TrimPrefix(filepath.ToSlash(filepath.Dir(rel)), "v2/"), "/manifests")
			tags[name+":"+base] = got
		default:
			return nil
		}
		hashed++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if hashed == 0 {
		t.Fatalf("%s: no file to check", tree)
	}
	for rel, s := range readJournal(t, tree) {
		p := filepath.Join(tree, rel)
		st, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if st.Size() == s.Size && st.ModTime().UnixNano() == s.MTime && st.Sys().(*syscall.Stat_t).Ino == s.Inode {
			data, _ := os.ReadFile(p)
			if "sha256:"+sha256Hex(data) != s.Digest {
				t.Errorf("the journal vouches for %s as %s, but it holds other bytes", rel, s.Digest)
			}
		}
	}
	return tags
}

// checkServed pulls repo:tag from nginx as a client does: the manifest by
// tag, then every child manifest, config and layer by digest; each body
// must hash to its Docker-Content-Digest and to the digest it was asked
// by. It returns the number of blobs checked.
func checkServed(t *testing.T, addr, repo, tag, want string) int {
	t.Helper()
	base := "http://" + addr + "/v2/" + repo
	seen := map[string]bool{}
	var pull func(ref string, manifest bool, want string) int
	pull = func(ref string, manifest bool, want string) int {
		kind := "/blobs/"
		if manifest {
			kind = "/manifests/"
		}
		a := doHTTP(t, "GET", base+kind+ref)
		got := "sha256:" + sha256Hex([]byte(a.body))
		if a.status != 200 || got != want || a.header.Get("Docker-Content-Digest") != want {
			t.Errorf("GET %s%s: %d, body %s, Docker-Content-Digest %s, want %s", repo+kind, ref, a.status, got, a.header.Get("Docker-Content-Digest"), want)
			return 1
		}
		if !manifest || seen[want] {
			return 1
		}
		seen[want] = true
		var m struct {
			Manifests []struct{ Digest string } `json:"manifests"`
			Config    struct{ Digest string }   `json:"config"`
			Layers    []struct{ Digest string } `json:"layers"`
		}
		if err := json.Unmarshal([]byte(a.body), &m); err != nil {
			t.Errorf("%s %s: %v", repo, ref, err)
			return 1
		}
		n := 1
		for _, c := range m.Manifests {
			n += pull(c.Digest, true, c.Digest)
		}
		if m.Config.Digest != "" {
			n += pull(m.Config.Digest, false, m.Config.Digest)
		}
		for _, l := range m.Layers {
			n += pull(l.Digest, false, l.Digest)
		}
		return n
	}
	return pull(tag, true, want)
}

// editSameSize flips a byte of p in place and puts its modification time
// back: the same inode, size and modification time, other bytes (what
// rsync --inplace -t or a write followed by touch -r leave).
func editSameSize(t *testing.T, p string) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := st.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// TestStaticShortcutJournal: once the journal vouches for the tree, blobs
// changed in place (same size, modification time put back), deleted,
// truncated and replaced by another file of the same size and time are
// all written again by the next unpack, and nginx serves every tag's
// manifests, configs and layers with the bytes their digests name.
func TestStaticShortcutJournal(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", staticFixtures())
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	unpackStatic(t, bin, tree, addr, bundlePath)
	// ferry records a stamp only for a file hashed at least 2 s after its
	// last change (its own renames and links change the ctime): wait, and
	// rerun so that the journal vouches for every blob.
	time.Sleep(2100 * time.Millisecond)
	unpackStatic(t, bin, tree, addr, bundlePath)
	stamps := readJournal(t, tree)
	var layers []string
	for _, fx := range fixtures {
		for _, l := range fx.Layers {
			if _, ok := stamps["blobs/sha256/"+l[7:]]; !ok {
				t.Fatalf("the journal does not vouch for layer %s: the test would not break its premise", l)
			}
			if !contains(layers, l) {
				layers = append(layers, l)
			}
		}
	}
	sort.Strings(layers)
	if len(layers) < 4 {
		t.Fatalf("only %d layers", len(layers))
	}
	store := func(d string) string { return filepath.Join(tree, "blobs/sha256", d[7:]) }
	// In place, same size, mtime put back: a layer, and a manifest through its tag.
	editSameSize(t, store(layers[0]))
	editSameSize(t, filepath.Join(tree, "v2/proj/app/web/manifests/latest"))
	// Deleted, truncated, and replaced by a file of the same size and time.
	if err := os.Remove(store(layers[1])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(store(layers[2]), 10); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(store(layers[3]))
	other := filepath.Join(dir, "other")
	writeFile(t, other, strings.Repeat("x", int(st.Size())))
	if err := os.Chtimes(other, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, store(layers[3])); err != nil {
		t.Fatal(err)
	}

	sum := unpackStatic(t, bin, tree, addr, bundlePath)
	if sum["blobsWritten"] != float64(5) {
		t.Errorf("after the damage: %v, want 5 blobs written again", sum)
	}
	tags := checkStaticTree(t, tree)
	startNginx(t, filepath.Join(tree, "nginx.conf"), addr)
	for _, fx := range fixtures {
		ref := "proj/" + fx.Repo + ":" + fx.Tag
		if tags[ref] != fx.Digest {
			t.Errorf("tag %s holds %s, want %s", ref, tags[ref], fx.Digest)
		}
		checkServed(t, addr, "proj/"+fx.Repo, fx.Tag, fx.Digest)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestStaticShortcutForeignDir: DIR/nginx.conf is replaced only when ferry
// wrote it. A site's configuration folder, a regular file and a folder of
// other files are refused with exit 2 before anything is written, naming
// the file; --json says so in its error object.
func TestStaticShortcutForeignDir(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	fixtures := harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{{Repo: "app/one", Tag: "1", Kind: harness.OCIImage, Bases: []string{"os"}}}})
	dir := t.TempDir()
	bundlePath := exportAll(t, bin, reg, fixtures, dir)
	site := filepath.Join(dir, "etc-nginx")
	if err := os.MkdirAll(filepath.Join(site, "sites-enabled"), 0o755); err != nil {
		t.Fatal(err)
	}
	siteConf := "user www-data;\nevents {}\nhttp { include sites-enabled/*; }\n"
	writeFile(t, filepath.Join(site, "nginx.conf"), siteConf)
	file := writeFile(t, filepath.Join(dir, "registry.txt"), "a file, not a directory\n")
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(www, "index.html"), "<html></html>\n")
	for _, c := range []struct{ dir, want string }{
		{site, filepath.Join(site, "nginx.conf") + " was not written by ferry"},
		{file, file + " is a file, not a directory"},
		{www, www + " is not empty (index.html) and holds no ferry tree"},
	} {
		before := treeListing(t, c.dir)
		stdout, stderr, code := harness.Run(t, bin, "unpack", "-q", "--static", c.dir, bundlePath)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("unpack --static %s: exit %d, stderr %q; want 2 and %q\n%s", c.dir, code, stderr, c.want, stdout)
		}
		stdout, _, code = harness.Run(t, bin, "unpack", "-q", "--json", "--static", c.dir, bundlePath)
		var res struct {
			Error struct {
				Message  string `json:"message"`
				Kind     string `json:"kind"`
				ExitCode int    `json:"exitCode"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 2 || res.Error.ExitCode != 2 || res.Error.Kind != "input" || !strings.Contains(res.Error.Message, c.want) {
			t.Errorf("unpack --json --static %s: exit %d, %v\n%s", c.dir, code, err, stdout)
		}
		if after := treeListing(t, c.dir); after != before {
			t.Errorf("%s: a refused unpack changed the folder: %v, then %v", c.dir, before, after)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(site, "nginx.conf")); string(data) != siteConf {
		t.Errorf("the site's nginx.conf was changed:\n%s", data)
	}
	if data, _ := os.ReadFile(file); string(data) != "a file, not a directory\n" {
		t.Errorf("the file given as DIR was changed: %q", data)
	}
	// A tree ferry wrote is taken again, even after its .ferry/ was removed.
	tree := filepath.Join(dir, "tree")
	unpackStatic(t, bin, tree, loopbackAddr(t), bundlePath)
	if err := os.RemoveAll(filepath.Join(tree, ".ferry")); err != nil {
		t.Fatal(err)
	}
	if sum := unpackStatic(t, bin, tree, loopbackAddr(t), bundlePath); sum["blobsWritten"] != float64(0) {
		t.Errorf("rerun without .ferry/: %v", sum)
	}
}

// TestStaticShortcutCollision: names are checked against what earlier
// runs left, before anything is written: a repository proj/a/manifests
// after a tag proj/a:blobs needs as a folder what the tree holds as a
// file. The run is refused, naming both, and the tree is as it was (no
// blob of the refused bundle in the store).
func TestStaticShortcutCollision(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "src/one", Tag: "blobs", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "src/big", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"os"}, AppSize: 100 << 10},
		{Repo: "src/two", Tag: "1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
	}})
	dir := t.TempDir()
	export := func(name, mappings string) string {
		m := writeFile(t, filepath.Join(dir, name+".yaml"), "tasks:\n  - name: t\n    source:\n      registry: "+reg.Host+"\n    mappings:\n"+mappings)
		out := filepath.Join(dir, name+".tar")
		if stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", m, "-o", out); code != 0 {
			t.Fatalf("export %s: %s %s", name, stdout, stderr)
		}
		return out
	}
	first := export("first", "      - from: src/one\n        to: proj/a\n")
	// proj/0big sorts first: placed (and its blobs stored) before the
	// collision was met, without the check.
	second := export("second", "      - from: src/big\n        to: proj/0big\n      - from: src/two\n        to: proj/a/manifests\n")
	tree := filepath.Join(dir, "tree")
	addr := loopbackAddr(t)
	unpackStatic(t, bin, tree, addr, first)
	before := treeListing(t, tree)
	stdout, stderr, code := harness.Run(t, bin, "unpack", "-q", "--static", tree, second)
	want := "v2/proj/a/manifests/blobs (needed as a file by proj/a:blobs (already in the tree) and as a folder by repository proj/a/manifests)"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("colliding run: exit %d, stderr %q\nwant %q\n%s", code, stderr, want, stdout)
	}
	if after := treeListing(t, tree); after != before {
		t.Errorf("the refused run changed the tree:\nbefore %s\nafter  %s", before, after)
	}
	tags := checkStaticTree(t, tree)
	if len(tags) != 1 {
		t.Errorf("tags after the refused run: %v", tags)
	}
}

// treeListing lists every path under root (a folder or a file) but
// .ferry/, with the size and a hash of each file.
func treeListing(t *testing.T, root string) string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ".ferry" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			data, _ := os.ReadFile(p)
			rel += "=" + strconv.Itoa(len(data)) + ":" + sha256Hex(data)[:8]
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

package static

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// settledNow records stamps however recently a file changed (tests).
func settledNow() Option { return func(o *options) { o.settled = true } }

// planned runs Unpack and returns its summary and the bytes it planned to
// read or write: 0 when the journal vouched for every blob.
func planned(t *testing.T, out string, rds []*bundle.Reader, opts ...Option) (*Summary, int64) {
	t.Helper()
	var total int64 = -1
	opts = append(opts, WithProgress(bundle.ProgressFunc(func(e bundle.Event) {
		if e.Kind == bundle.EventPlanned {
			total = e.Total
		}
	})))
	sum, err := Unpack(context.Background(), rds, out, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return sum, total
}

// vouchedTree unpacks rd into a new tree until the journal vouches for
// every blob: a first run writes (and records nothing: its renames and
// links move the ctimes), a second hashes and records, a third reads
// nothing. The pause lets the clock pass the grain of the first run's
// ctimes, so that a later change cannot keep them.
func vouchedTree(t *testing.T, dir string, rd *bundle.Reader) string {
	t.Helper()
	out := filepath.Join(dir, "tree")
	planned(t, out, []*bundle.Reader{rd}, settledNow())
	if st, err := os.Stat(filepath.Join(out, NginxConf)); err != nil || !stampOf(st, v1.Hash{}).usable() || !fsKeepsCtime(out) {
		t.Skip("no inode or change time here: the journal vouches for nothing, every run hashes")
	}
	time.Sleep(50 * time.Millisecond)
	if _, total := planned(t, out, []*bundle.Reader{rd}, settledNow()); total == 0 {
		t.Fatal("the run after the first trusted stamps the first run recorded after its own links")
	}
	if sum, total := planned(t, out, []*bundle.Reader{rd}, settledNow()); total != 0 || sum.BlobsPresent != len(rd.Digests()) {
		t.Fatalf("third run: %d bytes planned, %+v; want the journal to vouch for every blob", total, sum)
	}
	return out
}

// checkTreeFiles hashes every blob and manifest file of the tree against
// its name, every tag against the manifests of its repository, and
// checks that the journal vouches only for files that hash to their
// digest. It returns how many files it hashed.
func checkTreeFiles(t *testing.T, out string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		rel = filepath.ToSlash(rel)
		var want string
		switch dir, base := filepath.Base(filepath.Dir(p)), d.Name(); {
		case strings.HasPrefix(rel, storeDir+"/"):
			want = "sha256:" + base
		case (dir == "blobs" || dir == "manifests") && strings.HasPrefix(base, "sha256:"):
			want = base
		case dir == "manifests":
			want = fileDigest(t, p)
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), want)); err != nil {
				t.Errorf("tag %s holds %s, which is not a manifest of its repository", rel, want)
			}
		default:
			return nil
		}
		n++
		if got := fileDigest(t, p); got != want {
			t.Errorf("%s holds %s", rel, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkJournal(t, out)
	return n
}

// checkJournal: every stamp the journal holds that still matches its file
// vouches for the right bytes.
func checkJournal(t *testing.T, out string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, journalFile))
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil || j.Version != 1 {
		t.Fatalf("journal: %v\n%s", err, data)
	}
	for rel, s := range j.Files {
		st, err := os.Lstat(filepath.Join(out, rel))
		if err != nil {
			continue
		}
		h, _ := v1.NewHash(s.Digest)
		if stampOf(st, h) == s && fileDigest(t, filepath.Join(out, rel)) != s.Digest {
			t.Errorf("the journal vouches for %s as %s, but it holds other bytes", rel, s.Digest)
		}
	}
}

// editInPlace flips the first byte of p without changing its inode, size
// or modification time (as rsync --inplace -t, or a write then touch -r).
func editInPlace(t *testing.T, p string) {
	t.Helper()
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if !os.SameFile(before, after) || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("the edit changed the inode, size or modification time")
	}
}

// TestJournalSameSizeEdit breaks the journal's premise as an mtime-only
// stamp had it: a blob changed in place, same size, modification time put
// back. The ctime moved, so the next run hashes the blob and writes it
// again, and every file of the tree holds its digest's bytes.
func TestJournalSameSizeEdit(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "layer edited in place", "other layer")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1.0"}, img: img})
	out := vouchedTree(t, dir, rd)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	editInPlace(t, filepath.Join(out, storeRel(ld)))
	// The manifest too, through its tag (the same inode as the store's copy).
	editInPlace(t, filepath.Join(out, "v2/proj/app/manifests/1.0"))

	sum, total := planned(t, out, []*bundle.Reader{rd}, settledNow())
	if sum.BlobsWritten != 2 || total == 0 {
		t.Errorf("after the edits: %+v, %d bytes planned; want the two edited blobs written again", sum, total)
	}
	if n := checkTreeFiles(t, out); n == 0 {
		t.Fatal("no file checked")
	}
	if !sameFile(t, filepath.Join(out, storeRel(ld)), filepath.Join(out, "v2/proj/app/blobs", ld.String())) {
		t.Error("the repository's copy of the layer is not linked to the repaired store entry")
	}
}

// TestJournalSameSizeEditCopies: the same where files are copies (no hard
// links): an edited copy under v2/ is found by its own stamp.
func TestJournalSameSizeEditCopies(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "copied layer edited in place")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1.0"}, img: img})
	out := filepath.Join(dir, "tree")
	for range 2 {
		planned(t, out, []*bundle.Reader{rd}, settledNow(), withoutLinks())
		time.Sleep(50 * time.Millisecond)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	repo := filepath.Join(out, "v2/proj/app/blobs", ld.String())
	editInPlace(t, repo)
	sum, _ := planned(t, out, []*bundle.Reader{rd}, settledNow(), withoutLinks())
	if sum.FilesWritten != 1 || fileDigest(t, repo) != ld.String() {
		t.Errorf("after the edit: %+v, %s holds %s", sum, repo, fileDigest(t, repo))
	}
	checkTreeFiles(t, out)
}

// TestJournalDeletedTruncatedMoved: files deleted, truncated (in place:
// the same inode), and replaced by another file of the same size and
// modification time (moved in) are all written again.
func TestJournalDeletedTruncatedMoved(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "deleted layer", "truncated layer", "replaced layer", "linked layer")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1.0"}, img: img},
		entry{target: "proj/other", tags: []string{"2.0"}, img: img})
	out := vouchedTree(t, dir, rd)
	layers, _ := img.Layers()
	var ls []v1.Hash
	for _, l := range layers {
		ls = append(ls, digestOf(t, l))
	}
	store := func(h v1.Hash) string { return filepath.Join(out, storeRel(h)) }
	if err := os.Remove(store(ls[0])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(store(ls[1]), 3); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(store(ls[2]))
	moved := filepath.Join(dir, "moved")
	if err := os.WriteFile(moved, make([]byte, st.Size()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(moved, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, store(ls[2])); err != nil {
		t.Fatal(err)
	}
	// Under v2/: one repository's link removed, another's replaced by a
	// link to another blob (a file moved over it).
	if err := os.Remove(filepath.Join(out, "v2/proj/app/blobs", ls[3].String())); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(out, "v2/proj/other/blobs", ls[0].String()), filepath.Join(out, "v2/proj/other/blobs", ls[3].String())); err != nil {
		t.Fatal(err)
	}

	sum, _ := planned(t, out, []*bundle.Reader{rd}, settledNow())
	if sum.BlobsWritten != 3 {
		t.Errorf("blobs written: %d, want 3 (deleted, truncated, replaced): %+v", sum.BlobsWritten, sum)
	}
	checkTreeFiles(t, out)
	for _, repo := range []string{"proj/app", "proj/other"} {
		for _, h := range ls {
			if p := filepath.Join(out, "v2", repo, "blobs", h.String()); !sameFile(t, p, store(h)) {
				t.Errorf("%s is not linked to the store", p)
			}
		}
	}
}

// A journal written before stamps had a ctime vouches for nothing: its
// files are hashed (and a same-size edit it would have missed repaired).
func TestJournalWithoutCtime(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "layer of an old journal")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: img})
	out := vouchedTree(t, dir, rd)
	p := filepath.Join(out, journalFile)
	data, _ := os.ReadFile(p)
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	for rel, s := range j.Files {
		s.CTime = 0
		j.Files[rel] = s
	}
	data, _ = json.Marshal(j)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ld := digestOf(t, must(t, img.Layers)[0])
	editInPlace(t, filepath.Join(out, storeRel(ld)))
	sum, total := planned(t, out, []*bundle.Reader{rd}, settledNow())
	if total == 0 || sum.BlobsWritten != 1 {
		t.Errorf("old journal: %+v, %d bytes planned", sum, total)
	}
	checkTreeFiles(t, out)
}

func must[T any](t *testing.T, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Without the settle time, a file changed just before it was hashed is
// not recorded: its ctime may not have moved yet at the filesystem's grain.
func TestJournalSkipsRecentChanges(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "fresh")})
	out := filepath.Join(dir, "tree")
	planned(t, out, []*bundle.Reader{rd})
	planned(t, out, []*bundle.Reader{rd}) // hashes: changed less than settleTime ago
	data, _ := os.ReadFile(filepath.Join(out, journalFile))
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Files) != 0 {
		t.Errorf("the journal recorded files changed under %s ago: %v", settleTime, j.Files)
	}
}

// TestUnpackRefusesForeignDir: a DIR ferry did not write is refused, with
// ErrOptions, before anything is created in it.
func TestUnpackRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "x")})
	file := filepath.Join(dir, "a-file")
	site := filepath.Join(dir, "etc-nginx")
	docs := filepath.Join(dir, "www")
	for p, content := range map[string]string{
		file:                                   "not a directory\n",
		filepath.Join(site, NginxConf):         "user www-data;\nhttp { include sites-enabled/*; }\n",
		filepath.Join(site, "mime.types"):      "types {}\n",
		filepath.Join(docs, "index.html"):      "<html></html>\n",
		filepath.Join(dir, "short", NginxConf): "#",
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ dir, want string }{
		{file, "is a file, not a directory"},
		{filepath.Join(file, "sub"), "part of the path is a file"},
		{site, filepath.Join(site, NginxConf) + " was not written by ferry"},
		{docs, "holds no ferry tree"},
		{filepath.Join(dir, "short"), "was not written by ferry"},
	} {
		before := listTree(t, dir)
		_, err := Unpack(context.Background(), []*bundle.Reader{rd}, c.dir)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrOptions and %q", c.dir, err, c.want)
		}
		if after := listTree(t, dir); after != before {
			t.Errorf("%s: a refused unpack changed files:\nbefore %s\nafter  %s", c.dir, before, after)
		}
	}
	// Accepted: an empty filesystem root (lost+found), and a ferry tree
	// that lost .ferry/ (its nginx.conf is ferry's).
	fresh := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(filepath.Join(fresh, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, fresh); err != nil {
		t.Fatalf("a folder holding only lost+found: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(fresh, stateDir)); err != nil {
		t.Fatal(err)
	}
	if sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, fresh); err != nil || sum.BlobsWritten != 0 {
		t.Fatalf("a tree without .ferry/: %+v, %v", sum, err)
	}
	conf, _ := os.ReadFile(filepath.Join(fresh, NginxConf))
	if !strings.HasPrefix(string(conf), confMarker) {
		t.Errorf("nginx.conf does not start with the marker checkDir looks for:\n%.200s", conf)
	}
}

// listTree is every path under dir with its size and content hash.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type().IsRegular() && !strings.HasSuffix(p, ".tar") {
			data, _ := os.ReadFile(p)
			s := sha256.Sum256(data)
			rel += "=" + hex.EncodeToString(s[:4])
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestUnpackCollisionAcrossRuns: names that collide with what an earlier
// run left in the tree (a tag a:blobs there, a repository a/manifests now,
// or the reverse) are refused before any blob or file is written; so is a
// folder in the way of a tag.
func TestUnpackCollisionAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	first := writeBundle(t, dir, "1.tar", nil, entry{target: "a", tags: []string{"blobs"}, img: testImage(t, "first")},
		entry{target: "c/manifests", tags: []string{"1"}, img: testImage(t, "third")})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{first}, out); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		entries []entry
		want    string
	}{
		// b/app sorts before a/manifests' sibling checks would have met it:
		// without the check its blobs were written first.
		{"folder over a tag", []entry{{target: "b/app", tags: []string{"1"}, img: testImage(t, "second", "more")}, {target: "a/manifests", tags: []string{"1"}, img: testImage(t, "second")}}, "v2/a/manifests/blobs (needed as a file by a:blobs (already in the tree) and as a folder by repository a/manifests)"},
		{"tag over a folder", []entry{{target: "b/app", tags: []string{"1"}, img: testImage(t, "second", "more")}, {target: "c", tags: []string{"manifests"}, img: testImage(t, "fourth")}}, "v2/c/manifests/manifests (needed as a file by c:manifests and as a folder by repository c/manifests (already in the tree))"},
	} {
		rd := writeBundle(t, dir, strings.ReplaceAll(c.name, " ", "-")+".tar", nil, c.entries...)
		before := listTree(t, out)
		_, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
		if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant %q", c.name, err, c.want)
		}
		if after := listTree(t, out); after != before {
			t.Errorf("%s: the refused run wrote:\nbefore %s\nafter  %s", c.name, before, after)
		}
	}
	// A folder where a tag goes, and a file where a repository's folder goes.
	if err := os.MkdirAll(filepath.Join(out, "v2/d/manifests/2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "v2/e"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rd := writeBundle(t, dir, "way.tar", nil, entry{target: "b/app", tags: []string{"1"}, img: testImage(t, "second", "more")},
		entry{target: "d", tags: []string{"2"}, img: testImage(t, "fifth")}, entry{target: "e/x", tags: []string{"1"}, img: testImage(t, "sixth")})
	before := listTree(t, out)
	_, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), "v2/d/manifests/2 is a folder where d:2 needs a file") || !strings.Contains(err.Error(), "v2/e is a file where e/x needs a folder") {
		t.Errorf("things in the way: %v", err)
	}
	if after := listTree(t, out); after != before {
		t.Errorf("the refused run wrote:\nbefore %s\nafter  %s", before, after)
	}
	// Without the collisions, the same tree takes the new names.
	rd = writeBundle(t, dir, "fine.tar", nil, entry{target: "b/app", tags: []string{"1"}, img: testImage(t, "second", "more")},
		entry{target: "a/other", tags: []string{"1"}, img: testImage(t, "second")})
	if sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil || sum.TreeRepositories != 4 {
		t.Fatalf("names that do not collide: %+v, %v", sum, err)
	}
}

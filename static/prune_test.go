package static

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/bundletest"
	"github.com/ferry-airgap/ferry/internal/oci"
)

// pruneFixture: bundle a carries proj/app v1 and v2 and proj/gone x;
// bundle b carries proj/app v2 and v3. v1 and v2 share a base layer.
type pruneFixture struct {
	dir, out           string
	a, b               *bundle.Reader
	v1, v2, v3, goneIm v1.Image
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	f := &pruneFixture{dir: t.TempDir()}
	f.v1 = testImage(t, "shared base", "only in v1")
	f.v2 = testImage(t, "shared base", "only in v2")
	f.v3 = testImage(t, "shared base", "only in v3")
	f.goneIm = testImage(t, "gone's own")
	f.a = writeBundle(t, f.dir, "a.tar", nil,
		entry{target: "proj/app", tags: []string{"v1"}, img: f.v1},
		entry{target: "proj/app", tags: []string{"v2"}, img: f.v2},
		entry{target: "proj/gone", tags: []string{"x"}, img: f.goneIm})
	f.b = writeBundle(t, f.dir, "b.tar", nil,
		entry{target: "proj/app", tags: []string{"v2"}, img: f.v2},
		entry{target: "proj/app", tags: []string{"v3"}, img: f.v3})
	f.out = filepath.Join(f.dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{f.a}, f.out); err != nil {
		t.Fatal(err)
	}
	return f
}

// layerHex is the hex digest of image img's layer i.
func layerHex(t *testing.T, img v1.Image, i int) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return digestOf(t, ls[i]).Hex
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func readTags(t *testing.T, out, name string) []string {
	t.Helper()
	var l struct{ Tags []string }
	data, err := os.ReadFile(filepath.Join(out, "v2", name, "tags/list"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	return l.Tags
}

func TestPruneRemovesOldTags(t *testing.T) {
	f := newPruneFixture(t)
	sum, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune())
	if err != nil {
		t.Fatal(err)
	}
	if got := readTags(t, f.out, "proj/app"); !slices.Equal(got, []string{"v2", "v3"}) {
		t.Errorf("tags/list: %v", got)
	}
	v1d, v2d := digestOf(t, f.v1), digestOf(t, f.v2)
	gone := []string{"v2/proj/app/manifests/v1", "v2/proj/app/manifests/" + v1d.String(), "v2/proj/app/blobs/" + v1d.String(),
		"blobs/sha256/" + v1d.Hex, "blobs/sha256/" + layerHex(t, f.v1, 1), "v2/proj/app/tags/after/1/v1",
		"v2/proj/gone", "blobs/sha256/" + layerHex(t, f.goneIm, 0)}
	for _, p := range gone {
		if exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s is still there", p)
		}
	}
	kept := []string{"v2/proj/app/manifests/v2", "v2/proj/app/manifests/v3", "v2/proj/app/manifests/" + v2d.String(),
		"blobs/sha256/" + layerHex(t, f.v1, 0), "v2/proj/app/blobs/sha256:" + layerHex(t, f.v2, 0), "blobs/sha256/" + layerHex(t, f.v2, 1)}
	for _, p := range kept {
		if !exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s is gone", p)
		}
	}
	cat, _ := os.ReadFile(filepath.Join(f.out, "v2/_catalog"))
	if strings.Contains(string(cat), "proj/gone") {
		t.Errorf("catalog still names proj/gone: %s", cat)
	}
	conf, _ := os.ReadFile(filepath.Join(f.out, NginxConf))
	if strings.Contains(string(conf), "/manifests/v1\"") || strings.Contains(string(conf), "proj/gone") {
		t.Errorf("nginx.conf still maps a removed tag")
	}
	p := sum.Pruned
	if p == nil || !slices.Equal(p.Tags, []string{"proj/app:v1", "proj/gone:x"}) || !slices.Equal(p.Repositories, []string{"proj/gone"}) ||
		len(p.Manifests) != 2 || len(p.Blobs) != 6 || p.BytesFreed <= 0 {
		t.Errorf("prune summary %+v", p)
	}
	checkPrunedJournal(t, f.out)
	// A second prune with the same bundle has nothing left to remove.
	sum, err = Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune())
	if err != nil || len(sum.Pruned.Tags)+len(sum.Pruned.Blobs)+sum.Pruned.Files != 0 {
		t.Errorf("second prune: %+v, %v", sum.Pruned, err)
	}
}

// checkPrunedJournal: every file the journal names is there, and every media
// type it records is of a manifest the tree holds.
func checkPrunedJournal(t *testing.T, out string) {
	t.Helper()
	var j journal
	data, err := os.ReadFile(filepath.Join(out, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	for rel := range j.Files {
		if !exists(t, filepath.Join(out, rel)) {
			t.Errorf("journal names %s, which is gone", rel)
		}
	}
	for d := range j.MediaTypes {
		if !exists(t, filepath.Join(out, "blobs/sha256", strings.TrimPrefix(d, "sha256:"))) {
			t.Errorf("journal has a media type for %s, which is gone", d)
		}
	}
}

// --keep is matched, anchored, against the tag and against REPO:TAG.
func TestPruneKeep(t *testing.T) {
	for _, c := range []struct {
		keep  []string
		kept  bool
		xKept bool
	}{
		{[]string{"v1"}, true, false},
		{[]string{"proj/app:v1"}, true, false},
		{[]string{"v"}, false, false},          // anchored: not a substring match
		{[]string{"app:v1"}, false, false},     // the whole REPO:TAG
		{[]string{"proj/.*:.*1"}, true, false}, // a pattern across both
		{[]string{"x", "v[0-9]"}, true, true},
	} {
		f := newPruneFixture(t)
		sum, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune(c.keep...))
		if err != nil {
			t.Fatal(err)
		}
		v1Tag := exists(t, filepath.Join(f.out, "v2/proj/app/manifests/v1"))
		v1Layer := exists(t, filepath.Join(f.out, "blobs/sha256", layerHex(t, f.v1, 1)))
		x := exists(t, filepath.Join(f.out, "v2/proj/gone/tags/list"))
		if v1Tag != c.kept || v1Layer != c.kept || x != c.xKept {
			t.Errorf("--keep %q: v1 tag %v, v1 layer %v, proj/gone %v; kept %v", c.keep, v1Tag, v1Layer, x, sum.Pruned.Kept)
		}
		if c.kept && !slices.Contains(readTags(t, f.out, "proj/app"), "v1") {
			t.Errorf("--keep %q: v1 kept but not listed", c.keep)
		}
	}
	if _, err := Unpack(context.Background(), nil, t.TempDir(), WithPrune("(")); !errors.Is(err, ErrOptions) {
		t.Errorf("a bad pattern: %v", err)
	}
}

// treeHash hashes every path, mode and content under dir (links as such).
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	var paths []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		return nil
	})
	sort.Strings(paths)
	for _, p := range paths {
		st, _ := os.Lstat(p)
		rel, _ := filepath.Rel(dir, p)
		_, _ = io.WriteString(h, rel+"\x00"+st.Mode().String()+"\x00")
		if st.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			_, _ = h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// freedBytes is the size of the files under dir of before whose every
// link is gone from after: what a prune freed.
func freedBytes(before, after map[string]fileID) int64 {
	left := map[[2]uint64]bool{}
	for p, id := range after {
		if b, ok := before[p]; ok && b.ino == id.ino {
			left[[2]uint64{id.dev, id.ino}] = true
		}
	}
	counted := map[[2]uint64]bool{}
	var n int64
	for p, id := range before {
		k := [2]uint64{id.dev, id.ino}
		if _, still := after[p]; still || left[k] || counted[k] {
			continue
		}
		counted[k] = true
		n += id.size
	}
	return n
}

type fileID struct {
	dev, ino uint64
	size     int64
}

func files(t *testing.T, dir string) map[string]fileID {
	t.Helper()
	out := map[string]fileID{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			st, _ := os.Lstat(p)
			sys := st.Sys().(*syscall.Stat_t)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = fileID{uint64(sys.Dev), uint64(sys.Ino), st.Size()} //nolint:unconvert // types differ by platform
		}
		return nil
	})
	return out
}

// A dry run changes nothing (the tree hashes the same), and says what the
// prune then removes: the same tags, manifests, blobs and freed bytes.
func TestPruneDryRun(t *testing.T) {
	f := newPruneFixture(t)
	before := treeHash(t, f.out)
	dry, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune(), WithDryRun(true))
	if err != nil {
		t.Fatal(err)
	}
	if after := treeHash(t, f.out); after != before {
		t.Fatal("the dry run changed the tree")
	}
	if dry.Pruned == nil || !dry.Pruned.DryRun {
		t.Fatalf("dry run summary %+v", dry)
	}
	was := files(t, f.out)
	real, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune())
	if err != nil {
		t.Fatal(err)
	}
	freed := freedBytes(was, files(t, f.out))
	d, r := *dry.Pruned, *real.Pruned
	d.DryRun = false
	dj, _ := json.Marshal(d)
	rj, _ := json.Marshal(r)
	if string(dj) != string(rj) {
		t.Errorf("dry run said %s\nthe prune did %s", dj, rj)
	}
	if d.BytesFreed != freed || freed == 0 {
		t.Errorf("dry run says %d bytes freed; the prune freed %d", d.BytesFreed, freed)
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithDryRun(true)); !errors.Is(err, ErrOptions) {
		t.Errorf("--dry-run without --prune: %v", err)
	}
}

// A folder that holds files but no journal and no nginx.conf of ferry's
// is not pruned: nothing in it is touched.
func TestPruneRefusesForeignDir(t *testing.T) {
	f := newPruneFixture(t)
	dir := filepath.Join(t.TempDir(), "site")
	if err := os.MkdirAll(filepath.Join(dir, "v2/proj/app/manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"index.html", "v2/proj/app/manifests/old"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := treeHash(t, dir)
	_, err := Unpack(context.Background(), []*bundle.Reader{f.b}, dir, WithPrune())
	if !errors.Is(err, ErrNotFerryTree) || !errors.Is(err, ErrOptions) {
		t.Errorf("pruning a foreign folder: %v", err)
	}
	if treeHash(t, dir) != before {
		t.Error("the foreign folder changed")
	}
	// A tree whose journal is lost but whose nginx.conf is ferry's is one.
	if err := os.RemoveAll(filepath.Join(f.out, stateDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune()); err != nil {
		t.Errorf("a tree without its journal: %v", err)
	}
}

// Files ferry does not know are left where they are and reported; the
// repository they sit in still leaves the catalog.
func TestPruneLeavesUnknownFiles(t *testing.T) {
	f := newPruneFixture(t)
	mine := []string{"v2/proj/gone/manifests/README", "blobs/sha256/notes.txt", "v2/proj/app/tags/notes"}
	for _, p := range mine {
		if err := os.WriteFile(filepath.Join(f.out, p), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Unpack(context.Background(), []*bundle.Reader{f.b}, f.out, WithPrune())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range mine {
		if !exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s, not ferry's, was removed", p)
		}
	}
	want := append([]string{}, mine...)
	sort.Strings(want)
	if !slices.Equal(sum.Pruned.Unknown, want) {
		t.Errorf("unknown files reported: %v, want %v", sum.Pruned.Unknown, want)
	}
	cat, _ := os.ReadFile(filepath.Join(f.out, "v2/_catalog"))
	if strings.Contains(string(cat), "proj/gone") || exists(t, filepath.Join(f.out, "v2/proj/gone/tags/list")) {
		t.Errorf("proj/gone is still served: %s", cat)
	}
}

// Breaks the premise that a blob is unreferenced when no kept manifest
// names it: a layer shared by a removed repository and a kept one stays,
// and so does the manifest of a kept index's children.
func TestPruneSharedBlobStays(t *testing.T) {
	dir := t.TempDir()
	shared := testImage(t, "base both use", "old's own")
	keep := testImage(t, "base both use", "new's own")
	idx := testIndex(t, "multi")
	a := writeBundle(t, dir, "a.tar", nil,
		entry{target: "old", tags: []string{"1"}, img: shared},
		entry{target: "new", tags: []string{"1"}, img: keep},
		entry{target: "multi", tags: []string{"1"}, idx: idx})
	b := writeBundle(t, dir, "b.tar", nil,
		entry{target: "new", tags: []string{"1"}, img: keep})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{a}, out); err != nil {
		t.Fatal(err)
	}
	// multi:1 is kept by --keep: its index is read from the tree, and what
	// its children reach stays.
	if _, err := Unpack(context.Background(), []*bundle.Reader{b}, out, WithPrune("multi:1")); err != nil {
		t.Fatal(err)
	}
	base := layerHex(t, keep, 0)
	if !exists(t, filepath.Join(out, "blobs/sha256", base)) || !exists(t, filepath.Join(out, "v2/new/blobs/sha256:"+base)) {
		t.Error("the shared base layer is gone")
	}
	if exists(t, filepath.Join(out, "v2/old")) || exists(t, filepath.Join(out, "blobs/sha256", layerHex(t, shared, 1))) {
		t.Error("old's files are still there")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		child, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"v2/multi/manifests/" + d.Digest.String(), "blobs/sha256/" + layerHex(t, child, 0)} {
			if !exists(t, filepath.Join(out, p)) {
				t.Errorf("%s of a kept index's child is gone", p)
			}
		}
	}
}

// Breaks the premise that nginx has loaded the nginx.conf on disk: a kept
// tag that moves is served from its old manifest until nginx reloads, so
// that manifest stays through this prune and goes at the next one.
func TestPruneMovedTagKeepsOldManifest(t *testing.T) {
	f := newPruneFixture(t)
	moved := testImage(t, "shared base", "v2 rebuilt")
	b := writeBundle(t, f.dir, "moved.tar", nil, entry{target: "proj/app", tags: []string{"v2"}, img: moved})
	old := digestOf(t, f.v2)
	if _, err := Unpack(context.Background(), []*bundle.Reader{b}, f.out, WithPrune()); err != nil {
		t.Fatal(err)
	}
	if fileDigest(t, filepath.Join(f.out, "v2/proj/app/manifests/v2")) != digestOf(t, moved).String() {
		t.Fatal("v2 did not move")
	}
	for _, p := range []string{"v2/proj/app/manifests/" + old.String(), "blobs/sha256/" + layerHex(t, f.v2, 1)} {
		if !exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s, which the loaded nginx.conf still serves for v2, is gone", p)
		}
	}
	sum, err := Unpack(context.Background(), []*bundle.Reader{b}, f.out, WithPrune())
	if err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(f.out, "v2/proj/app/manifests/"+old.String())) || !slices.Contains(sum.Pruned.Manifests, "proj/app@"+old.String()) {
		t.Errorf("the old manifest outlived a second prune: %+v", sum.Pruned)
	}
}

// The referrers of a kept manifest stay with it, though no bundle of the
// prune carries them; those of a removed one go.
func TestPruneReferrersFollowSubject(t *testing.T) {
	dir := t.TempDir()
	subject := testImage(t, "subject")
	other := testImage(t, "other")
	sigS, sigO := testIndex(t, "sig of subject"), testIndex(t, "sig of other")
	a := writeBundle(t, dir, "a.tar", nil,
		entry{target: "proj/app", tags: []string{"1"}, img: subject},
		entry{target: "proj/app", tags: []string{"2"}, img: other},
		entry{target: "proj/app", tags: []string{oci.DigestTag(digestOf(t, subject))}, idx: sigS},
		entry{target: "proj/app", tags: []string{oci.DigestTag(digestOf(t, other))}, idx: sigO})
	b := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: subject})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{a}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{b}, out, WithPrune()); err != nil {
		t.Fatal(err)
	}
	if got := readTags(t, out, "proj/app"); !slices.Equal(got, []string{"1", oci.DigestTag(digestOf(t, subject))}) {
		t.Errorf("tags after the prune: %v", got)
	}
	if !exists(t, filepath.Join(out, "v2/proj/app/referrers", digestOf(t, subject).String())) ||
		!exists(t, filepath.Join(out, "v2/proj/app/manifests", digestOf(t, sigS).String())) {
		t.Error("the kept subject's referrers are gone")
	}
	if exists(t, filepath.Join(out, "v2/proj/app/referrers", digestOf(t, other).String())) {
		t.Error("the removed image's referrers are still there")
	}
}

// A delta leaves out the images its base carried unchanged: pruning with
// it keeps them (they are the delta's by reference), and removes the
// tags neither it nor its base images carry.
func TestPruneWithDelta(t *testing.T) {
	f := newPruneFixture(t)
	v2d := digestOf(t, f.v2)
	delta := bundletest.WriteWith(t, f.dir, "delta.tar", f.a,
		[]bundle.BaseImage{{Target: "proj/app", Digest: v2d.String(), Tags: []string{"v2"}}},
		bundletest.Entry{Target: "proj/app", Tags: []string{"v3"}, Img: f.v3})
	sum, err := Unpack(context.Background(), []*bundle.Reader{delta}, f.out, WithPrune())
	if err != nil {
		t.Fatal(err)
	}
	if got := readTags(t, f.out, "proj/app"); !slices.Equal(got, []string{"v2", "v3"}) {
		t.Errorf("tags after pruning with a delta: %v (pruned %v)", got, sum.Pruned.Tags)
	}
	for _, p := range []string{"blobs/sha256/" + layerHex(t, f.v2, 1), "v2/proj/app/manifests/" + v2d.String()} {
		if !exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s of the base image v2 is gone", p)
		}
	}
	if !slices.Equal(sum.Pruned.Tags, []string{"proj/app:v1", "proj/gone:x"}) {
		t.Errorf("pruned %v", sum.Pruned.Tags)
	}
	// Under a prefix, the base image's name is the prefixed one.
	g := newPruneFixture(t)
	if _, err := Unpack(context.Background(), []*bundle.Reader{g.a}, g.out, WithPrefix("site")); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{delta}, g.out, WithPrefix("site"), WithPrune()); err != nil {
		t.Fatal(err)
	}
	if got := readTags(t, g.out, "site/proj/app"); !slices.Equal(got, []string{"v2", "v3"}) {
		t.Errorf("tags under the prefix: %v", got)
	}
}

// A kept manifest the tree holds damaged cannot say what it references:
// the prune stops before removing anything. (The old manifest of a moved
// tag is read by digest, from the tree.)
func TestPruneStopsOnDamagedKeptManifest(t *testing.T) {
	f := newPruneFixture(t)
	moved := writeBundle(t, f.dir, "moved.tar", nil, entry{target: "proj/app", tags: []string{"v2"}, img: testImage(t, "v2 rebuilt")})
	old := digestOf(t, f.v2)
	p := filepath.Join(f.out, "v2/proj/app/manifests", old.String())
	if err := os.Remove(p); err != nil { // the store's copy stays whole
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"layers":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Unpack(context.Background(), []*bundle.Reader{moved}, f.out, WithPrune())
	if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("prune over a damaged kept manifest: %v", err)
	}
	for _, p := range []string{"v2/proj/gone/manifests/x", "v2/proj/app/manifests/v1", "blobs/sha256/" + layerHex(t, f.goneIm, 0), "blobs/sha256/" + layerHex(t, f.v2, 1)} {
		if !exists(t, filepath.Join(f.out, p)) {
			t.Errorf("%s was removed by a prune that stopped", p)
		}
	}
}

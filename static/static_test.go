package static

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/serve"
)

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fileDigest(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

func TestUnpackTree(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "shared base", "app one")
	idx := testIndex(t, "multi")
	rd := writeBundle(t, dir, "b.tar", nil,
		entry{target: "proj/app", tags: []string{"1.0", "latest"}, img: img},
		entry{target: "proj/multi", tags: []string{"2.0"}, idx: idx},
		entry{target: "other/app", tags: []string{"1.0"}, img: img},
	)
	out := filepath.Join(dir, "tree")
	sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Repositories != 3 || sum.Tags != 4 || sum.TagsChanged != 4 || sum.BlobsPresent != 0 || sum.BlobsWritten != len(rd.Digests()) {
		t.Errorf("summary %+v; the bundle holds %d blobs", sum, len(rd.Digests()))
	}
	imgD := digestOf(t, img)
	for _, tag := range []string{"1.0", "latest", imgD.String()} {
		p := filepath.Join(out, "v2/proj/app/manifests", tag)
		if got := fileDigest(t, p); got != imgD.String() {
			t.Errorf("%s holds %s, want %s", p, got, imgD)
		}
		if !sameFile(t, p, filepath.Join(out, "blobs/sha256", imgD.Hex)) {
			t.Errorf("%s is not a hard link to the store", p)
		}
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		a := filepath.Join(out, "v2/proj/app/blobs", ld.String())
		b := filepath.Join(out, "v2/other/app/blobs", ld.String())
		if fileDigest(t, a) != ld.String() || !sameFile(t, a, b) {
			t.Errorf("layer %s: not one linked copy in both repositories", ld)
		}
	}
	// Every manifest of the index (children too) by digest, and its blobs.
	im, _ := idx.IndexManifest()
	for _, d := range im.Manifests {
		if got := fileDigest(t, filepath.Join(out, "v2/proj/multi/manifests", d.Digest.String())); got != d.Digest.String() {
			t.Errorf("child manifest %s: %s", d.Digest, got)
		}
		child, _ := idx.Image(d.Digest)
		cfg, _ := child.ConfigName()
		if _, err := os.Stat(filepath.Join(out, "v2/proj/multi/blobs", cfg.String())); err != nil {
			t.Errorf("child config: %v", err)
		}
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	data, _ := os.ReadFile(filepath.Join(out, "v2/proj/app/tags/list"))
	if err := json.Unmarshal(data, &list); err != nil || list.Name != "proj/app" || !slices.Equal(list.Tags, []string{"1.0", "latest"}) {
		t.Errorf("tags/list: %s (%v)", data, err)
	}
	data, _ = os.ReadFile(filepath.Join(out, "v2/_catalog"))
	if string(data) != `{"repositories":["other/app","proj/app","proj/multi"]}`+"\n" {
		t.Errorf("catalog: %s", data)
	}
	conf, _ := os.ReadFile(filepath.Join(out, NginxConf))
	for _, want := range []string{
		`"/v2/proj/app/manifests/latest" "` + imgD.String() + `";`,
		`"` + digestOf(t, idx).String() + `" "application/vnd.oci.image.index.v1+json";`,
		`"` + imgD.String() + `" "application/vnd.oci.image.manifest.v1+json";`,
		`root "` + out + `";`,
		"listen 5000;",
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	// No temporary file is left anywhere.
	_ = filepath.WalkDir(out, func(p string, d os.DirEntry, _ error) error {
		if strings.HasPrefix(d.Name(), tmpPrefix) || strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

func TestUnpackRerunWritesNothing(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1.0"}, img: testImage(t, "a", "b")})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	before := mtimes(t, out)
	sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BlobsWritten != 0 || sum.FilesWritten != 0 || sum.TagsChanged != 0 || sum.BlobsPresent != len(rd.Digests()) {
		t.Errorf("rerun: %+v", sum)
	}
	after := mtimes(t, out)
	for p, m := range before {
		if after[p] != m && !strings.HasPrefix(p, ".ferry") {
			t.Errorf("rerun rewrote %s", p)
		}
	}
}

// mtimes maps every file under dir to its modification time and inode.
func mtimes(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, _ error) error {
		if d.Type().IsRegular() {
			st, _ := os.Lstat(p)
			s := stampOf(st, v1.Hash{})
			rel, _ := filepath.Rel(dir, p)
			out[rel] = fmt.Sprint(st.ModTime().UnixNano(), "/", s.Inode)
		}
		return nil
	})
	return out
}

// A blob damaged in the tree, even one of the right size, is written again;
// so is one whose journal entry is lost.
func TestUnpackRepairsDamage(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "layer to damage")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1.0"}, img: img})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	store := filepath.Join(out, "blobs/sha256", ld.Hex)
	data, _ := os.ReadFile(store)
	bad := append([]byte(nil), data...)
	bad[0] ^= 0xff
	// Rewrite in place (same inode), keeping the size: only the content
	// and the modification time differ.
	if err := os.WriteFile(store, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(store, time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.BlobsWritten != 1 {
		t.Errorf("blobs written after damage: %d, want 1", sum.BlobsWritten)
	}
	repo := filepath.Join(out, "v2/proj/app/blobs", ld.String())
	if fileDigest(t, store) != ld.String() || fileDigest(t, repo) != ld.String() || !sameFile(t, store, repo) {
		t.Errorf("the damaged layer was not replaced")
	}
	// A lost journal: every file is hashed once, none written.
	if err := os.Remove(filepath.Join(out, journalFile)); err != nil {
		t.Fatal(err)
	}
	sum, err = Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if err != nil || sum.BlobsWritten != 0 || sum.BlobsPresent != len(rd.Digests()) {
		t.Errorf("without a journal: %+v, %v", sum, err)
	}
}

func TestUnpackTagMoves(t *testing.T) {
	dir := t.TempDir()
	one, two := testImage(t, "one"), testImage(t, "two")
	out := filepath.Join(dir, "tree")
	b1 := writeBundle(t, dir, "1.tar", nil, entry{target: "proj/app", tags: []string{"latest", "1"}, img: one})
	if _, err := Unpack(context.Background(), []*bundle.Reader{b1}, out); err != nil {
		t.Fatal(err)
	}
	b2 := writeBundle(t, dir, "2.tar", nil, entry{target: "proj/app", tags: []string{"latest", "2"}, img: two})
	sum, err := Unpack(context.Background(), []*bundle.Reader{b2}, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.TagsChanged != 2 || sum.TreeTags != 3 {
		t.Errorf("summary %+v, want 2 tags changed and 3 in the tree", sum)
	}
	man := filepath.Join(out, "v2/proj/app/manifests")
	if got := fileDigest(t, filepath.Join(man, "latest")); got != digestOf(t, two).String() {
		t.Errorf("latest: %s, want %s", got, digestOf(t, two))
	}
	if got := fileDigest(t, filepath.Join(man, "1")); got != digestOf(t, one).String() {
		t.Errorf("tag 1 (only in the first bundle) lost: %s", got)
	}
	data, _ := os.ReadFile(filepath.Join(out, "v2/proj/app/tags/list"))
	if !strings.Contains(string(data), `"tags":["1","2","latest"]`) {
		t.Errorf("tags/list: %s", data)
	}
	conf, _ := os.ReadFile(filepath.Join(out, NginxConf))
	if !strings.Contains(string(conf), `"/v2/proj/app/manifests/latest" "`+digestOf(t, two).String()+`"`) {
		t.Errorf("nginx.conf does not map latest to the new digest")
	}
}

func TestUnpackDelta(t *testing.T) {
	dir := t.TempDir()
	base := writeBundle(t, dir, "base.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "big base layer")})
	newer := testImage(t, "big base layer", "small change")
	delta := writeBundle(t, dir, "delta.tar", base, entry{target: "proj/app", tags: []string{"2"}, img: newer},
		entry{target: "proj/copy", tags: []string{"2"}, img: newer})
	if len(delta.Record().BaseBlobs) == 0 {
		t.Fatal("the test delta leaves nothing to its base")
	}
	// Alone, into an empty directory: refused, naming the base, nothing placed.
	empty := filepath.Join(dir, "empty")
	_, err := Unpack(context.Background(), []*bundle.Reader{delta}, empty)
	if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), "unpack the base bundle") {
		t.Fatalf("delta without base: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "v2/proj/app/manifests/2")); err == nil {
		t.Error("a tag was written although the delta's base is missing")
	}
	// On top of its base: the new repository gets the base's layer too.
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{base}, out); err != nil {
		t.Fatal(err)
	}
	sum, err := Unpack(context.Background(), []*bundle.Reader{delta}, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.TreeTags != 3 {
		t.Errorf("tree tags %d, want 3", sum.TreeTags)
	}
	layers, _ := newer.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		if got := fileDigest(t, filepath.Join(out, "v2/proj/copy/blobs", ld.String())); got != ld.String() {
			t.Errorf("proj/copy layer %s: %s", ld, got)
		}
	}
	// Both at once, base first, into a fresh directory.
	both := filepath.Join(dir, "both")
	if _, err := Unpack(context.Background(), []*bundle.Reader{base, delta}, both); err != nil {
		t.Fatal(err)
	}
}

// A symbolic link inside the tree is refused, not followed.
func TestUnpackRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "x")})
	out, outside := filepath.Join(dir, "tree"), filepath.Join(dir, "outside")
	// A ferry tree (it has .ferry/; checkDir refuses any other non-empty
	// folder before looking inside) with a link planted under v2/.
	if err := os.MkdirAll(filepath.Join(out, ".ferry"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(out, "v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(out, "v2/proj")); err != nil {
		t.Fatal(err)
	}
	_, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("err = %v", err)
	}
	if es, _ := os.ReadDir(outside); len(es) != 0 {
		t.Errorf("wrote through the link: %v", es)
	}
}

func TestCheckPaths(t *testing.T) {
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	for _, tc := range []struct {
		contents []serve.Content
		want     string
	}{
		{[]serve.Content{{Name: "../etc", Tags: map[string]v1.Hash{"x": h}}}, "not valid"},
		{[]serve.Content{{Name: "a/../../b", Tags: map[string]v1.Hash{"x": h}}}, "not valid"},
		{[]serve.Content{{Name: "/abs", Tags: map[string]v1.Hash{"x": h}}}, "not valid"},
		{[]serve.Content{{Name: "a", Tags: map[string]v1.Hash{"../../x": h}}}, "not valid"},
		{[]serve.Content{{Name: "a", Tags: map[string]v1.Hash{".hidden": h}}}, "not valid"},
		{[]serve.Content{{Name: "a", Tags: map[string]v1.Hash{"manifests": h}}, {Name: "a/manifests", Tags: map[string]v1.Hash{"1": h}}}, "collide"},
		{[]serve.Content{{Name: "a", Tags: map[string]v1.Hash{"1": h}}, {Name: "a/tags/list", Tags: map[string]v1.Hash{"1": h}}}, "collide"},
	} {
		err := checkPaths(tc.contents)
		if !errors.Is(err, ErrTree) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.contents[len(tc.contents)-1].Name, err, tc.want)
		}
	}
	if err := checkPaths([]serve.Content{{Name: "a", Tags: map[string]v1.Hash{"1": h}}, {Name: "a/b", Tags: map[string]v1.Hash{"1": h}}}); err != nil {
		t.Errorf("nested names that do not collide: %v", err)
	}
}

func TestNginxOptions(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "x")})
	for _, n := range []Nginx{
		{Listen: "5000; include /etc/passwd", ServerName: "_"},
		{Listen: "", ServerName: "_"},
		{Listen: "443", ServerName: "_", TLSCert: "a.crt"},
		{Listen: "443", ServerName: "x { }"},
	} {
		out := filepath.Join(dir, "t")
		if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out, WithNginx(n)); !errors.Is(err, ErrOptions) {
			t.Errorf("%+v: err = %v, want ErrOptions", n, err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%+v: the tree was created before the options were checked", n)
		}
	}
	out := filepath.Join(dir, "tls")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out, WithNginx(Nginx{Listen: "127.0.0.1:8443", ServerName: "reg.example", TLSCert: "/etc/tls/reg.crt", TLSKey: "/etc/tls/reg.key"})); err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(out, NginxConf))
	for _, want := range []string{"listen 127.0.0.1:8443 ssl;", "server_name reg.example;", `ssl_certificate "/etc/tls/reg.crt";`, `ssl_certificate_key "/etc/tls/reg.key";`} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
}

// A referrers tag-schema index (tag sha256-<subject hex>) is also written
// as the referrers API answer for its subject.
func TestUnpackReferrers(t *testing.T) {
	dir := t.TempDir()
	subject := testImage(t, "subject")
	refIdx := testIndex(t, "sig")
	rd := writeBundle(t, dir, "b.tar", nil,
		entry{target: "proj/app", tags: []string{"1"}, img: subject},
		entry{target: "proj/app", tags: []string{oci.DigestTag(digestOf(t, subject))}, idx: refIdx})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(out, "v2/proj/app/referrers", digestOf(t, subject).String())
	if got := fileDigest(t, p); got != digestOf(t, refIdx).String() {
		t.Errorf("referrers of the subject: %s, want the tag schema index %s", got, digestOf(t, refIdx))
	}
	if mt, _ := refIdx.MediaType(); mt != types.OCIImageIndex {
		t.Fatalf("test index media type %s", mt)
	}
}

func withoutLinks() Option { return func(o *options) { o.noLinks = true } }

// Where hard links fail, files are copied, each checked; a rerun trusts a
// copy only while its stamp is unchanged, and rewrites a damaged one.
func TestUnpackCopies(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "copied layer")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: img})
	out := filepath.Join(dir, "tree")
	sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out, withoutLinks())
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Copied {
		t.Error("summary does not say files were copied")
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	repo := filepath.Join(out, "v2/proj/app/blobs", ld.String())
	store := filepath.Join(out, "blobs/sha256", ld.Hex)
	if sameFile(t, repo, store) || fileDigest(t, repo) != ld.String() {
		t.Fatal("not a separate, correct copy")
	}
	sum, err = Unpack(context.Background(), []*bundle.Reader{rd}, out, withoutLinks())
	if err != nil || sum.FilesWritten != 0 || sum.BlobsWritten != 0 {
		t.Fatalf("rerun: %+v %v", sum, err)
	}
	data, _ := os.ReadFile(repo)
	data[len(data)-1] ^= 1
	if err := os.WriteFile(repo, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(repo, time.Now().Add(time.Minute), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	sum, err = Unpack(context.Background(), []*bundle.Reader{rd}, out, withoutLinks())
	if err != nil || sum.FilesWritten != 1 || fileDigest(t, repo) != ld.String() {
		t.Errorf("after damage: %+v %v, file %s", sum, err, fileDigest(t, repo))
	}
}

// A cancelled unpack stops, and leaves no partial or temporary file.
func TestUnpackCancelled(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, strings.Repeat("x", 1<<20))})
	out := filepath.Join(dir, "tree")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Unpack(ctx, []*bundle.Reader{rd}, out); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	_ = filepath.WalkDir(out, func(p string, d os.DirEntry, _ error) error {
		if d.Type().IsRegular() && !strings.HasPrefix(filepath.Base(filepath.Dir(p)), ".ferry") {
			t.Errorf("a cancelled unpack left %s", p)
		}
		return nil
	})
}

// A blob whose bytes in the bundle do not match its digest is never
// renamed into the tree; the error names it.
func TestUnpackCorruptBlob(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "intact base", "THIS LAYER GETS DAMAGED")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: img})
	path := rd.Path()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), "THIS LAYER GETS DAMAGED")
	data[i] = 't'
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	bad, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	out := filepath.Join(dir, "tree")
	_, err = Unpack(context.Background(), []*bundle.Reader{bad}, out)
	layers, _ := img.Layers()
	ld, _ := layers[1].Digest()
	if !errors.Is(err, bundle.ErrDigestMismatch) || !strings.Contains(err.Error(), ld.String()) {
		t.Fatalf("err = %v, want a digest mismatch naming %s", err, ld)
	}
	if _, err := os.Stat(filepath.Join(out, "blobs/sha256", ld.Hex)); err == nil {
		t.Error("the damaged blob is in the store")
	}
	if _, err := os.Stat(filepath.Join(out, "v2/proj/app/manifests/1")); err == nil {
		t.Error("the tag was written although its image is incomplete")
	}
	es, _ := os.ReadDir(filepath.Join(out, "blobs/sha256"))
	for _, e := range es {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// Temporary files a crash left behind are removed by the next run.
func TestUnpackRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: testImage(t, "x")})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	left := []string{"blobs/sha256/" + tmpPrefix + "0123", "v2/proj/app/manifests/" + tmpPrefix + "ab", "v2/proj/app/blobs/" + tmpPrefix + "cd",
		"v2/proj/app/tags/.list.tmp-99", ".nginx.conf.tmp-1", ".ferry/.journal.json.tmp-2"}
	for _, l := range left {
		if err := os.WriteFile(filepath.Join(out, l), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	for _, l := range left {
		if _, err := os.Stat(filepath.Join(out, l)); err == nil {
			t.Errorf("%s is still there", l)
		}
	}
}

// A symbolic link planted in the store, even to the right bytes, is
// replaced by a real file, never read through.
func TestUnpackReplacesStoreLink(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "linked")
	rd := writeBundle(t, dir, "b.tar", nil, entry{target: "proj/app", tags: []string{"1"}, img: img})
	out := filepath.Join(dir, "tree")
	if _, err := Unpack(context.Background(), []*bundle.Reader{rd}, out); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	store := filepath.Join(out, "blobs/sha256", ld.Hex)
	elsewhere := filepath.Join(dir, "elsewhere")
	data, _ := os.ReadFile(store)
	if err := os.WriteFile(elsewhere, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, store); err != nil {
		t.Fatal(err)
	}
	sum, err := Unpack(context.Background(), []*bundle.Reader{rd}, out)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(store)
	if err != nil || !st.Mode().IsRegular() || sum.BlobsWritten != 1 {
		t.Errorf("store entry after rerun: %v %v, %d blobs written", st.Mode(), err, sum.BlobsWritten)
	}
	if !sameFile(t, store, filepath.Join(out, "v2/proj/app/blobs", ld.String())) {
		t.Error("the repository's file does not link to the new store entry")
	}
}

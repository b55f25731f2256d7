package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/diff"
	"github.com/ferry-airgap/ferry/internal/bundletest"
)

func image(t *testing.T, layers ...string) v1.Image { return bundletest.Image(t, false, layers...) }

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func layerOf(t *testing.T, img v1.Image, i int) diff.Blob {
	t.Helper()
	ls, _ := img.Layers()
	d, _ := ls[i].Digest()
	s, _ := ls[i].Size()
	return diff.Blob{Digest: d.String(), Size: s}
}

type tagged struct {
	target string
	img    v1.Image
	tags   []string
}

// planOf builds a bundle plan; images whose digest is in base are recorded
// as base images and their blobs as base blobs (a delta), the rest stored.
func planOf(t *testing.T, images []tagged, base map[string]bool, baseID string) *bundle.Plan {
	t.Helper()
	p := &bundle.Plan{Base: baseID}
	stored, left := map[v1.Hash]bool{}, map[v1.Hash]bool{}
	for _, ti := range images {
		raw, _ := ti.img.RawManifest()
		d, _ := ti.img.Digest()
		cfg, _ := ti.img.RawConfigFile()
		cd, _ := ti.img.ConfigName()
		ls, _ := ti.img.Layers()
		if base[d.String()] {
			p.BaseImages = append(p.BaseImages, bundle.BaseImage{Target: ti.target, Digest: d.String(), Tags: ti.tags})
			continue
		}
		pi := bundle.PlannedImage{Image: bundle.Image{Source: "src.example/" + ti.target + ":" + ti.tags[0], Target: ti.target,
			Tags: ti.tags, Digest: d.String(), MediaType: string(types.OCIManifestSchema1)}, Blobs: []v1.Hash{d, cd}}
		if !stored[d] {
			stored[d] = true
			p.Blobs = append(p.Blobs, bundle.PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: types.OCIManifestSchema1, Kind: bundle.KindManifest, Data: raw})
		}
		if !stored[cd] {
			stored[cd] = true
			p.Blobs = append(p.Blobs, bundle.PlannedBlob{Digest: cd, Size: int64(len(cfg)), Kind: bundle.KindConfig, Data: cfg})
		}
		for _, l := range ls {
			ld, _ := l.Digest()
			sz, _ := l.Size()
			pi.Blobs = append(pi.Blobs, ld)
			if stored[ld] || left[ld] {
				continue
			}
			if baseID != "" && base["layer:"+ld.String()] {
				left[ld] = true
				p.BaseBlobs = append(p.BaseBlobs, bundle.Blob{Digest: ld.String(), Size: sz})
				continue
			}
			stored[ld] = true
			rc, _ := l.Compressed()
			data := make([]byte, sz)
			if _, err := io.ReadFull(rc, data); err != nil {
				t.Fatal(err)
			}
			p.Blobs = append(p.Blobs, bundle.PlannedBlob{Digest: ld, Size: sz, Kind: bundle.KindLayer, Data: data})
		}
		p.Images = append(p.Images, pi)
	}
	return p
}

func write(t *testing.T, name string, plan *bundle.Plan, opts ...bundle.WriteOption) *bundle.Reader {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	clock := func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC) }
	if _, err := bundle.Write(context.Background(), path, plan, append([]bundle.WriteOption{bundle.WithClock(clock)}, opts...)...); err != nil {
		t.Fatal(err)
	}
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// fixture: old holds a:v1,latest → A1; b:v1 → B1; c:v1 → C1. new moves
// a:latest to A2 (A1's base layer plus a new one), adds a:v2 → A2 and
// d:v1 → D1, drops b, keeps c.
type fixture struct {
	a1, a2, b1, c1, d1 v1.Image
	old, new           []tagged
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{
		a1: image(t, "base", "a one"), a2: image(t, "base", "a two", "a extra"),
		b1: image(t, "b"), c1: image(t, "base", "c"), d1: image(t, "d"),
	}
	f.old = []tagged{{"proj/a", f.a1, []string{"latest", "v1"}}, {"proj/b", f.b1, []string{"v1"}}, {"proj/c", f.c1, []string{"v1"}}}
	f.new = []tagged{{"proj/a", f.a1, []string{"v1"}}, {"proj/a", f.a2, []string{"latest", "v2"}}, {"proj/c", f.c1, []string{"v1"}}, {"proj/d", f.d1, []string{"v1"}}}
	return f
}

func (f *fixture) check(t *testing.T, res *diff.Result) {
	t.Helper()
	tags := func(ts []diff.Tag) []string {
		var out []string
		for _, x := range ts {
			out = append(out, x.Target+":"+x.Tag+"@"+x.Digest)
		}
		return out
	}
	if got, want := tags(res.TagsAdded), []string{"proj/a:v2@" + digestOf(t, f.a2), "proj/d:v1@" + digestOf(t, f.d1)}; !slices.Equal(got, want) {
		t.Errorf("added = %v, want %v", got, want)
	}
	if got, want := tags(res.TagsRemoved), []string{"proj/b:v1@" + digestOf(t, f.b1)}; !slices.Equal(got, want) {
		t.Errorf("removed = %v, want %v", got, want)
	}
	if len(res.TagsMoved) != 1 {
		t.Fatalf("moved = %+v, want proj/a:latest only", res.TagsMoved)
	}
	m := res.TagsMoved[0]
	if m.Target != "proj/a" || m.Tag != "latest" || m.OldDigest != digestOf(t, f.a1) || m.NewDigest != digestOf(t, f.a2) {
		t.Errorf("moved = %+v", m)
	}
	wantAdded := []diff.Blob{layerOf(t, f.a2, 1), layerOf(t, f.a2, 2)}
	slices.SortFunc(wantAdded, func(x, y diff.Blob) int { return cmpStr(x.Digest, y.Digest) })
	if !m.LayersKnown || !slices.Equal(m.LayersAdded, wantAdded) || !slices.Equal(m.LayersRemoved, []diff.Blob{layerOf(t, f.a1, 1)}) {
		t.Errorf("layers: known %v, added %v (want %v), removed %v (want %v)", m.LayersKnown, m.LayersAdded, wantAdded, m.LayersRemoved, layerOf(t, f.a1, 1))
	}
	if len(res.ImagesAdded) != 2 || res.ImagesAdded[0].Digest != digestOf(t, f.a2) || res.ImagesAdded[1].Target != "proj/d" ||
		len(res.ImagesRemoved) != 1 || res.ImagesRemoved[0].Target != "proj/b" {
		t.Errorf("images added %+v, removed %+v", res.ImagesAdded, res.ImagesRemoved)
	}
	if !res.Differs() {
		t.Error("Differs() = false")
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// newBytes is what a2 and d1 bring that old lacks: their manifests and
// configs, a2's two new layers and d1's layer.
func (f *fixture) newBytes(t *testing.T) (int, int64) {
	var n int
	var total int64
	for _, img := range []v1.Image{f.a2, f.d1} {
		m, _ := img.RawManifest()
		c, _ := img.RawConfigFile()
		n += 2
		total += int64(len(m) + len(c))
	}
	for _, b := range []diff.Blob{layerOf(t, f.a2, 1), layerOf(t, f.a2, 2), layerOf(t, f.d1, 0)} {
		n++
		total += b.Size
	}
	return n, total
}

func TestDiffFullBundles(t *testing.T) {
	f := newFixture(t)
	old := write(t, "old.tar", planOf(t, f.old, nil, ""))
	nw := write(t, "new.tar", planOf(t, f.new, nil, ""), bundle.WithSplit(4096))
	if len(nw.Volumes()) < 2 {
		t.Fatalf("new bundle has %d volumes; the test wants several", len(nw.Volumes()))
	}
	res, err := diff.Bundles(context.Background(), old, nw)
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, res)
	n, bytes := f.newBytes(t)
	if res.NewBlobs != n || res.NewBytes != bytes {
		t.Errorf("new blobs %d (%d bytes), want %d (%d bytes)", res.NewBlobs, res.NewBytes, n, bytes)
	}
	if res.Old.ID != old.Record().ID || res.New.Images != 4 || res.New.Tags != 5 || res.Old.Tags != 4 {
		t.Errorf("sides: %+v %+v", res.Old, res.New)
	}

	// The reverse diff mirrors it.
	rev, err := diff.Bundles(context.Background(), nw, old)
	if err != nil {
		t.Fatal(err)
	}
	if len(rev.TagsAdded) != 1 || len(rev.TagsRemoved) != 2 || len(rev.TagsMoved) != 1 || rev.TagsMoved[0].OldDigest != digestOf(t, f.a2) {
		t.Errorf("reverse: %+v", rev)
	}
}

func TestDiffBaseAndDelta(t *testing.T) {
	f := newFixture(t)
	old := write(t, "old.tar", planOf(t, f.old, nil, ""))
	// The delta stores a2 and d1, and records a1 and c1 (and a2's base
	// layer) as carried by the base.
	base := map[string]bool{digestOf(t, f.a1): true, digestOf(t, f.c1): true, "layer:" + layerOf(t, f.a1, 0).Digest: true}
	delta := write(t, "delta.tar", planOf(t, f.new, base, old.Record().ID))
	if delta.Record().Base == "" || len(delta.Record().BaseImages) != 2 || len(delta.Record().BaseBlobs) != 1 {
		t.Fatalf("the fixture is not a delta: %+v", delta.Record())
	}
	res, err := diff.Bundles(context.Background(), old, delta)
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, res)
	n, bytes := f.newBytes(t)
	if res.NewBlobs != n || res.NewBytes != bytes {
		t.Errorf("new blobs %d (%d bytes), want %d (%d bytes)", res.NewBlobs, res.NewBytes, n, bytes)
	}
	if res.New.Base != old.Record().ID {
		t.Errorf("new side base = %q", res.New.Base)
	}
	// A tag moved from a base image of a delta: the old manifest is not in
	// the delta, so its layers are unknown, not wrongly empty.
	moved := []tagged{{"proj/a", f.a1, []string{"v1"}}, {"proj/a", f.a2, []string{"latest", "v2"}}, {"proj/c", f.d1, []string{"v1"}}, {"proj/d", f.d1, []string{"v1"}}}
	later := write(t, "later.tar", planOf(t, moved, nil, ""))
	res, err = diff.Bundles(context.Background(), delta, later)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TagsMoved) != 1 || res.TagsMoved[0].Target != "proj/c" || res.TagsMoved[0].LayersKnown || len(res.TagsMoved[0].LayersAdded) != 0 {
		t.Errorf("moved from a base image: %+v", res.TagsMoved)
	}
}

func TestDiffSameContent(t *testing.T) {
	f := newFixture(t)
	a := write(t, "a.tar", planOf(t, f.old, nil, ""))
	// Another creation time: other bytes, same content.
	b := write(t, "b.tar", planOf(t, f.old, nil, ""), bundle.WithClock(time.Now))
	res, err := diff.Bundles(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Differs() || res.NewBlobs != 0 || res.NewBytes != 0 {
		t.Errorf("same content differs: %+v", res)
	}
	// JSON lists are [] rather than null, for tools.
	out, _ := json.Marshal(res)
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tagsAdded", "tagsRemoved", "tagsMoved", "imagesAdded", "imagesRemoved"} {
		if v, ok := m[k].([]any); !ok || len(v) != 0 {
			t.Errorf("%s = %v, want []", k, m[k])
		}
	}
}

func TestDiffCorruptManifest(t *testing.T) {
	f := newFixture(t)
	old := write(t, "old.tar", planOf(t, f.old, nil, ""))
	nw := write(t, "new.tar", planOf(t, f.new, nil, ""))
	// Flip a byte inside a2's manifest in the new bundle: diff reads it to
	// compare layers, and must say the bundle is corrupt.
	h, _ := bundle.ParseDigest(digestOf(t, f.a2))
	sr, err := nw.Section(h)
	if err != nil {
		t.Fatal(err)
	}
	_, off, _ := sr.Outer()
	path := nw.Path()
	data, _ := os.ReadFile(path)
	data[off+10] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	nw2, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer nw2.Close()
	if _, err := diff.Bundles(context.Background(), old, nw2); err == nil || !errorsIs(err, bundle.ErrCorrupt) {
		t.Errorf("err = %v, want ErrCorrupt", err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

package static

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	gstatic "github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
)

// testImage builds a deterministic OCI image from layer contents.
func testImage(t *testing.T, layers ...string) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		var err error
		if img, err = mutate.AppendLayers(img, gstatic.NewLayer([]byte(l), types.OCILayer)); err != nil {
			t.Fatal(err)
		}
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// testIndex builds an OCI index of two platform images.
func testIndex(t *testing.T, layer string) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: testImage(t, layer+" "+arch),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

// entry is one image of a test bundle: an image or an index.
type entry struct {
	target string
	tags   []string
	img    v1.Image
	idx    v1.ImageIndex
}

// planner collects a Plan, storing each blob once; blobs in base are
// recorded as left to a base bundle (a delta) unless they are manifests.
type planner struct {
	t    *testing.T
	plan bundle.Plan
	have map[v1.Hash]bool
	base map[v1.Hash]bool
}

func (p *planner) blob(b bundle.PlannedBlob) {
	if p.have[b.Digest] {
		return
	}
	p.have[b.Digest] = true
	if p.base[b.Digest] && b.Kind != bundle.KindManifest {
		p.plan.BaseBlobs = append(p.plan.BaseBlobs, bundle.Blob{Digest: b.Digest.String(), Size: b.Size})
		return
	}
	p.plan.Blobs = append(p.plan.Blobs, b)
}

func (p *planner) image(img v1.Image) []v1.Hash {
	raw, err := img.RawManifest()
	if err != nil {
		p.t.Fatal(err)
	}
	d, _ := img.Digest()
	mt, _ := img.MediaType()
	p.blob(bundle.PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: mt, Kind: bundle.KindManifest, Data: raw, Origin: "test"})
	cfg, _ := img.RawConfigFile()
	cd, _ := img.ConfigName()
	p.blob(bundle.PlannedBlob{Digest: cd, Size: int64(len(cfg)), Kind: bundle.KindConfig, Data: cfg, Origin: "test"})
	out := []v1.Hash{d, cd}
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		sz, _ := l.Size()
		out = append(out, ld)
		p.blob(bundle.PlannedBlob{Digest: ld, Size: sz, Kind: bundle.KindLayer, Origin: "test",
			Open: func(context.Context) (io.ReadCloser, error) { return l.Compressed() }})
	}
	return out
}

func (p *planner) add(e entry) {
	var blobs []v1.Hash
	var d v1.Hash
	var mt types.MediaType
	if e.idx != nil {
		raw, _ := e.idx.RawManifest()
		d, _ = e.idx.Digest()
		mt, _ = e.idx.MediaType()
		p.blob(bundle.PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: mt, Kind: bundle.KindManifest, Data: raw, Origin: "test"})
		blobs = append(blobs, d)
		im, err := e.idx.IndexManifest()
		if err != nil {
			p.t.Fatal(err)
		}
		for _, desc := range im.Manifests {
			child, err := e.idx.Image(desc.Digest)
			if err != nil {
				p.t.Fatal(err)
			}
			blobs = append(blobs, p.image(child)...)
		}
	} else {
		d, _ = e.img.Digest()
		mt, _ = e.img.MediaType()
		blobs = p.image(e.img)
	}
	p.plan.Images = append(p.plan.Images, bundle.PlannedImage{
		Image: bundle.Image{Source: "registry.example/" + e.target + ":" + e.tags[0], Target: e.target, Tags: e.tags, Digest: d.String(), MediaType: string(mt)},
		Blobs: blobs,
	})
}

// writeBundle writes entries as a bundle in dir and opens it. With base,
// the bundle is a delta of base: configs and layers base holds are left out.
func writeBundle(t *testing.T, dir, name string, base *bundle.Reader, entries ...entry) *bundle.Reader {
	t.Helper()
	p := &planner{t: t, have: map[v1.Hash]bool{}, base: map[v1.Hash]bool{}}
	if base != nil {
		for _, h := range base.Digests() {
			p.base[h] = true
		}
		p.plan.Base = base.Record().ID
	}
	for _, e := range entries {
		p.add(e)
	}
	path := filepath.Join(dir, name)
	clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	if _, err := bundle.Write(context.Background(), path, &p.plan, bundle.WithClock(clock), bundle.WithID(name)); err != nil {
		t.Fatal(err)
	}
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Package bundletest writes small deterministic bundles for the tests of
// the packages that read them (serve, static): images built from layer
// text, two-platform indexes, and a bundle of such images, optionally a
// delta on top of a base bundle. Only tests import it.
package bundletest

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
)

// Clock is the creation time of every bundle Write makes.
func Clock() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

// Image builds a deterministic image with one layer per text: OCI media
// types, or Docker schema 2 ones with docker.
func Image(t testing.TB, docker bool, layers ...string) v1.Image {
	t.Helper()
	img := empty.Image
	lmt, mt, cmt := types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		lmt, mt, cmt = types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	for _, l := range layers {
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer([]byte(l), lmt)); err != nil {
			t.Fatal(err)
		}
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, mt), cmt)
}

// Index builds an OCI index of two platform images (linux/amd64 and
// linux/arm64), each with one layer: layer and its architecture.
func Index(t testing.TB, layer string) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: Image(t, false, layer+" "+arch),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

// Entry is one image of a test bundle: Img or Idx.
type Entry struct {
	Source string // "" = registry.example/TARGET:FIRST-TAG
	Target string
	Tags   []string
	Img    v1.Image
	Idx    v1.ImageIndex
}

// Write writes entries as the bundle dir/name (its ID is name) and opens
// it; the reader is closed at cleanup. With base, the bundle is a delta of
// base: the configs and layers base holds are left out.
func Write(t testing.TB, dir, name string, base *bundle.Reader, entries ...Entry) *bundle.Reader {
	t.Helper()
	return WriteWith(t, dir, name, base, nil, entries...)
}

// WriteWith is Write recording baseImages: the images the base chain
// carried that this delta leaves out (as export --since records them).
func WriteWith(t testing.TB, dir, name string, base *bundle.Reader, baseImages []bundle.BaseImage, entries ...Entry) *bundle.Reader {
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
	p.plan.BaseImages = baseImages
	path := filepath.Join(dir, name)
	if _, err := bundle.Write(context.Background(), path, &p.plan, bundle.WithClock(Clock), bundle.WithID(name)); err != nil {
		t.Fatal(err)
	}
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// planner collects a Plan, storing each blob once; blobs in base are
// recorded as left to a base bundle (a delta) unless they are manifests.
type planner struct {
	t    testing.TB
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

// image plans img's manifest, config and layers and returns their digests.
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

// add plans one entry: an image, or an index and its platform images.
func (p *planner) add(e Entry) {
	var blobs []v1.Hash
	var d v1.Hash
	var mt types.MediaType
	if e.Idx != nil {
		raw, _ := e.Idx.RawManifest()
		d, _ = e.Idx.Digest()
		mt, _ = e.Idx.MediaType()
		p.blob(bundle.PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: mt, Kind: bundle.KindManifest, Data: raw, Origin: "test"})
		blobs = append(blobs, d)
		im, err := e.Idx.IndexManifest()
		if err != nil {
			p.t.Fatal(err)
		}
		for _, desc := range im.Manifests {
			child, err := e.Idx.Image(desc.Digest)
			if err != nil {
				p.t.Fatal(err)
			}
			blobs = append(blobs, p.image(child)...)
		}
	} else {
		d, _ = e.Img.Digest()
		mt, _ = e.Img.MediaType()
		blobs = p.image(e.Img)
	}
	source := e.Source
	if source == "" {
		source = "registry.example/" + e.Target + ":" + e.Tags[0]
	}
	p.plan.Images = append(p.plan.Images, bundle.PlannedImage{
		Image: bundle.Image{Source: source, Target: e.Target, Tags: e.Tags, Digest: d.String(), MediaType: string(mt)},
		Blobs: blobs,
	})
}

package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
)

// testImage builds a deterministic image from layer contents.
func testImage(t *testing.T, docker bool, layers ...string) v1.Image {
	t.Helper()
	img := empty.Image
	lmt, mt, cmt := types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		lmt, mt, cmt = types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	for _, l := range layers {
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer([]byte(l), lmt))
		if err != nil {
			t.Fatal(err)
		}
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, mt), cmt)
}

// testIndex builds an OCI index of two platform images.
func testIndex(t *testing.T, layer string) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img := testImage(t, false, layer+" "+arch)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

// testEntry is one image of a test bundle.
type testEntry struct {
	source, target string
	tags           []string
	img            v1.Image      // or
	idx            v1.ImageIndex //
}

// planner collects a Plan, storing each blob once.
type planner struct {
	t    *testing.T
	plan bundle.Plan
	have map[v1.Hash]bool
}

func (p *planner) blob(b bundle.PlannedBlob) {
	if !p.have[b.Digest] {
		p.have[b.Digest] = true
		p.plan.Blobs = append(p.plan.Blobs, b)
	}
}

func (p *planner) image(img v1.Image) []v1.Hash {
	t := p.t
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
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
		p.blob(bundle.PlannedBlob{Digest: ld, Size: sz, Kind: bundle.KindLayer, Origin: "test", Open: func(context.Context) (io.ReadCloser, error) {
			return l.Compressed()
		}})
	}
	return out
}

func (p *planner) add(e testEntry) {
	t := p.t
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
			t.Fatal(err)
		}
		for _, desc := range im.Manifests {
			child, err := e.idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			blobs = append(blobs, p.image(child)...)
		}
	} else {
		d, _ = e.img.Digest()
		mt, _ = e.img.MediaType()
		blobs = p.image(e.img)
	}
	p.plan.Images = append(p.plan.Images, bundle.PlannedImage{
		Image: bundle.Image{Source: e.source, Target: e.target, Tags: e.tags, Digest: d.String(), MediaType: string(mt)},
		Blobs: blobs,
	})
}

func fixedClock() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

// writeBundle writes entries as a bundle in dir and opens it.
func writeBundle(t *testing.T, dir, name string, entries ...testEntry) *bundle.Reader {
	t.Helper()
	p := &planner{t: t, have: map[v1.Hash]bool{}}
	for _, e := range entries {
		p.add(e)
	}
	path := filepath.Join(dir, name)
	if _, err := bundle.Write(context.Background(), path, &p.plan, bundle.WithClock(fixedClock), bundle.WithID(name)); err != nil {
		t.Fatal(err)
	}
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// syncBuffer is a buffer handlers may log to while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits up to 5s for s to be logged (an access-log line is written
// as the handler returns, which may be after the client has its response).
func (b *syncBuffer) waitFor(s string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(b.String(), s) {
			return true
		}
	}
	return false
}

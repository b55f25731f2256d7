package static

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/bundletest"
)

// testImage builds a deterministic OCI image from layer contents.
func testImage(t *testing.T, layers ...string) v1.Image {
	return bundletest.Image(t, false, layers...)
}

// testIndex builds an OCI index of two platform images.
func testIndex(t *testing.T, layer string) v1.ImageIndex { return bundletest.Index(t, layer) }

// entry is one image of a test bundle: an image or an index.
type entry struct {
	target string
	tags   []string
	img    v1.Image
	idx    v1.ImageIndex
}

// writeBundle writes entries as a bundle in dir and opens it. With base,
// the bundle is a delta of base: configs and layers base holds are left out.
func writeBundle(t *testing.T, dir, name string, base *bundle.Reader, entries ...entry) *bundle.Reader {
	t.Helper()
	es := make([]bundletest.Entry, len(entries))
	for i, e := range entries {
		es[i] = bundletest.Entry{Target: e.target, Tags: e.tags, Img: e.img, Idx: e.idx}
	}
	return bundletest.Write(t, dir, name, base, es...)
}

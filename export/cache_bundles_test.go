package export

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// tinyBundle writes a bundle with one image and one layer at path.
func tinyBundle(t *testing.T, path string, layer []byte) *bundle.Result {
	t.Helper()
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	mh, lh := digestOf(man), digestOf(layer)
	plan := &bundle.Plan{
		Images: []bundle.PlannedImage{{Image: bundle.Image{Source: "example.com/a:1", Target: "a", Tags: []string{"1"},
			Digest: mh.String(), MediaType: "application/vnd.oci.image.manifest.v1+json"}, Blobs: []v1.Hash{mh, lh}}},
		Blobs: []bundle.PlannedBlob{
			{Digest: mh, Size: int64(len(man)), MediaType: "application/vnd.oci.image.manifest.v1+json", Kind: bundle.KindManifest, Data: man},
			{Digest: lh, Size: int64(len(layer)), MediaType: "application/vnd.oci.image.layer.v1.tar", Kind: bundle.KindLayer, Data: layer},
		},
	}
	res, err := bundle.Write(context.Background(), path, plan)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCacheRecordsBundles: a recorded bundle is a trusted source of its
// layers and vouches for itself as an output, until the file is written
// to; then it is neither, and its record is dropped.
func TestCacheRecordsBundles(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a file's identity (its change time) is read on Linux only; elsewhere no file is trusted, every one is hashed")
	}
	dir := t.TempDir()
	layer := bytes.Repeat([]byte("layer "), 5000)
	h := digestOf(layer)
	out := filepath.Join(dir, "b.tar")
	res := tinyBundle(t, out, layer)
	c, _ := OpenCache(filepath.Join(dir, "cache"))
	c.recordBundle(res, nil)

	c, _ = OpenCache(filepath.Join(dir, "cache"))
	srcs := c.sources(h, int64(len(layer)))
	if len(srcs) != 1 || !srcs[0].trusted {
		t.Fatalf("sources = %+v, want the recorded bundle, trusted", srcs)
	}
	var got memSink
	if !copyFromCache(context.Background(), &got, srcs[0], v1.Descriptor{Digest: h, Size: int64(len(layer))}, slog.New(slog.DiscardHandler)) || !bytes.Equal(got.Bytes(), layer) {
		t.Fatal("the layer was not copied from the recorded bundle")
	}
	info, _ := os.Stat(out)
	if !c.trust(out)(info, res.SHA256) || c.trust(out)(info, strings.Repeat("0", 64)) {
		t.Fatal("trust: the record must vouch for its own file and checksum only")
	}

	// One byte written over the layer: the file is no longer vouched for,
	// the source (known before) is not used, and the record goes. (File
	// times tick with the kernel's clock, a few ms: wait out one tick.)
	time.Sleep(20 * time.Millisecond)
	f, _ := os.OpenFile(out, os.O_RDWR, 0)
	if _, err := f.WriteAt([]byte("X"), res.BlobOffsets[h]+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	info, _ = os.Stat(out)
	if c.trust(out)(info, res.SHA256) {
		t.Error("a file written to after its record is still vouched for")
	}
	got.Reset()
	if copyFromCache(context.Background(), &got, srcs[0], v1.Descriptor{Digest: h, Size: int64(len(layer))}, slog.New(slog.DiscardHandler)) {
		t.Error("a trusted source was used after its file changed")
	}
	c, _ = OpenCache(filepath.Join(dir, "cache"))
	if srcs := c.sources(h, int64(len(layer))); len(srcs) != 0 {
		t.Errorf("a changed bundle is still a source: %+v", srcs)
	}
	if recs, _ := os.ReadDir(filepath.Join(dir, "cache", "bundles")); len(recs) != 0 {
		t.Errorf("the record of a changed bundle was kept: %v", recs)
	}
}

// TestCachePartialBundles: an unfinished bundle a run left is a source
// whose bytes are hashed before use: a layer that never arrived (zeros) is
// not taken, one that did is; cleanPartials removes the file and its note.
func TestCachePartialBundles(t *testing.T) {
	dir := t.TempDir()
	layer := bytes.Repeat([]byte("partial "), 4000)
	h := digestOf(layer)
	out := filepath.Join(dir, "b.tar")
	tmp := filepath.Join(dir, ".b.tar.tmp-1")
	res := tinyBundle(t, tmp, layer)
	c, _ := OpenCache(filepath.Join(dir, "cache"))
	c.notePartial(out, []string{tmp})

	c, _ = OpenCache(filepath.Join(dir, "cache"))
	srcs := c.sources(h, int64(len(layer)))
	if len(srcs) != 1 || srcs[0].trusted {
		t.Fatalf("sources = %+v, want the unfinished bundle, not trusted", srcs)
	}
	d := v1.Descriptor{Digest: h, Size: int64(len(layer))}
	var got memSink
	if !copyFromCache(context.Background(), &got, srcs[0], d, slog.New(slog.DiscardHandler)) || !bytes.Equal(got.Bytes(), layer) {
		t.Fatal("a complete layer of an unfinished bundle was not used")
	}
	// The layer's bytes never arrived (the file is sparse there).
	f, _ := os.OpenFile(tmp, os.O_RDWR, 0)
	if _, err := f.WriteAt(make([]byte, len(layer)), res.BlobOffsets[h]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got.Reset()
	if copyFromCache(context.Background(), &got, srcs[0], d, slog.New(slog.DiscardHandler)) {
		t.Error("a layer whose bytes do not match was used")
	}
	c.cleanPartials(out)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Error("the unfinished bundle was not removed")
	}
	if notes, _ := os.ReadDir(filepath.Join(dir, "cache", "partial")); len(notes) != 0 {
		t.Errorf("notes left: %v", notes)
	}
}

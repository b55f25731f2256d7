package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/registry"
)

func needStamps(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("a file's identity (its change time) is read on Linux only; elsewhere no file is trusted, every one is hashed")
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// layersBundle writes a bundle of one image with the given layers.
func layersBundle(t *testing.T, path string, layers [][]byte, opts ...bundle.WriteOption) *bundle.Result {
	t.Helper()
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	mh := digestOf(man)
	pi := bundle.PlannedImage{Image: bundle.Image{Source: "example.com/a:1", Target: "a", Tags: []string{"1"},
		Digest: mh.String(), MediaType: "application/vnd.oci.image.manifest.v1+json"}, Blobs: []v1.Hash{mh}}
	plan := &bundle.Plan{Blobs: []bundle.PlannedBlob{{Digest: mh, Size: int64(len(man)), MediaType: "application/vnd.oci.image.manifest.v1+json", Kind: bundle.KindManifest, Data: man}}}
	for _, l := range layers {
		pi.Blobs = append(pi.Blobs, digestOf(l))
		plan.Blobs = append(plan.Blobs, bundle.PlannedBlob{Digest: digestOf(l), Size: int64(len(l)), MediaType: "application/vnd.oci.image.layer.v1.tar", Kind: bundle.KindLayer, Data: l})
	}
	plan.Images = []bundle.PlannedImage{pi}
	res, err := bundle.Write(context.Background(), path, plan, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCacheRecordGone: a recorded bundle deleted, moved, truncated, or
// changed in place with its size and modification time put back is
// neither a source nor vouched for; opening the cache does not fail (it
// panicked), and the stale record is removed.
func TestCacheRecordGone(t *testing.T) {
	needStamps(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, path string, off int64)
	}{
		{"deleted", func(t *testing.T, path string, _ int64) { must(t, os.Remove(path)) }},
		{"moved", func(t *testing.T, path string, _ int64) { must(t, os.Rename(path, path+".moved")) }},
		{"truncated", func(t *testing.T, path string, off int64) { must(t, os.Truncate(path, off+100)) }},
		{"changed in place, mtime restored", func(t *testing.T, path string, off int64) {
			info, err := os.Stat(path)
			must(t, err)
			time.Sleep(20 * time.Millisecond) // file times tick with the kernel's clock
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("X"), off+10)
			must(t, err)
			must(t, f.Close())
			must(t, os.Chtimes(path, info.ModTime(), info.ModTime()))
			if now, _ := os.Stat(path); now.Size() != info.Size() || !now.ModTime().Equal(info.ModTime()) {
				t.Fatal("size or mtime not restored")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			layer := randomBytes(1, 20000)
			h := digestOf(layer)
			out := filepath.Join(dir, "b.tar")
			res := tinyBundle(t, out, layer)
			c, err := OpenCache(filepath.Join(dir, "cache"))
			must(t, err)
			c.recordBundle(res, nil)
			tc.change(t, out, res.BlobOffsets[h])

			c, err = OpenCache(filepath.Join(dir, "cache"))
			must(t, err)
			if srcs := c.sources(h, int64(len(layer))); len(srcs) != 0 {
				t.Errorf("sources of a %s bundle: %+v", tc.name, srcs)
			}
			if info, err := os.Stat(out); err == nil && c.trust(out)(info, res.SHA256) {
				t.Errorf("a %s bundle is vouched for", tc.name)
			}
			if recs, _ := os.ReadDir(filepath.Join(dir, "cache", "bundles")); len(recs) != 0 {
				t.Errorf("the record of a %s bundle was kept: %v", tc.name, recs)
			}
		})
	}
}

// TestCacheRecordsVolumes: a bundle written in volumes is recorded (it
// panicked): a layer within one volume is copied from that volume, one
// that spans two from both, exactly; the record never vouches for the
// output; a volume changed in place makes the sources known before unused,
// and a volume removed drops the whole record.
func TestCacheRecordsVolumes(t *testing.T) {
	needStamps(t)
	dir := t.TempDir()
	var layers [][]byte
	for i := range 5 {
		layers = append(layers, randomBytes(uint64(10+i), 7000))
	}
	out := filepath.Join(dir, "b.tar")
	res := layersBundle(t, out, layers, bundle.WithSplit(10000))
	if len(res.Volumes) < 3 {
		t.Fatalf("volumes %v: want several", res.Volumes)
	}
	c, err := OpenCache(filepath.Join(dir, "cache"))
	must(t, err)
	c.recordBundle(res, nil)
	c, err = OpenCache(filepath.Join(dir, "cache"))
	must(t, err)
	vol := fakeInfo(t, res.Volumes[0]).Size() // every volume but the last
	var within, spanning int
	var spanned blobSource
	var spannedDesc v1.Descriptor
	for _, l := range layers {
		d := v1.Descriptor{Digest: digestOf(l), Size: int64(len(l))}
		srcs := c.sources(d.Digest, d.Size)
		off := res.BlobOffsets[d.Digest]
		first, last := off/vol, (off+d.Size-1)/vol
		if len(srcs) != 1 || !srcs[0].trusted || len(srcs[0].parts) != int(last-first+1) ||
			srcs[0].parts[0].path != filepath.Join(dir, fmt.Sprintf("b.tar.%03d", first)) {
			t.Fatalf("sources %+v: want the volumes %d..%d holding the layer, trusted", srcs, first, last)
		}
		if first == last {
			within++
		} else {
			spanning++
			spanned, spannedDesc = srcs[0], d
		}
		var got memSink
		if !copyFromCache(context.Background(), &got, srcs[0], d, slog.New(slog.DiscardHandler)) || !bytes.Equal(got.Bytes(), l) {
			t.Error("the layer was not copied exactly from its volumes")
		}
	}
	if within == 0 || spanning == 0 {
		t.Fatalf("layers within a volume %d, spanning two %d: the test needs both", within, spanning)
	}
	if c.trust(out)(fakeInfo(t, res.Volumes[0]), res.SHA256) {
		t.Error("a record of volumes vouches for an output")
	}

	// The second volume of a spanning layer changed in place, its mtime
	// put back: that layer's source, known before, is not used.
	second := spanned.parts[1].path
	info := fakeInfo(t, second)
	time.Sleep(20 * time.Millisecond) // file times tick with the kernel's clock
	f, err := os.OpenFile(second, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("X"), spanned.parts[1].off)
	must(t, err)
	must(t, f.Close())
	must(t, os.Chtimes(second, info.ModTime(), info.ModTime()))
	var got memSink
	if copyFromCache(context.Background(), &got, spanned, spannedDesc, slog.New(slog.DiscardHandler)) {
		t.Error("a layer was copied from a volume changed since it was recorded")
	}

	must(t, os.Remove(res.Volumes[1]))
	c, err = OpenCache(filepath.Join(dir, "cache"))
	must(t, err)
	for _, l := range layers {
		if srcs := c.sources(digestOf(l), int64(len(l))); len(srcs) != 0 {
			t.Errorf("a volume is gone, yet its bundle is still a source: %+v", srcs)
		}
	}
	if recs, _ := os.ReadDir(filepath.Join(dir, "cache", "bundles")); len(recs) != 0 {
		t.Errorf("the record of a bundle with a volume gone was kept: %v", recs)
	}
	// A result whose file does not exist is not recorded (and does not panic).
	c.recordBundle(&bundle.Result{Path: filepath.Join(dir, "gone.tar"), Volumes: []string{filepath.Join(dir, "gone.tar")}, SHA256: res.SHA256, Record: res.Record}, nil)
	if recs, _ := os.ReadDir(filepath.Join(dir, "cache", "bundles")); len(recs) != 0 {
		t.Errorf("a missing file was recorded: %v", recs)
	}
}

func fakeInfo(t *testing.T, path string) os.FileInfo {
	t.Helper()
	info, err := os.Stat(path)
	must(t, err)
	return info
}

// TestRecordedSizeMismatch: a descriptor whose size is not the recorded
// blob's size fails as the registry path fails (ErrBlobMismatch, naming
// the blob and both sizes), and nothing is copied: the recorded bytes were
// copied for the size the new descriptor gave.
func TestRecordedSizeMismatch(t *testing.T) {
	needStamps(t)
	dir := t.TempDir()
	layer := randomBytes(3, 20000)
	h := digestOf(layer)
	res := tinyBundle(t, filepath.Join(dir, "b.tar"), layer)
	c, err := OpenCache(filepath.Join(dir, "cache"))
	must(t, err)
	c.recordBundle(res, nil)
	c, err = OpenCache(filepath.Join(dir, "cache"))
	must(t, err)
	o := &runner{Options: &Options{Logger: slog.New(slog.DiscardHandler)}, cache: c}
	for _, size := range []int64{int64(len(layer)) - 1, int64(len(layer)) + 512} {
		var got memSink
		err := fetcher(o, nil, v1.Descriptor{Digest: h, Size: size}, false)(context.Background(), &got)
		if !errors.Is(err, registry.ErrBlobMismatch) || !strings.Contains(err.Error(), h.String()) ||
			!strings.Contains(err.Error(), fmt.Sprint(size)) || !strings.Contains(err.Error(), fmt.Sprint(len(layer))) {
			t.Errorf("descriptor size %d: err %v; want ErrBlobMismatch naming %s and both sizes", size, err, h)
		}
		if got.Len() != 0 {
			t.Errorf("descriptor size %d: %d bytes copied", size, got.Len())
		}
	}
	// The honest descriptor is still served from the record.
	var got memSink
	if err := fetcher(o, nil, v1.Descriptor{Digest: h, Size: int64(len(layer))}, false)(context.Background(), &got); err != nil || !bytes.Equal(got.Bytes(), layer) {
		t.Errorf("honest descriptor: %v", err)
	}
}

// TestVerifyBundleFile: an output that is not vouched for by a record is
// trusted only when every blob has its digest: damage that arrives with a
// .sha256 rewritten to match is found.
func TestVerifyBundleFile(t *testing.T) {
	dir := t.TempDir()
	layer := randomBytes(4, 30000)
	out := filepath.Join(dir, "b.tar")
	res := tinyBundle(t, out, layer)
	ctx := context.Background()
	if err := verifyBundleFile(ctx, out, res.SHA256); err != nil {
		t.Fatalf("a good bundle: %v", err)
	}
	if err := verifyBundleFile(ctx, out, strings.Repeat("0", 64)); err == nil {
		t.Error("a bundle whose .sha256 differs was accepted")
	}
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{^layer[100]}, res.BlobOffsets[digestOf(layer)]+100)
	must(t, err)
	must(t, f.Close())
	data, err := os.ReadFile(out)
	must(t, err)
	sum := sha256.Sum256(data)
	if err := verifyBundleFile(ctx, out, hex.EncodeToString(sum[:])); !errors.Is(err, errDamagedBlob) {
		t.Errorf("a damaged layer with a matching checksum: err %v, want errDamagedBlob", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

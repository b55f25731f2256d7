package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// handLayer is a layer built by hand: its stored bytes, media type, and
// the diff_id its config lists (the true one unless a test lies).
type handLayer struct {
	data   []byte
	mt     types.MediaType
	diffID v1.Hash
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// tarOf is a tar holding one file name with content.
func tarOf(t testing.TB, name string, content []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: fixedClock()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipLayer, zstdLayer and plainLayer wrap a tar as a layer with its true
// diff_id.
func gzipLayer(t testing.TB, tarball []byte) handLayer {
	return handLayer{gzipped(t, tarball), types.OCILayer, sha(tarball)}
}

func zstdLayer(t testing.TB, tarball []byte) handLayer {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return handLayer{enc.EncodeAll(tarball, nil), types.OCILayerZStd, sha(tarball)}
}

func plainLayer(tarball []byte) handLayer {
	return handLayer{tarball, types.OCIUncompressedLayer, sha(tarball)}
}

// addHandImage adds an image of the given layers (OCI manifest, image
// config with their diff_ids) to plan under target:tag.
func addHandImage(t testing.TB, plan *Plan, target, tag string, layers ...handLayer) (manifest, config v1.Hash) {
	t.Helper()
	ids := make([]v1.Hash, len(layers))
	for i, l := range layers {
		ids[i] = l.diffID
	}
	return addHandImageIDs(t, plan, target, tag, ids, layers...)
}

// addHandImageIDs is addHandImage with the config's diff_ids given.
func addHandImageIDs(t testing.TB, plan *Plan, target, tag string, ids []v1.Hash, layers ...handLayer) (manifest, config v1.Hash) {
	t.Helper()
	mh, ch, blobs := handManifest(t, plan, "amd64", ids, layers...)
	plan.Images = append(plan.Images, PlannedImage{Image: Image{Source: "src.example/" + target + ":" + tag, Target: target, Tags: []string{tag},
		Digest: mh.String(), MediaType: string(types.OCIManifestSchema1)}, Blobs: blobs})
	return mh, ch
}

// addPlanBlob adds b to plan unless it is there.
func addPlanBlob(plan *Plan, b PlannedBlob) {
	for _, have := range plan.Blobs {
		if have.Digest == b.Digest {
			return
		}
	}
	plan.Blobs = append(plan.Blobs, b)
}

// handManifest adds an OCI manifest of the layers (and its config, for
// linux/arch, listing ids) to plan's blobs, and returns its digest, its
// config's, and every blob it needs.
func handManifest(t testing.TB, plan *Plan, arch string, ids []v1.Hash, layers ...handLayer) (manifest, config v1.Hash, blobs []v1.Hash) {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"architecture": arch, "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	if err != nil {
		t.Fatal(err)
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: sha(cfg), Size: int64(len(cfg))}}
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: l.mt, Digest: sha(l.data), Size: int64(len(l.data))})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	addPlanBlob(plan, PlannedBlob{Digest: sha(raw), Size: int64(len(raw)), MediaType: types.OCIManifestSchema1, Kind: KindManifest, Data: raw, Origin: "test"})
	addPlanBlob(plan, PlannedBlob{Digest: sha(cfg), Size: int64(len(cfg)), MediaType: types.OCIConfigJSON, Kind: KindConfig, Data: cfg, Origin: "test"})
	blobs = []v1.Hash{sha(raw), sha(cfg)}
	for _, l := range layers {
		addPlanBlob(plan, PlannedBlob{Digest: sha(l.data), Size: int64(len(l.data)), MediaType: l.mt, Kind: KindLayer, Data: l.data, Origin: "test"})
		blobs = append(blobs, sha(l.data))
	}
	return sha(raw), sha(cfg), blobs
}

func writeOpen(t testing.TB, plan *Plan, opts ...WriteOption) *Reader {
	t.Helper()
	out := filepath.Join(t.TempDir(), "b.tar")
	if _, err := Write(context.Background(), out, plan, append([]WriteOption{WithClock(fixedClock)}, opts...)...); err != nil {
		t.Fatal(err)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestVerifyDeepFormats: gzip, zstd and plain tar layers (and a layer
// whose media type says gzip but which is a plain tar, which docker and
// containerd unpack by its bytes) match their diff_ids.
func TestVerifyDeepFormats(t *testing.T) {
	plan := &Plan{}
	tg, tz, tp := tarOf(t, "g", []byte("gzip layer")), tarOf(t, "z", bytes.Repeat([]byte("zstd "), 1000)), tarOf(t, "p", []byte("plain"))
	mislabelled := plainLayer(tarOf(t, "m", []byte("mislabelled")))
	mislabelled.mt = types.DockerLayer
	addHandImage(t, plan, "ok/img", "1", gzipLayer(t, tg), zstdLayer(t, tz), plainLayer(tp), mislabelled)
	r := writeOpen(t, plan)
	rep, err := VerifyDeep(context.Background(), r, 2, DefaultDeepLimits(), nil)
	if err != nil {
		t.Fatalf("VerifyDeep: %v %v", err, rep.Problems)
	}
	want := int64(len(tg) + len(tz) + len(tp) + len(tarOf(t, "m", []byte("mislabelled"))))
	if !rep.Deep || rep.Layers != 4 || rep.Uncompressed != want {
		t.Fatalf("deep %v, %d layers, %d bytes; want 4 layers, %d bytes", rep.Deep, rep.Layers, rep.Uncompressed, want)
	}
}

// TestVerifyDeepWrongDiffID: a layer whose compressed digest is right but
// whose config lists another diff_id passes Verify and fails VerifyDeep,
// which names the image, the layer, the expected and the actual diff_id.
func TestVerifyDeepWrongDiffID(t *testing.T) {
	plan := &Plan{}
	addHandImage(t, plan, "good/img", "1", gzipLayer(t, tarOf(t, "a", []byte("good"))))
	tb := tarOf(t, "b", []byte("bad"))
	bad := gzipLayer(t, tb)
	bad.diffID = sha([]byte("something else"))
	addHandImage(t, plan, "bad/img", "2", gzipLayer(t, tarOf(t, "c", []byte("fine"))), bad)
	r := writeOpen(t, plan)
	if rep, err := Verify(context.Background(), r, 2, nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
	rep, err := VerifyDeep(context.Background(), r, 2, DefaultDeepLimits(), nil)
	if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 {
		t.Fatalf("VerifyDeep: %v, problems %v", err, rep.Problems)
	}
	p := rep.Problems[0]
	for _, want := range []string{"bad/img:2", sha(bad.data).String(), bad.diffID.String(), sha(tb).String()} {
		if !strings.Contains(p.Message, want) {
			t.Errorf("problem %q does not name %s", p.Message, want)
		}
	}
	if p.Entry != BlobName(sha(bad.data)) || !errors.Is(p.Err, ErrDiffID) || strings.Join(p.Images, ",") != "bad/img:2" {
		t.Errorf("problem %+v: want the layer's entry, ErrDiffID, image bad/img:2", p)
	}
}

// TestVerifyDeepDiffIDCount: a config listing fewer diff_ids than the
// manifest has layers is a problem of the config.
func TestVerifyDeepDiffIDCount(t *testing.T) {
	plan := &Plan{}
	_, cfg := addHandImageIDs(t, plan, "short/img", "1", []v1.Hash{}, gzipLayer(t, tarOf(t, "a", []byte("a"))))
	r := writeOpen(t, plan)
	rep, err := VerifyDeep(context.Background(), r, 1, DefaultDeepLimits(), nil)
	if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 || rep.Problems[0].Entry != BlobName(cfg) ||
		!strings.Contains(rep.Problems[0].String(), "lists 0 diff_ids for the manifest's 1 layers (needed by short/img:1)") {
		t.Fatalf("VerifyDeep: %v, problems %v", err, rep.Problems)
	}
}

// TestVerifyDeepBomb: a gzip layer that inflates beyond the limits is
// refused with both limits in the error, by the ratio and by the
// absolute cap.
func TestVerifyDeepBomb(t *testing.T) {
	zeros := tarOf(t, "zeros", make([]byte, 40<<20))
	plan := &Plan{}
	bomb := gzipLayer(t, zeros)
	addHandImage(t, plan, "bomb/img", "1", bomb)
	r := writeOpen(t, plan)
	for _, c := range []struct {
		name string
		lim  DeepLimits
		want []string
	}{
		{"ratio", DeepLimits{MaxRatio: 100, MaxSize: 1 << 30}, []string{"100×", "1073741824 bytes in all", "more than 16777216 bytes"}},
		{"absolute", DeepLimits{MaxRatio: 100000, MaxSize: 1 << 20}, []string{"100000×", "1048576 bytes in all", "more than 1048576 bytes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := VerifyDeep(context.Background(), r, 1, c.lim, nil)
			if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 || !errors.Is(rep.Problems[0].Err, ErrBomb) {
				t.Fatalf("VerifyDeep: %v, problems %v", err, rep.Problems)
			}
			for _, w := range append(c.want, "bomb/img:1", fmt.Sprint(len(bomb.data))) {
				if !strings.Contains(rep.Problems[0].String(), w) {
					t.Errorf("problem %q does not say %q", rep.Problems[0].String(), w)
				}
			}
		})
	}
	if rep, err := VerifyDeep(context.Background(), r, 1, DefaultDeepLimits(), nil); err != nil {
		t.Fatalf("within the default limits: %v %v", err, rep.Problems)
	}
}

// TestWriteDeepCheck: Write with WithDeepCheck refuses an image whose
// layer does not match its diff_id, naming it, and leaves no file; with
// keep-going the bundle holds the other image, and passes VerifyDeep (the
// rewrite is not checked a second time: its layers come from the first
// attempt's checked file).
func TestWriteDeepCheck(t *testing.T) {
	plan := &Plan{}
	addHandImage(t, plan, "good/img", "1", gzipLayer(t, tarOf(t, "a", []byte("good"))))
	bad := gzipLayer(t, tarOf(t, "b", []byte("bad")))
	bad.diffID = sha([]byte("lie"))
	addHandImage(t, plan, "bad/img", "1", bad)
	dir := t.TempDir()
	out := filepath.Join(dir, "b.tar")
	_, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithDeepCheck(DefaultDeepLimits()))
	fs := Failures(err)
	if !errors.Is(err, ErrDiffID) || len(fs) != 1 || !strings.Contains(fs[0].Image, "bad/img:1") || fs[0].Digest != sha(bad.data).String() {
		t.Fatalf("Write: %v, failures %+v", err, fs)
	}
	if _, serr := os.Stat(out); !os.IsNotExist(serr) {
		t.Fatalf("a bundle was left at %s: %v", out, serr)
	}
	res, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithDeepCheck(DefaultDeepLimits()), WithKeepGoing(true))
	if len(Failures(err)) != 1 || res == nil || len(res.Record.Images) != 1 || res.Record.Images[0].Target != "good/img" {
		t.Fatalf("keep-going Write: %v, %+v", err, res)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rep, err := VerifyDeep(context.Background(), r, 2, DefaultDeepLimits(), nil); err != nil || rep.Layers != 1 {
		t.Fatalf("VerifyDeep of the kept image: %v %v", err, rep)
	}
}

func TestDeepLimit(t *testing.T) {
	l := DeepLimits{MaxRatio: 10, MaxSize: 1 << 30}
	for _, c := range []struct{ in, want int64 }{
		{1, deepRatioFloor},
		{10 << 20, 100 << 20},
		{1 << 30, 1 << 30},
		{1 << 62, 1 << 30}, // no overflow
	} {
		if got := l.limit(c.in); got != c.want {
			t.Errorf("limit(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestVerifyDeepZstdWindow: a zstd layer whose frame asks for a window
// beyond zstdMaxWindow is refused rather than decoded with that much
// memory.
func TestVerifyDeepZstdWindow(t *testing.T) {
	tb := tarOf(t, "w", []byte("wide window"))
	enc, err := zstd.NewWriter(nil, zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	frame := enc.EncodeAll(tb, nil)
	if frame[4]&0x20 != 0 {
		t.Fatal("the encoder wrote a single-segment frame (no window descriptor)")
	}
	frame[5] = 18 << 3 // window descriptor: 2^(10+18) bytes = 256 MiB
	var buf bytes.Buffer
	buf.Write(frame)
	plan := &Plan{}
	addHandImage(t, plan, "wide/img", "1", handLayer{buf.Bytes(), types.OCILayerZStd, sha(tb)})
	r := writeOpen(t, plan)
	rep, err := VerifyDeep(context.Background(), r, 1, DefaultDeepLimits(), nil)
	if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Message, "window") {
		t.Fatalf("VerifyDeep: %v, problems %v", err, rep.Problems)
	}
}

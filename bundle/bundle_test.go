package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testImage builds a deterministic image from layer contents.
func testImage(t testing.TB, layers ...string) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer([]byte(l), types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img
}

// planFor builds a plan holding imgs (target → image), deduplicating blobs.
func planFor(t testing.TB, imgs map[string]v1.Image, corrupt map[v1.Hash]bool) *Plan {
	t.Helper()
	p := &Plan{}
	have := map[v1.Hash]bool{}
	add := func(b PlannedBlob) {
		if !have[b.Digest] {
			have[b.Digest] = true
			p.Blobs = append(p.Blobs, b)
		}
	}
	for target, img := range imgs {
		raw, _ := img.RawManifest()
		d, _ := img.Digest()
		mt, _ := img.MediaType()
		add(PlannedBlob{Digest: d, Size: int64(len(raw)), MediaType: mt, Kind: KindManifest, Data: raw, Origin: "test"})
		cfg, _ := img.RawConfigFile()
		cd, _ := img.ConfigName()
		add(PlannedBlob{Digest: cd, Size: int64(len(cfg)), Kind: KindConfig, Data: cfg, Origin: "test"})
		pi := PlannedImage{Image: Image{Source: "src.example/" + target + ":v1", Target: target, Tags: []string{"v1"}, Digest: d.String(), MediaType: string(mt)}, Blobs: []v1.Hash{d, cd}}
		layers, _ := img.Layers()
		for _, l := range layers {
			ld, _ := l.Digest()
			sz, _ := l.Size()
			pi.Blobs = append(pi.Blobs, ld)
			bad := corrupt[ld]
			add(PlannedBlob{Digest: ld, Size: sz, Kind: KindLayer, Origin: "test-registry", Open: func(context.Context) (io.ReadCloser, error) {
				rc, err := l.Compressed()
				if err != nil || !bad {
					return rc, err
				}
				b, _ := io.ReadAll(rc)
				b[0] ^= 0xff
				return io.NopCloser(bytes.NewReader(b)), nil
			}})
		}
		p.Images = append(p.Images, pi)
	}
	return p
}

func fixedClock() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func TestWriteReadVerifyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a := testImage(t, "base layer shared", "app a")
	b := testImage(t, "base layer shared", "app b")
	plan := planFor(t, map[string]v1.Image{"proj/a": a, "proj/b": b}, nil)
	out := filepath.Join(dir, "bundle.tar")
	res, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithID("test"), WithJobs(3))
	if err != nil {
		t.Fatal(err)
	}
	// The shared base layer is stored once: 2 manifests + 2 configs + 3 layers.
	if got := len(res.Record.Blobs); got != 7 {
		t.Fatalf("blobs = %d, want 7", got)
	}
	// Sidecar in sha256sum format, matching the file.
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	side, _ := os.ReadFile(out + ".sha256")
	if want := hex.EncodeToString(sum[:]) + "  bundle.tar\n"; string(side) != want {
		t.Fatalf("sidecar = %q, want %q", side, want)
	}
	// Entry order: oci-layout, index.json, ferry.json, manifest.json
	// (docker load), manifests, configs, layers.
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if names[0] != LayoutFile || names[1] != IndexFile || names[2] != RecordFile || names[3] != DockerManifestFile || len(names) != 11 {
		t.Fatalf("entries = %v", names)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Index().Manifests) != 2 {
		t.Fatalf("index has %d descriptors", len(r.Index().Manifests))
	}
	refs := map[string]bool{}
	for _, d := range r.Index().Manifests {
		refs[d.Annotations[RefNameAnnotation]] = true
	}
	if !refs["proj/a:v1"] || !refs["proj/b:v1"] {
		t.Fatalf("ref names = %v", refs)
	}
	for _, want := range []v1.Image{a, b} {
		d, _ := want.Digest()
		tree, err := r.Tree(d)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := want.RawManifest()
		if !bytes.Equal(tree.Data, raw) {
			t.Fatal("manifest bytes changed")
		}
		layers, _ := want.Layers()
		for _, l := range layers {
			ld, _ := l.Digest()
			rc, err := r.Blob(ld)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			lr, _ := l.Compressed()
			exp, _ := io.ReadAll(lr)
			if !bytes.Equal(got, exp) {
				t.Fatalf("layer %s differs", ld)
			}
		}
	}
	rep, err := Verify(context.Background(), r, 2, nil)
	if err != nil || !rep.OK() || rep.Blobs != 7 || rep.Images != 2 {
		t.Fatalf("verify: %v %+v", err, rep)
	}

	// The same plan, clock and id give the same bytes.
	out2 := filepath.Join(dir, "again.tar")
	if _, err := Write(context.Background(), out2, plan, WithClock(fixedClock), WithID("test"), WithJobs(1)); err != nil {
		t.Fatal(err)
	}
	data2, _ := os.ReadFile(out2)
	if !bytes.Equal(data, data2) {
		t.Fatal("bundle is not reproducible")
	}
}

func TestWriteDigestMismatchLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	a := testImage(t, "base", "app a")
	layers, _ := a.Layers()
	bad, _ := layers[1].Digest()
	plan := planFor(t, map[string]v1.Image{"proj/a": a}, map[v1.Hash]bool{bad: true})
	out := filepath.Join(dir, "bundle.tar")
	_, err := Write(context.Background(), out, plan, WithClock(fixedClock))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want digest mismatch", err)
	}
	for _, want := range []string{bad.String(), "test-registry", "proj/a:v1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left behind: %v", entries)
	}
}

func TestWriteKeepGoing(t *testing.T) {
	dir := t.TempDir()
	a := testImage(t, "base", "app a")
	b := testImage(t, "base", "app b")
	layers, _ := a.Layers()
	bad, _ := layers[1].Digest()
	plan := planFor(t, map[string]v1.Image{"proj/a": a, "proj/b": b}, map[v1.Hash]bool{bad: true})
	out := filepath.Join(dir, "bundle.tar")
	res, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithKeepGoing(true))
	if err == nil {
		t.Fatal("want an error listing the failure")
	}
	if f := Failures(err); len(f) != 1 || !strings.Contains(f[0].Image, "proj/a") {
		t.Fatalf("failures = %v", f)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Record().Images) != 1 || r.Record().Images[0].Target != "proj/b" {
		t.Fatalf("images = %+v", r.Record().Images)
	}
	if r.Has(bad) {
		t.Fatal("failed blob kept")
	}
	if rep, err := Verify(context.Background(), r, 2, nil); err != nil {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if res.Path != out {
		t.Fatalf("result path %q", res.Path)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // bundle + sidecar, no temp files
		t.Fatalf("files: %v", entries)
	}
}

func TestVerifyFindsFlippedByte(t *testing.T) {
	dir := t.TempDir()
	a := testImage(t, "base", "app a")
	out := filepath.Join(dir, "bundle.tar")
	if _, err := Write(context.Background(), out, planFor(t, map[string]v1.Image{"proj/a": a}, nil)); err != nil {
		t.Fatal(err)
	}
	layers, _ := a.Layers()
	ld, _ := layers[1].Digest()
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	sr, _ := r.Section(ld)
	_, off, _ := sr.Outer()
	r.Close()
	f, _ := os.OpenFile(out, os.O_RDWR, 0)
	var one [1]byte
	f.ReadAt(one[:], off)
	one[0] ^= 1
	f.WriteAt(one[:], off)
	f.Close()

	r, err = Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := Verify(context.Background(), r, 2, nil)
	if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 {
		t.Fatalf("err = %v, problems = %v", err, rep.Problems)
	}
	p := rep.Problems[0]
	if p.Entry != BlobName(ld) || len(p.Images) != 1 || p.Images[0] != "proj/a:v1" {
		t.Fatalf("problem = %+v", p)
	}
	rc, _ := r.Blob(ld)
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("reading a flipped blob: %v", err)
	}
}

func TestWriteVolumes(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("layer bytes that span volumes ", 400) // ~12 KiB
	a := testImage(t, "base", big)
	b := testImage(t, "base", "app b")
	plan := planFor(t, map[string]v1.Image{"proj/a": a, "proj/b": b}, nil)
	out := filepath.Join(dir, "bundle.tar")
	// A stale single-file bundle of the same name must not survive.
	if err := os.WriteFile(out, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithID("v"), WithSplit(4096))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Volumes) < 3 {
		t.Fatalf("volumes = %v", res.Volumes)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("stale single-file bundle left beside the volumes")
	}
	var joined []byte
	side, _ := os.ReadFile(out + ".sha256")
	lines := strings.Split(strings.TrimSpace(string(side)), "\n")
	if len(lines) != len(res.Volumes) {
		t.Fatalf("sidecar has %d lines for %d volumes", len(lines), len(res.Volumes))
	}
	for i, v := range res.Volumes {
		data, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) >= 4096 {
			t.Errorf("volume %s is %d bytes, not below 4096", v, len(data))
		}
		sum := sha256.Sum256(data)
		if want := hex.EncodeToString(sum[:]) + "  " + filepath.Base(v); lines[i] != want {
			t.Errorf("sidecar line %q, want %q", lines[i], want)
		}
		joined = append(joined, data...)
	}
	// The volumes joined are the same bytes as the unsplit bundle.
	one := filepath.Join(dir, "one.tar")
	if _, err := Write(context.Background(), one, plan, WithClock(fixedClock), WithID("v")); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(one)
	if !bytes.Equal(joined, whole) {
		t.Fatal("joined volumes differ from the single-file bundle")
	}
	// Readers take the base name or the first volume, and read across.
	for _, name := range []string{out, out + ".000"} {
		r, err := Open(name)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(context.Background(), r, 2, nil)
		if err != nil || rep.Images != 2 {
			t.Fatalf("verify %s: %v %+v", name, err, rep)
		}
		if len(r.Volumes()) != len(res.Volumes) {
			t.Fatalf("reader found %d volumes", len(r.Volumes()))
		}
		r.Close()
	}
	// Writing again unsplit removes the volumes.
	if _, err := Write(context.Background(), out, plan, WithClock(fixedClock)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out + ".000"); !os.IsNotExist(err) {
		t.Fatal("old volumes left beside a single-file bundle")
	}
	// A missing middle volume is detected.
	if _, err := Write(context.Background(), out, plan, WithClock(fixedClock), WithSplit(4096)); err != nil {
		t.Fatal(err)
	}
	last := VolumeName(out, len(res.Volumes)-1)
	if err := os.Remove(VolumeName(out, 1)); err != nil {
		t.Fatal(err)
	}
	if r, err := Open(out); err == nil {
		r.Close()
		t.Fatalf("opened a bundle missing volume 1 (last %s)", last)
	}
}

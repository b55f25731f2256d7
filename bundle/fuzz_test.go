package bundle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-airgap/ferry/internal/names"
)

// FuzzOpen feeds arbitrary bytes to the tar reader: it must never panic,
// and anything it refuses is refused with ErrCorrupt or ErrUnsupported.
func FuzzOpen(f *testing.F) {
	good, _ := validBundleF(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.tar")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotBundle) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		defer r.Close()
		rep, err := Verify(context.Background(), r, 1, nil)
		if err != nil && !errors.Is(err, ErrVerify) {
			t.Fatalf("Verify: %v", err)
		}
		if err == nil && !rep.OK() {
			t.Fatal("no error but problems")
		}
	})
}

// FuzzParseRecord: ferry.json parsing never panics, and what it accepts has
// only well-formed digests.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"formatVersion":1,"images":[{"source":"docker.io/library/redis:7","target":"proj/redis","tags":["7"],"digest":"sha256:` + hex64('a') + `"}],"blobs":[{"digest":"sha256:` + hex64('b') + `","size":3}]}`))
	f.Add([]byte(`{"formatVersion":2}`))
	f.Add([]byte(`{"formatVersion":2,"images":[],"blobs":[],"baseBlobs":[{"digest":"sha256:` + hex64('b') + `","size":3}],"have":[{"id":"` + hex64('a')[:32] + `","registry":"r:5000","created":"2026-01-01T00:00:00Z","repositories":["a/b"]}]}`))
	f.Add([]byte(`{"formatVersion":1,"blobs":[{"digest":"sha256:../../etc/passwd","size":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := ParseRecord(data)
		if err != nil {
			return
		}
		for _, b := range rec.Blobs {
			if _, err := ParseDigest(b.Digest); err != nil || b.Size < 0 {
				t.Fatalf("accepted blob %q size %d", b.Digest, b.Size)
			}
		}
		for _, im := range rec.Images {
			if _, err := ParseDigest(im.Digest); err != nil || !validTarget(im.Target) {
				t.Fatalf("accepted image %+v", im)
			}
		}
	})
}

// FuzzParseIndex: index.json parsing never panics and accepts sha256 only.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + hex64('c') + `","size":7,"annotations":{"org.opencontainers.image.ref.name":"a/b:1"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"md5:abc","size":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseIndex(data)
		if err != nil {
			return
		}
		for _, d := range idx.Manifests {
			if d.Digest.Algorithm != "sha256" || !names.IsSHA256Hex(d.Digest.Hex) || d.Size < 0 {
				t.Fatalf("accepted descriptor %+v", d)
			}
		}
	})
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// validBundleF returns a good bundle's bytes for seeding.
func validBundleF(f *testing.F) ([]byte, error) {
	entries, _ := validBundle(f)
	return buildTar(f, entries), nil
}

package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tarEntry is one entry of a bundle rebuilt by a test.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// validBundle writes a small good bundle and returns its entries.
func validBundle(t testing.TB) (entries []tarEntry, layer v1.Hash) {
	t.Helper()
	dir := t.TempDir()
	a := testImage(t, "base", "app a")
	out := filepath.Join(dir, "b.tar")
	if _, err := Write(context.Background(), out, planFor(t, map[string]v1.Image{"proj/a": a}, nil), WithClock(fixedClock)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	entries = tarEntries(t, data)
	layers, _ := a.Layers()
	layer, _ = layers[1].Digest()
	return entries, layer
}

// tarEntries reads every entry of a tar held in memory.
func tarEntries(t testing.TB, data []byte) (entries []tarEntry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries = append(entries, tarEntry{*h, b})
	}
}

// oversized is a tar whose only header claims far more bytes than follow.
func oversized(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: LayoutFile, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		t.Fatal(err)
	}
	_ = tw.Flush() // fails (the entry is short): the bytes so far are what we want
	return append(buf.Bytes(), make([]byte, 4096)...)
}

func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// editEntry replaces old with new, once, in the named entry.
func editEntry(t testing.TB, e []tarEntry, name, old, new string) []tarEntry {
	t.Helper()
	i := find(e, name)
	edited := bytes.Replace(e[i].data, []byte(old), []byte(new), 1)
	if bytes.Equal(edited, e[i].data) {
		t.Fatalf("%s: %q not found", name, old)
	}
	e[i].data = edited
	return e
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func find(entries []tarEntry, name string) int {
	for i, e := range entries {
		if e.hdr.Name == name {
			return i
		}
	}
	return -1
}

func with(entries []tarEntry, extra ...tarEntry) []tarEntry {
	out := append([]tarEntry(nil), entries...)
	return append(out, extra...)
}

func special(name string, typ byte, link string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: 0o644}}
}

// TestHostileBundles builds each hostile tar in code and checks that Open
// (or Verify) refuses it with a named error, and that nothing is written
// anywhere.
func TestHostileBundles(t *testing.T) {
	good, layer := validBundle(t)
	blobName := BlobName(layer)
	mutate := func(f func([]tarEntry) []tarEntry) []byte {
		cp := make([]tarEntry, len(good))
		for i, e := range good {
			cp[i] = tarEntry{e.hdr, append([]byte(nil), e.data...)}
		}
		return buildTar(t, f(cp))
	}
	goodTar := buildTar(t, good)
	cases := []struct {
		name string
		data []byte
		want string // in the error text
		// verify: the bundle opens, and Verify must report the problem.
		verify bool
	}{
		{"path traversal", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "../../evil", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")})
		}), "path traversal", false},
		{"traversal inside blobs", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "blobs/sha256/../../../evil", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")})
		}), "path traversal", false},
		{"absolute path", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "/etc/cron.d/evil", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")})
		}), "absolute path", false},
		{"symlink", mutate(func(e []tarEntry) []tarEntry {
			return with(e, special("blobs/sha256/"+strings.Repeat("a", 64), tar.TypeSymlink, "/etc/passwd"))
		}), "symbolic link", false},
		{"hard link", mutate(func(e []tarEntry) []tarEntry {
			return with(e, special("blobs/sha256/"+strings.Repeat("b", 64), tar.TypeLink, "/etc/shadow"))
		}), "hard link", false},
		{"char device", mutate(func(e []tarEntry) []tarEntry { return with(e, special("dev", tar.TypeChar, "")) }), "device node", false},
		{"block device", mutate(func(e []tarEntry) []tarEntry { return with(e, special("disk", tar.TypeBlock, "")) }), "device node", false},
		{"fifo", mutate(func(e []tarEntry) []tarEntry { return with(e, special("pipe", tar.TypeFifo, "")) }), "FIFO", false},
		{"stray entry", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "README", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("hi")})
		}), "unexpected entry", false},
		{"duplicate entry", mutate(func(e []tarEntry) []tarEntry { return with(e, e[find(e, IndexFile)]) }), "appears twice", false},
		{"unknown digest algorithm", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "blobs/sha512/" + strings.Repeat("a", 128), Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")})
		}), "only sha256", false},
		{"malformed hex", mutate(func(e []tarEntry) []tarEntry {
			return with(e, tarEntry{hdr: tar.Header{Name: "blobs/sha256/XYZ", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")})
		}), "malformed sha256 digest", false},
		{"path-like digest in ferry.json", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, RecordFile)
			e[i].data = bytes.Replace(e[i].data, []byte(`"digest": "sha256:`), []byte(`"digest": "sha256:../../`), 1)
			return e
		}), "malformed sha256 digest", false},
		{"invalid ferry.json", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, RecordFile)
			e[i].data = e[i].data[:len(e[i].data)/2]
			return e
		}), "ferry.json is not valid JSON", false},
		{"invalid index.json", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, IndexFile)
			e[i].data = []byte("{not json")
			return e
		}), "index.json is not valid", false},
		{"missing ferry.json", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, RecordFile)
			return append(e[:i], e[i+1:]...)
		}), "ferry.json is missing", false},
		{"newer format", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, RecordFile)
			e[i].data = bytes.Replace(e[i].data, []byte(`"formatVersion": 1`), []byte(`"formatVersion": 99`), 1)
			return e
		}), "upgrade ferry", false},
		{"blob listed but missing", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, blobName)
			return append(e[:i], e[i+1:]...)
		}), "missing from the bundle", false},
		{"blob size disagrees", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, blobName)
			e[i].data = append(e[i].data, 'x')
			return e
		}), "bytes in the bundle but", false},
		{"header size past end of file", func() []byte {
			b := append([]byte(nil), goodTar...)
			return b[:len(b)-2048] // cut inside the last blob and its trailer
		}(), "truncated", false},
		{"trailer missing", func() []byte {
			b := append([]byte(nil), goodTar...)
			return b[:len(b)-1024] // tar.Writer.Close writes two zero blocks
		}(), "end-of-archive marker is missing", false},
		{"flipped byte in a blob", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, blobName)
			e[i].data[0] ^= 1
			return e
		}), "digest mismatch", true},
		{"gzip-compressed bundle", gzipped(t, goodTar), "bundle is compressed (gzip); ferry bundles are plain tar: decompress it first (and mind its size)", false},
		{"zstd magic", append([]byte{0x28, 0xb5, 0x2f, 0xfd}, goodTar...), "bundle is compressed (zstd)", false},
		{"xz magic", append([]byte("\xfd7zXZ\x00"), goodTar...), "bundle is compressed (xz)", false},
		{"bzip2 magic", append([]byte("BZh9"), goodTar...), "bundle is compressed (bzip2)", false},
		{"header size exceeds the file", oversized(t), "claims 1073741824 bytes but the file ends", false},
		{"flipped byte in index.json ref name (valid JSON)", mutate(func(e []tarEntry) []tarEntry {
			return editEntry(t, e, IndexFile, `"proj/a:v1"`, `"proj/a:v3"`)
		}), "index.json does not match ferry.json: descriptor 0 names \"proj/a:v3\"", false},
		{"flipped byte in index.json media type (valid JSON)", mutate(func(e []tarEntry) []tarEntry {
			return editEntry(t, e, IndexFile, `"mediaType": "application/vnd.oci.image.manifest.v1+json"`, `"mediaType": "application/vnd.oci.image.manifest.v1+jsoo"`)
		}), "has media type", false},
		{"extra descriptor in index.json", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, IndexFile)
			var idx v1.IndexManifest
			if err := json.Unmarshal(e[i].data, &idx); err != nil {
				t.Fatal(err)
			}
			d := idx.Manifests[0]
			d.Annotations = map[string]string{RefNameAnnotation: "proj/a:evil"}
			idx.Manifests = append(idx.Manifests, d)
			e[i].data, _ = json.Marshal(idx)
			return e
		}), "2 descriptors, 1 expected", false},
		{"unknown field in index.json", mutate(func(e []tarEntry) []tarEntry {
			return editEntry(t, e, IndexFile, `"schemaVersion": 2`, `"schemaVersion": 2, "x-evil": true`)
		}), "unknown field", false},
		{"extra annotation in index.json", mutate(func(e []tarEntry) []tarEntry {
			return editEntry(t, e, IndexFile, `"org.opencontainers.image.ref.name"`, `"io.containerd.image.name": "evil", "org.opencontainers.image.ref.name"`)
		}), "expected only", false},
		{"tag edited in ferry.json (valid JSON)", mutate(func(e []tarEntry) []tarEntry {
			return editEntry(t, e, RecordFile, `"v1"`, `"v3"`)
		}), "index.json does not match ferry.json", false},
		{"ferry.sig of the wrong size", mutate(func(e []tarEntry) []tarEntry {
			i := find(e, RecordFile)
			sig := tarEntry{hdr: tar.Header{Name: SigFile, Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("not a signature")}
			return append(e[:i+1], append([]tarEntry{sig}, e[i+1:]...)...)
		}), "ferry.sig is 15 bytes", false},
		{"entry hidden after the end-of-archive marker", append(buildTar(t, good),
			buildTar(t, []tarEntry{{hdr: tar.Header{Name: "../../evil", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")}})...),
			`entry "../../evil" is hidden after the end-of-archive marker`, false},
		{"data after the end-of-archive marker", append(buildTar(t, good), append(make([]byte, 700), 'x')...),
			"data after the end-of-archive marker", false},
		{"truncated last header", func() []byte {
			b := buildTar(t, good)
			evil := buildTar(t, []tarEntry{{hdr: tar.Header{Name: "proj.txt", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")}})
			return append(b[:len(b)-1024], evil[:300]...)
		}(), "reading tar header at offset", false},
		{"a tar that is not a bundle", buildTar(t, []tarEntry{{hdr: tar.Header{Name: "notes.txt", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("x")}}),
			"unexpected entry", false},
		{"not a tar", []byte("this is not a tar file at all, just text that goes on for a while ............................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................."), "not a ferry bundle: not a tar archive", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			work := t.TempDir()
			path := filepath.Join(work, "hostile.tar")
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			before := listTree(t, filepath.Dir(work))
			r, err := Open(path)
			if !c.verify {
				if err == nil {
					r.Close()
					t.Fatalf("Open accepted a hostile bundle")
				}
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotBundle) {
					t.Errorf("error %v wraps neither ErrCorrupt, ErrUnsupported nor ErrNotBundle", err)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Errorf("error %q does not say %q", err, c.want)
				}
			} else {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				rep, verr := Verify(context.Background(), r, 2, nil)
				r.Close()
				if !errors.Is(verr, ErrVerify) || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0].Message, c.want) {
					t.Fatalf("Verify: %v, problems %v", verr, rep.Problems)
				}
			}
			if after := listTree(t, filepath.Dir(work)); after != before {
				t.Errorf("files changed next to the bundle:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func listTree(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			names = append(names, p)
		}
		return nil
	})
	return strings.Join(names, "\n")
}

// TestTruncatedAnywhere cuts a good bundle at every 512-byte boundary and
// at odd offsets: Open or Verify must fail, never succeed or panic.
func TestTruncatedAnywhere(t *testing.T) {
	good, _ := validBundle(t)
	data := buildTar(t, good)
	dir := t.TempDir()
	for cut := int64(0); cut < int64(len(data))-1024; cut += 173 {
		path := filepath.Join(dir, "cut.tar")
		if err := os.WriteFile(path, data[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path)
		if err != nil {
			continue
		}
		_, verr := Verify(context.Background(), r, 1, nil)
		r.Close()
		if verr == nil {
			t.Fatalf("a bundle cut at %d of %d bytes opened and verified", cut, len(data))
		}
	}
}

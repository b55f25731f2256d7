package test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// hostileEntry is one entry of a bundle rebuilt by a test.
type hostileEntry struct {
	hdr  tar.Header
	data []byte
}

// bundleEntries reads every entry of the bundle at path, in order.
func bundleEntries(t *testing.T, path string) []hostileEntry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []hostileEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, hostileEntry{*h, b})
	}
}

// tarOf writes entries as a tar, with its end-of-archive marker.
func tarOf(t *testing.T, entries ...hostileEntry) []byte {
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
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The header pre-scan's premise: import reads every tar header of the
// bundle before its first request, so a hostile or cut entry after all of
// a good bundle's images stops the import before anything is written.
// Each variant below is the good bundle with one bad tail: exit 2, a
// message naming the entry, and not one request to the target (no ping,
// no upload, no manifest, no tag). The good bundle, rebuilt the same way,
// imports.
func TestImportHostileTailPushesNothing(t *testing.T) {
	bin := harness.BuildFerry(t)
	good, _, _ := impExport(t, bin)
	entries := bundleEntries(t, good)
	dst := harness.StartRegistry(t, harness.RegistryOptions{TLS: true, Users: map[string]string{robot: robotPW}})
	front, counter := harness.CountingProxy(t, dst)
	dir := t.TempDir()

	reg := func(name string) hostileEntry {
		return hostileEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("pwned\n")}
	}
	link := func(name string, typ byte, to string) hostileEntry {
		return hostileEntry{hdr: tar.Header{Name: name, Typeflag: typ, Linkname: to, Mode: 0o777}}
	}
	rebuilt := tarOf(t, entries...)
	cutHeader := append(append([]byte(nil), rebuilt[:len(rebuilt)-1024]...), tarOf(t, reg("blobs/sha256/late"))[:300]...)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"traversal", tarOf(t, append(entries, reg("../../evil"))...), `entry "../../evil" escapes the bundle`},
		{"symlink", tarOf(t, append(entries, link("evil", tar.TypeSymlink, "/etc/passwd"))...), `entry "evil" is a symbolic link`},
		{"hardlink", tarOf(t, append(entries, link("evil", tar.TypeLink, "ferry.json"))...), `entry "evil" is a hard link`},
		{"truncated last header", cutHeader, "reading tar header at offset"},
		{"entry after the end marker", append(append([]byte(nil), rebuilt...), tarOf(t, reg("../../evil"))...),
			`entry "../../evil" is hidden after the end-of-archive marker`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".tar")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			counter.Reset()
			_, stderr, code := runImport(t, bin, robotPW+"\n", path, "--to", front.Host+"/mirror", "--ca-cert", dst.CAFile,
				"--username", robot, "--password-stdin")
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want 2 and %q\nstderr:\n%s", code, tc.want, stderr)
			}
			if n := counter.Total(); n != 0 {
				t.Errorf("%d requests reached the target (%s); want none", n, counter)
			}
		})
	}

	// The control: the same rebuild without a bad tail imports.
	path := filepath.Join(dir, "good.tar")
	if err := os.WriteFile(path, rebuilt, 0o600); err != nil {
		t.Fatal(err)
	}
	counter.Reset()
	sum, stderr, code := runImport(t, bin, robotPW+"\n", path, "--to", front.Host+"/mirror", "--ca-cert", dst.CAFile,
		"--username", robot, "--password-stdin")
	if code != 0 || sum.Pushed == 0 || counter.Count("PUT", harness.KindManifest) == 0 {
		t.Fatalf("the rebuilt good bundle: exit %d, %d pushed, requests %s\n%s", code, sum.Pushed, counter, stderr)
	}
}

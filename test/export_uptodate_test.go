//go:build linux

package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/test/harness"
)

type upToDateSummary struct {
	UpToDate        bool   `json:"upToDate"`
	SHA256          string `json:"sha256"`
	BytesDownloaded int64  `json:"bytesDownloaded"`
	BytesFromCache  int64  `json:"bytesFromCache"`
	Images          []struct {
		Target string `json:"target"`
	} `json:"images"`
}

func exportUpToDate(t *testing.T, bin string, args ...string) upToDateSummary {
	t.Helper()
	return runExport[upToDateSummary](t, bin, args...)
}

// fileID is what "untouched" means: the same inode, size, mtime and ctime.
type fileID struct {
	ino          uint64
	size         int64
	mtime, ctime int64
}

func idOf(t *testing.T, path string) fileID {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	return fileID{st.Ino, info.Size(), info.ModTime().UnixNano(), st.Ctim.Nano()}
}

// TestExportUpToDate: an unchanged re-export onto an output that already
// holds the bundle writes nothing (same inode, mtime and ctime; "up to
// date"; no blob GET), with and without --cache. A damaged output (a byte
// flipped inside a layer, its mtime put back), a missing checksum file or a
// changed selection are never taken as up to date: the bundle is written
// anew, atomically (a new inode), and verifies.
func TestExportUpToDate(t *testing.T) {
	bin := harness.BuildFerry(t)
	reg := harness.StartRegistry(t, harness.RegistryOptions{})
	harness.Seed(t, reg, "", harness.SmallSet())
	proxy, counter := harness.CountingProxy(t, reg)
	dir := t.TempDir()
	base := "tasks:\n  - name: t\n    source:\n      registry: " + proxy.Host + "\n    mappings:\n      - from: spaceone/console\n        tags: ['regex: 1\\.11\\..*']\n"
	mapping := writeFile(t, filepath.Join(dir, "m.yaml"), base)
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "b.tar")
	first := exportUpToDate(t, bin, "-f", mapping, "-o", out, "--cache", cache)
	if first.UpToDate || first.BytesDownloaded == 0 {
		t.Fatalf("first export: %+v", first)
	}
	before := idOf(t, out)
	sidecar := mustRead(t, out+".sha256")

	// Unchanged, with the cache: nothing written, nothing fetched.
	time.Sleep(20 * time.Millisecond) // a rewrite would show in the times
	counter.Reset()
	stdout, stderr, code := harness.Run(t, bin, "export", "-q", "-f", mapping, "-o", out, "--cache", cache)
	if code != 0 || !strings.Contains(stdout, "up to date") {
		t.Fatalf("unchanged re-export: exit %d, want \"up to date\"\n%s\n%s", code, stdout, stderr)
	}
	if got := idOf(t, out); got != before {
		t.Errorf("the output was touched: %+v, was %+v", got, before)
	}
	if got := counter.Count("GET", harness.KindBlob); got != 0 {
		t.Errorf("%d blob GETs for an up-to-date output", got)
	}
	if string(mustRead(t, out+".sha256")) != string(sidecar) {
		t.Error("the checksum file changed")
	}
	// Unchanged, without the cache: the file is hashed again, not written.
	if s := exportUpToDate(t, bin, "-f", mapping, "-o", out); !s.UpToDate || s.SHA256 != first.SHA256 {
		t.Errorf("unchanged re-export without --cache: %+v", s)
	}
	if got := idOf(t, out); got != before {
		t.Errorf("the output was touched without --cache: %+v, was %+v", got, before)
	}

	// Damaged inside a layer, the modification time put back.
	info, _ := os.Stat(out)
	flipMiddle(t, out, info.Size())
	if err := os.Chtimes(out, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--cache", cache}, nil} {
		damaged := idOf(t, out)
		s := exportUpToDate(t, bin, append([]string{"-f", mapping, "-o", out}, args...)...)
		if s.UpToDate {
			t.Fatalf("a damaged output (args %v) was taken as up to date", args)
		}
		if idOf(t, out).ino == damaged.ino {
			t.Errorf("the damaged output (args %v) was not replaced by a new file", args)
		}
		verifyOK(t, bin, out)
		flipMiddle(t, out, info.Size()) // damaged again, for the run without the cache
	}

	// Missing checksum file: written anew.
	exportUpToDate(t, bin, "-f", mapping, "-o", out, "--cache", cache)
	_ = os.Remove(out + ".sha256")
	if s := exportUpToDate(t, bin, "-f", mapping, "-o", out, "--cache", cache); s.UpToDate {
		t.Error("an output without its .sha256 was taken as up to date")
	}
	verifyOK(t, bin, out)

	// Changed selection: written anew, atomically, from the cache (no GET).
	old := idOf(t, out)
	narrower := writeFile(t, filepath.Join(dir, "m2.yaml"), strings.Replace(base, `1\.11\..*`, `1\.11\.[05]`, 1))
	counter.Reset()
	s := exportUpToDate(t, bin, "-f", narrower, "-o", out, "--cache", cache)
	if s.UpToDate || len(s.Images) == 0 || len(s.Images) >= len(first.Images) {
		t.Fatalf("changed selection: up to date %v, %d images (first had %d)", s.UpToDate, len(s.Images), len(first.Images))
	}
	if idOf(t, out).ino == old.ino {
		t.Error("a changed selection was not written as a new file")
	}
	if got := counter.Count("GET", harness.KindBlob); got != 0 || s.BytesFromCache == 0 {
		t.Errorf("changed selection: %d blob GETs, %d bytes from the cache; want 0 GETs, all from the cache", got, s.BytesFromCache)
	}
	verifyOK(t, bin, out)
}

func verifyOK(t *testing.T, bin, path string) {
	t.Helper()
	if stdout, stderr, code := harness.Run(t, bin, "verify", path); code != 0 {
		t.Fatalf("verify %s: exit %d\n%s\n%s", path, code, stdout, stderr)
	}
}

// flipMiddle flips the byte in the middle of the file (inside a layer for
// these bundles: the largest blob sits in the middle).
func flipMiddle(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, size/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, size/2); err != nil {
		t.Fatal(err)
	}
}

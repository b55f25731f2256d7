package export

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// The cache keeps no second copy of the layers it has seen: the bundles
// ferry wrote are the copy. For each bundle it wrote (the last one per
// output path, the newest maxBundles in all) the cache keeps a record under
// bundles/: the file's identity (device, inode, size, modification and
// change time) taken right after its bytes were verified and its SHA-256
// computed, and where each blob's bytes start. A later export copies a
// blob from such a bundle in the kernel, without hashing it again, only
// while the file's identity is unchanged: any write to the file, a
// truncation, a rename over it or a replacement changes it, and the record
// is then dropped. What the identity cannot see is a change below the file
// system (a bit flipped on the medium): ferry import checks every blob's
// digest before it pushes, and ferry verify finds it.
//
// An export that fails or is killed leaves its unfinished bundle beside
// the output (.NAME.tmp-*); a note under partial/ names it. The next
// export takes from it the blobs whose bytes have the right digest (it
// hashes them: they were never recorded as complete), and removes it once
// it has written its own bundle.
const maxBundles = 8

// bundleRecord is one bundle the cache can read blobs back from.
type bundleRecord struct {
	Path   string              `json:"path"` // absolute
	Stamp  fileStamp           `json:"stamp"`
	SHA256 string              `json:"sha256"`
	Blobs  map[string][2]int64 `json:"blobs"` // hex → offset, size
}

// fileStamp is a file's identity: it changes with any write to the file.
type fileStamp struct {
	Dev, Ino uint64
	Size     int64
	MtimeNs  int64 `json:"mtimeNs"`
	CtimeNs  int64 `json:"ctimeNs"`
}

// partialNote names an unfinished bundle file an export left.
type partialNote struct {
	Output string `json:"output"` // absolute
	File   string `json:"file"`
	note   string // the note's own path (not stored)
}

// blobSource is a place a blob's bytes can be copied from.
type blobSource struct {
	path    string
	off     int64
	trusted bool      // verified when recorded, file unchanged since: no re-hash
	stamp   fileStamp // the file's identity when trusted
	forget  func()
}

func keyOf(path string) string {
	s := sha256.Sum256([]byte(path))
	return hex.EncodeToString(s[:12])
}

// loadBundles reads the bundle records and the partial notes.
func (c *Cache) loadBundles() {
	c.byBlob = map[string][]blobSource{}
	entries, _ := os.ReadDir(filepath.Join(c.dir, "bundles"))
	for _, e := range entries {
		var rec bundleRecord
		if !readJSON(filepath.Join(c.dir, "bundles", e.Name()), &rec) {
			continue
		}
		info, err := os.Stat(rec.Path)
		if st, ok := stampOf(info); err != nil || !ok || st != rec.Stamp {
			_ = os.Remove(filepath.Join(c.dir, "bundles", e.Name())) // replaced or changed
			continue
		}
		c.records = append(c.records, &rec)
		for hexpart, loc := range rec.Blobs {
			c.byBlob[hexpart] = append(c.byBlob[hexpart], blobSource{path: rec.Path, off: loc[0], trusted: true, stamp: rec.Stamp})
		}
	}
	for _, p := range c.partials() {
		blobs, err := bundle.PartialBlobs(p.File)
		if err != nil {
			continue // gone, or still being created: cleanPartials decides
		}
		for h, loc := range blobs {
			c.byBlob[h.Hex] = append(c.byBlob[h.Hex], blobSource{path: p.File, off: loc[0]})
		}
	}
}

// sources lists where the bytes of h (of size bytes) may be copied from:
// recorded bundles first, then unfinished ones, then a whole-file entry.
func (c *Cache) sources(h v1.Hash, size int64) []blobSource {
	if c == nil || h.Algorithm != "sha256" {
		return nil
	}
	out := append([]blobSource(nil), c.byBlob[h.Hex]...)
	if st, err := os.Stat(c.path(h)); err == nil {
		if st.Size() != size {
			c.forget(h)
		} else {
			out = append(out, blobSource{path: c.path(h), forget: func() { c.forget(h) }})
		}
	}
	return out
}

// recordBundle records the bundle res describes as a source of blobs
// (a single file only), replacing the record of its path.
func (c *Cache) recordBundle(res *bundle.Result) {
	if c == nil || res == nil {
		return
	}
	abs, err := filepath.Abs(res.Path)
	if err != nil {
		return
	}
	name := filepath.Join(c.dir, "bundles", keyOf(abs)+".json")
	info, err := os.Stat(abs)
	st, ok := stampOf(info)
	if err != nil || !ok || len(res.Volumes) != 1 || res.SHA256 == "" {
		_ = os.Remove(name)
		return
	}
	rec := bundleRecord{Path: abs, Stamp: st, SHA256: res.SHA256, Blobs: map[string][2]int64{}}
	for _, b := range res.Record.Blobs {
		h, err := bundle.ParseDigest(b.Digest)
		if off, ok := res.BlobOffsets[h]; err == nil && ok {
			rec.Blobs[h.Hex] = [2]int64{off, b.Size}
		}
	}
	data, err := json.Marshal(&rec)
	if err == nil {
		_ = atomicfile.WriteFile(name, data, 0o644)
	}
	c.pruneBundles()
}

// pruneBundles keeps the newest maxBundles records.
func (c *Cache) pruneBundles() {
	entries, _ := os.ReadDir(filepath.Join(c.dir, "bundles"))
	type aged struct {
		name string
		mod  int64
	}
	var all []aged
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			all = append(all, aged{e.Name(), info.ModTime().UnixNano()})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod > all[j].mod })
	for i := maxBundles; i < len(all); i++ {
		_ = os.Remove(filepath.Join(c.dir, "bundles", all[i].name))
	}
}

// trust vouches for the output at path when the cache recorded it with
// this identity and this checksum.
func (c *Cache) trust(path string) bundle.Trust {
	if c == nil {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	return func(info os.FileInfo, sum string) bool {
		st, ok := stampOf(info)
		for _, rec := range c.records {
			if ok && rec.Path == abs && rec.Stamp == st && rec.SHA256 == sum {
				return true
			}
		}
		return false
	}
}

// notePartial notes the temporary files of the bundle being written for
// output, so that a later run can take blobs from them.
func (c *Cache) notePartial(output string, files []string) {
	if c == nil || len(files) != 1 {
		return // volumes: not resumed from
	}
	abs, err1 := filepath.Abs(output)
	file, err2 := filepath.Abs(files[0])
	if err1 != nil || err2 != nil {
		return
	}
	data, err := json.Marshal(partialNote{Output: abs, File: file})
	if err == nil {
		_ = atomicfile.WriteFile(filepath.Join(c.dir, "partial", keyOf(file)+".json"), data, 0o644)
	}
}

// cleanPartials removes the unfinished bundles earlier runs left, with
// their notes, once this run (which holds the lock of output) wrote its
// bundle: those of output are stale; those of another output only when no
// export of it runs (its lock is free).
func (c *Cache) cleanPartials(output string) {
	if c == nil {
		return
	}
	abs, _ := filepath.Abs(output)
	for _, p := range c.partials() {
		if p.Output != abs {
			unlock, err := lockOutput(p.Output)
			if err != nil {
				continue // that export is running
			}
			defer unlock()
		}
		if strings.Contains(filepath.Base(p.File), ".tmp-") {
			_ = os.Remove(p.File)
		}
		_ = os.Remove(p.note)
	}
}

// partials reads the notes of unfinished bundles; a note that cannot be
// read is removed.
func (c *Cache) partials() []partialNote {
	var out []partialNote
	entries, _ := os.ReadDir(filepath.Join(c.dir, "partial"))
	for _, e := range entries {
		note := filepath.Join(c.dir, "partial", e.Name())
		var p partialNote
		if !readJSON(note, &p) {
			_ = os.Remove(note)
			continue
		}
		p.note = note
		out = append(out, p)
	}
	return out
}

func readJSON(path string, v any) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return json.Unmarshal(data, v) == nil
}

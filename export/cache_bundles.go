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
// A bundle written as volumes (--split) is recorded the same way, one
// identity per volume: a blob is copied from the volumes that hold its
// bytes (a stretch of each, in order), each stretch only while its volume
// has its recorded identity. Any volume that is missing or changed drops
// the whole record. Such a record never vouches for an output:
// bundle.Current writes volumes again anyway.
//
// A recorded blob's size is its true size (its bytes had its digest): a
// new manifest that gives the same digest another size is refused as the
// registry would refuse it (recordedSizeMismatch), never copied for the
// size it claims.
//
// An export that fails or is killed leaves its unfinished bundle beside
// the output (.NAME.tmp-*); a note under partial/ names it. The next
// export takes from it the blobs whose bytes have the right digest (it
// hashes them: they were never recorded as complete), and removes it once
// it has written its own bundle.
const maxBundles = 8

// bundleRecord is one bundle the cache can read blobs back from.
type bundleRecord struct {
	Path   string              `json:"path"` // absolute (the output; for volumes, their base name)
	Stamp  fileStamp           `json:"stamp"`
	SHA256 string              `json:"sha256"`
	Blobs  map[string][2]int64 `json:"blobs"` // hex → offset, size (from the first byte of the bundle)
	// Volumes, for a bundle written in volumes: each file with its identity
	// and where it starts in the bundle. Path and Stamp are then unused.
	Volumes []volumeRecord `json:"volumes,omitempty"`
}

// volumeRecord is one volume of a recorded bundle.
type volumeRecord struct {
	Path  string    `json:"path"` // absolute
	Stamp fileStamp `json:"stamp"`
	Start int64     `json:"start"` // offset of its first byte in the bundle
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

// blobSource is a place a blob's bytes can be copied from: one stretch of
// one file, or, for a recorded bundle in volumes, consecutive stretches of
// consecutive volumes.
type blobSource struct {
	parts   []sourcePart
	size    int64 // the blob's size as the record or the partial's header gives it
	trusted bool  // verified when recorded, files unchanged since: no re-hash
	forget  func()
}

// sourcePart is n bytes of the file at path from offset off; stamp is the
// file's identity when the source is trusted.
type sourcePart struct {
	path   string
	off, n int64
	stamp  fileStamp
}

// where names the source in messages.
func (s blobSource) where() string {
	if len(s.parts) == 0 {
		return "(nowhere)"
	}
	return s.parts[0].path
}

// oneFile is a source of size bytes at off in the file at path.
func oneFile(path string, off, size int64) blobSource {
	return blobSource{parts: []sourcePart{{path: path, off: off, n: size}}, size: size}
}

func keyOf(path string) string {
	s := sha256.Sum256([]byte(path))
	return hex.EncodeToString(s[:12])
}

// loadBundles reads the bundle records and the partial notes. A record
// whose file (or any of whose volumes) is gone, moved, or changed is
// removed: its bytes are no longer those ferry verified.
func (c *Cache) loadBundles() {
	c.byBlob = map[string][]blobSource{}
	entries, _ := os.ReadDir(filepath.Join(c.dir, "bundles"))
	for _, e := range entries {
		name := filepath.Join(c.dir, "bundles", e.Name())
		var rec bundleRecord
		if !readJSON(name, &rec) {
			continue
		}
		if !rec.unchanged() {
			_ = os.Remove(name) // deleted, moved, replaced or changed
			continue
		}
		c.records = append(c.records, &rec)
		for hexpart, loc := range rec.Blobs {
			if src, ok := rec.source(loc); ok {
				c.byBlob[hexpart] = append(c.byBlob[hexpart], src)
			}
		}
	}
	for _, p := range c.partials() {
		blobs, err := bundle.PartialBlobs(p.File)
		if err != nil {
			continue // gone, or still being created: cleanPartials decides
		}
		for h, loc := range blobs {
			c.byBlob[h.Hex] = append(c.byBlob[h.Hex], oneFile(p.File, loc[0], loc[1]))
		}
	}
}

// unchanged reports whether every file of the record still has the
// identity it had when recorded.
func (rec *bundleRecord) unchanged() bool {
	if len(rec.Volumes) == 0 {
		return sameStamp(rec.Path, rec.Stamp)
	}
	for _, v := range rec.Volumes {
		if !sameStamp(v.Path, v.Stamp) {
			return false
		}
	}
	return true
}

// sameStamp reports whether the file at path exists and has identity want.
func sameStamp(path string, want fileStamp) bool {
	info, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := stampOf(info)
	return ok && st == want
}

// source is where the blob at loc (offset, size in the bundle) can be
// copied from: the file itself, or the volumes that hold it, in order.
func (rec *bundleRecord) source(loc [2]int64) (blobSource, bool) {
	src := blobSource{size: loc[1], trusted: true}
	if len(rec.Volumes) == 0 {
		src.parts = []sourcePart{{path: rec.Path, off: loc[0], n: loc[1], stamp: rec.Stamp}}
		return src, true
	}
	off, end := loc[0], loc[0]+loc[1]
	for _, v := range rec.Volumes {
		vend := v.Start + v.Stamp.Size
		if off >= end || off < v.Start || off >= vend {
			continue
		}
		n := min(end, vend) - off
		src.parts = append(src.parts, sourcePart{path: v.Path, off: off - v.Start, n: n, stamp: v.Stamp})
		off += n
	}
	return src, off == end // false: the volumes end before the blob does
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
			src := oneFile(c.path(h), 0, size)
			src.forget = func() { c.forget(h) }
			out = append(out, src)
		}
	}
	return out
}

// recordBundle records the bundle res describes (one file or its
// volumes) as a source of blobs, replacing the record of its path. seen,
// when not nil, is the output file as it was when its bytes were hashed
// (an output found up to date): the record is then written only if the
// file still has that identity.
//
// Premise: res describes bytes ferry has just verified (written by
// bundle.Write, which checked every blob's digest and computed the
// checksum, or hashed again by upToDate), and nothing wrote to the files
// between that and the stat below. Any later write changes the identity
// recorded here, and the record is then dropped.
func (c *Cache) recordBundle(res *bundle.Result, seen os.FileInfo) {
	if c == nil || res == nil || res.Record == nil {
		return
	}
	abs, err := filepath.Abs(res.Path)
	if err != nil {
		return
	}
	name := filepath.Join(c.dir, "bundles", keyOf(abs)+".json")
	rec, ok := newRecord(abs, res)
	if ok && seen != nil {
		st, sok := stampOf(seen)
		ok = sok && len(rec.Volumes) == 0 && st == rec.Stamp
	}
	if !ok {
		_ = os.Remove(name)
		return
	}
	for _, b := range res.Record.Blobs {
		h, err := bundle.ParseDigest(b.Digest)
		if off, ok := res.BlobOffsets[h]; err == nil && ok {
			rec.Blobs[h.Hex] = [2]int64{off, b.Size}
		}
	}
	data, err := json.Marshal(rec)
	if err == nil {
		_ = atomicfile.WriteFile(name, data, 0o644)
	}
	c.pruneBundles()
}

// newRecord takes the identity of the bundle's file, or of each of its
// volumes; ok is false when one cannot be taken (a file is missing, or no
// identity can be read on this system).
func newRecord(abs string, res *bundle.Result) (*bundleRecord, bool) {
	rec := &bundleRecord{Path: abs, SHA256: res.SHA256, Blobs: map[string][2]int64{}}
	if len(res.Volumes) <= 1 {
		info, err := os.Stat(abs)
		if err != nil || res.SHA256 == "" {
			return nil, false
		}
		st, ok := stampOf(info)
		rec.Stamp = st
		return rec, ok
	}
	var start int64
	for _, v := range res.Volumes {
		vabs, err := filepath.Abs(v)
		if err != nil {
			return nil, false
		}
		info, err := os.Stat(vabs)
		if err != nil {
			return nil, false
		}
		st, ok := stampOf(info)
		if !ok {
			return nil, false
		}
		rec.Volumes = append(rec.Volumes, volumeRecord{Path: vabs, Stamp: st, Start: start})
		start += st.Size
	}
	return rec, true
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
//
// Premise: the record was written by ferry right after it verified every
// byte of the file (recordBundle); a file whose device, inode, size,
// modification and change time are all unchanged since was not written
// to. Records of volumes never vouch (a bundle in volumes is written
// again).
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
			if ok && len(rec.Volumes) == 0 && rec.Path == abs && rec.Stamp == st && rec.SHA256 == sum {
				return true
			}
		}
		return false
	}
}

// notePartial notes the temporary files of the bundle being written for
// output, so that a later run can take blobs from them (the first volume
// of a bundle in volumes is read like a single file; a later volume does
// not start with a tar header and yields nothing) and removes them.
// Premise: none; what is taken from them is hashed first (copyFromCache).
func (c *Cache) notePartial(output string, files []string) {
	if c == nil {
		return
	}
	abs, err := filepath.Abs(output)
	if err != nil {
		return
	}
	for _, f := range files {
		file, err := filepath.Abs(f)
		if err != nil {
			continue
		}
		data, err := json.Marshal(partialNote{Output: abs, File: file})
		if err == nil {
			_ = atomicfile.WriteFile(filepath.Join(c.dir, "partial", keyOf(file)+".json"), data, 0o644)
		}
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

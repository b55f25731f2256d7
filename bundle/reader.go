package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/smallfile"
)

// span is where an entry's content lies in the file.
type span struct {
	offset int64 // start of content
	size   int64
	order  int // position in the tar
}

// Reader reads a bundle in place. It indexes the tar's headers once; blobs
// are served as sections of the file, never extracted.
type Reader struct {
	path    string
	vs      *volumeSet
	volumes []string
	size    int64
	entries map[string]span
	record  *Record
	index   *v1.IndexManifest
	blobs   map[v1.Hash]int64 // digest → size, from the tar
	base    map[v1.Hash]int64 // blobs a delta leaves to its base

	recordRaw []byte // ferry.json as stored (the signed bytes)
	sig       []byte // ferry.sig, nil when unsigned
}

// Open indexes the bundle at path and checks its structure: allowed entry
// names and types only, no duplicates, every size within the file, valid
// oci-layout, index.json and ferry.json that agree with the blobs present.
// It does not hash blobs; see Verify.
func Open(path string) (*Reader, error) {
	vs, names, err := openVolumes(path)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("bundle %s: %w", path, err)
		}
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	r, err := newReader(path, vs)
	if err != nil {
		_ = vs.close()
		if errors.Is(err, ErrNotBundle) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	r.volumes = names
	return r, nil
}

func newReader(path string, vs *volumeSet) (*Reader, error) {
	if err := checkCompressed(vs); err != nil {
		return nil, err
	}
	entries, err := scan(vs, vs.total)
	if err != nil {
		return nil, err
	}
	r := &Reader{path: path, vs: vs, size: vs.total, entries: entries, blobs: map[v1.Hash]int64{}}
	for name, sp := range entries {
		if hexpart, ok := strings.CutPrefix(name, BlobPrefix); ok {
			h, err := ParseDigest("sha256:" + hexpart)
			if err != nil {
				return nil, fmt.Errorf("entry %q: %w", name, err)
			}
			r.blobs[h] = sp.size
		}
	}
	if err := r.loadMetadata(); err != nil {
		return nil, err
	}
	return r, nil
}

// compressions are the magic numbers of compressed files that people make
// of tars; a bundle is never compressed.
var compressions = []struct {
	name  string
	magic string
}{
	{"gzip", "\x1f\x8b"},
	{"zstd", "\x28\xb5\x2f\xfd"},
	{"xz", "\xfd7zXZ\x00"},
	{"bzip2", "BZh"},
}

// checkCompressed refuses a compressed bundle at once: its tar headers
// would be garbage, and decompressing it could expand without bound.
func checkCompressed(r io.ReaderAt) error {
	var head [6]byte
	n, _ := r.ReadAt(head[:], 0)
	for _, c := range compressions {
		if n >= len(c.magic) && string(head[:len(c.magic)]) == c.magic {
			if c.name == "bzip2" && (n < 4 || head[3] < '1' || head[3] > '9') {
				continue
			}
			return fmt.Errorf("%w: bundle is compressed (%s); ferry bundles are plain tar: decompress it first (and mind its size)", ErrUnsupported, c.name)
		}
	}
	return nil
}

// scan reads every tar header and records where content lies, refusing
// anything a ferry bundle cannot hold.
//
// Pre-scan premise: Open reads every header, from the first to the
// end-of-archive marker and the zeros after it, before any content is
// read or any request is sent (headers are 512-byte blocks found by
// seeking past contents, so this costs one small read per entry), and
// the tar cannot change while it is open. Only content (digests) is then
// checked as it streams. A hostile entry anywhere, even after the last
// image's blobs or hidden after the end-of-archive marker, or a truncated
// last header, so stops an import before its first request.
// TestHostileBundles and test.TestImportHostileTailPushesNothing
// break it with a trailing ../../evil entry, a trailing link, a cut last
// header and an entry after the marker.
func scan(f io.ReaderAt, size int64) (map[string]span, error) {
	sr := io.NewSectionReader(f, 0, size)
	tr := tar.NewReader(sr)
	entries := map[string]span{}
	var end int64 // end of the last entry's padded content
	for i := 0; ; i++ {
		hdrStart, _ := sr.Seek(0, io.SeekCurrent)
		hdr, err := tr.Next()
		if hdrStart == 0 && err != nil {
			return nil, notTar(size, err)
		}
		if err == io.EOF {
			// A complete archive ends with two zero blocks; without them the
			// file was cut at an entry boundary.
			if size-end < 1024 {
				return nil, fmt.Errorf("%w: the end-of-archive marker is missing after offset %d (truncated?)", ErrCorrupt, end)
			}
			if err := zerosAfter(f, end+1024, size); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading tar header at offset %d: %v", ErrCorrupt, hdrStart, err)
		}
		name, err := checkEntry(hdr)
		if err != nil {
			return nil, err
		}
		start, _ := sr.Seek(0, io.SeekCurrent)
		if name == "" { // an allowed directory entry
			end = start
			continue
		}
		if hdr.Size < 0 || hdr.Size > size-start {
			return nil, fmt.Errorf("%w: entry %q claims %d bytes but the file ends %d bytes later (truncated?)", ErrCorrupt, clip(name), hdr.Size, size-start)
		}
		if _, dup := entries[name]; dup {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrCorrupt, clip(name))
		}
		entries[name] = span{offset: start, size: hdr.Size, order: i}
		end = start + (hdr.Size+511)&^511
	}
	if _, ok := entries[LayoutFile]; !ok {
		if _, ok := entries[RecordFile]; !ok {
			return nil, fmt.Errorf("%w: a tar without %s or %s", ErrNotBundle, LayoutFile, RecordFile)
		}
	}
	return entries, nil
}

// notTar describes a file whose first tar header cannot be read.
func notTar(size int64, err error) error {
	switch {
	case size == 0:
		return fmt.Errorf("%w: the file is empty", ErrNotBundle)
	case size < 512:
		return fmt.Errorf("%w: %d bytes, shorter than one tar header", ErrNotBundle, size)
	}
	return fmt.Errorf("%w: not a tar archive (%v)", ErrNotBundle, err)
}

// zerosAfter checks that the file holds only zeros from off to size: tar
// writers pad after the end-of-archive marker with zeros, and anything
// else there is an entry that tar tools reading past the marker (GNU tar
// --ignore-zeros) would extract.
func zerosAfter(f io.ReaderAt, off, size int64) error {
	buf := make([]byte, 64<<10)
	for off < size {
		n := int(min(int64(len(buf)), size-off))
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return fmt.Errorf("%w: reading after the end-of-archive marker at offset %d: %v", ErrCorrupt, off, err)
		}
		for i, b := range buf[:n] {
			if b != 0 {
				at := off + int64(i)
				var hdr [512]byte
				blk := at &^ 511
				if _, err := f.ReadAt(hdr[:], blk); err == nil {
					if h, err := tar.NewReader(bytes.NewReader(hdr[:])).Next(); err == nil {
						return fmt.Errorf("%w: entry %q is hidden after the end-of-archive marker (offset %d)", ErrCorrupt, clip(h.Name), blk)
					}
				}
				return fmt.Errorf("%w: data after the end-of-archive marker at offset %d", ErrCorrupt, at)
			}
		}
		off += int64(n)
	}
	return nil
}

// checkEntry validates one header and returns the entry's name, or "" for
// a directory entry that may be skipped.
func checkEntry(hdr *tar.Header) (string, error) {
	name := strings.TrimPrefix(hdr.Name, "./")
	q := clip(hdr.Name)
	switch {
	case strings.HasPrefix(hdr.Name, "/"):
		return "", fmt.Errorf("%w: entry %q has an absolute path", ErrCorrupt, q)
	case name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") || strings.HasSuffix(name, "/.."):
		return "", fmt.Errorf("%w: entry %q escapes the bundle (path traversal)", ErrCorrupt, q)
	case strings.ContainsRune(name, 0) || strings.Contains(name, "\\"):
		return "", fmt.Errorf("%w: entry %q has a forbidden character", ErrCorrupt, q)
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		switch strings.TrimSuffix(name, "/") {
		case "", ".", "blobs", "blobs/sha256":
			return "", nil
		}
		return "", fmt.Errorf("%w: unexpected directory %q", ErrCorrupt, q)
	case tar.TypeSymlink:
		return "", fmt.Errorf("%w: entry %q is a symbolic link (to %q); bundles hold regular files only", ErrCorrupt, q, clip(hdr.Linkname))
	case tar.TypeLink:
		return "", fmt.Errorf("%w: entry %q is a hard link (to %q); bundles hold regular files only", ErrCorrupt, q, clip(hdr.Linkname))
	case tar.TypeChar, tar.TypeBlock:
		return "", fmt.Errorf("%w: entry %q is a device node; bundles hold regular files only", ErrCorrupt, q)
	case tar.TypeFifo:
		return "", fmt.Errorf("%w: entry %q is a FIFO; bundles hold regular files only", ErrCorrupt, q)
	default:
		return "", fmt.Errorf("%w: entry %q has unsupported type %q", ErrCorrupt, q, hdr.Typeflag)
	}
	switch name {
	case LayoutFile, IndexFile, RecordFile, SigFile, DockerManifestFile:
		return name, nil
	}
	if hexpart, ok := strings.CutPrefix(name, BlobPrefix); ok {
		if _, err := ParseDigest("sha256:" + hexpart); err != nil {
			return "", fmt.Errorf("entry %q: %w", q, err)
		}
		return name, nil
	}
	if strings.HasPrefix(name, "blobs/") {
		return "", fmt.Errorf("%w: entry %q: only sha256 blobs are supported", ErrUnsupported, q)
	}
	return "", fmt.Errorf("%w: unexpected entry %q", ErrCorrupt, q)
}

func (r *Reader) readEntry(name string, max int64) ([]byte, error) {
	sp, ok := r.entries[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s is missing", ErrCorrupt, name)
	}
	if sp.size > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrCorrupt, name, sp.size, max)
	}
	b := make([]byte, sp.size)
	if _, err := r.vs.ReadAt(b, sp.offset); err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrCorrupt, name, err)
	}
	return b, nil
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON document")
	}
	return nil
}

func (r *Reader) loadMetadata() error {
	lb, err := r.readEntry(LayoutFile, 4096)
	if err != nil {
		return err
	}
	var lay struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := strictUnmarshal(lb, &lay); err != nil || lay.Version == "" {
		return fmt.Errorf("%w: %s is not a valid OCI layout marker", ErrCorrupt, LayoutFile)
	}
	ib, err := r.readEntry(IndexFile, MaxMetadataSize)
	if err != nil {
		return err
	}
	idx, err := ParseIndex(ib)
	if err != nil {
		return err
	}
	rb, err := r.readEntry(RecordFile, MaxMetadataSize)
	if err != nil {
		return err
	}
	rec, err := ParseRecord(rb)
	if err != nil {
		return err
	}
	if err := r.loadSignature(); err != nil {
		return err
	}
	if err := r.checkRecordBlobs(rec); err != nil {
		return err
	}
	if err := r.checkManifests(rec, idx); err != nil {
		return err
	}
	if err := checkIndex(ib, rec); err != nil {
		return err
	}
	if err := r.checkDockerManifest(rec); err != nil {
		return err
	}
	r.record = rec
	r.recordRaw = rb
	r.index = idx
	return nil
}

// loadSignature reads signature.sig, when the bundle has one.
func (r *Reader) loadSignature() error {
	if _, signed := r.entries[SigFile]; !signed {
		return nil
	}
	sig, err := r.readEntry(SigFile, SignatureSize)
	if err != nil {
		return err
	}
	if len(sig) != SignatureSize {
		return fmt.Errorf("%w: %s is %d bytes; an Ed25519 signature is %d", ErrCorrupt, SigFile, len(sig), SignatureSize)
	}
	r.sig = sig
	return nil
}

// checkRecordBlobs checks that ferry.json and the tar agree on every blob,
// and records the blobs left to the base bundle.
func (r *Reader) checkRecordBlobs(rec *Record) error {
	listed := map[v1.Hash]bool{}
	for _, b := range rec.Blobs {
		h, err := ParseDigest(b.Digest)
		if err != nil {
			return fmt.Errorf("%s: blob: %w", RecordFile, err)
		}
		size, ok := r.blobs[h]
		if !ok {
			return fmt.Errorf("%w: blob %s is listed in %s but missing from the bundle", ErrCorrupt, h, RecordFile)
		}
		if size != b.Size {
			return fmt.Errorf("%w: blob %s is %d bytes in the bundle but %d in %s", ErrCorrupt, h, size, b.Size, RecordFile)
		}
		listed[h] = true
	}
	for h := range r.blobs {
		if !listed[h] {
			return fmt.Errorf("%w: stray blob %s is not listed in %s", ErrCorrupt, h, RecordFile)
		}
	}
	r.base = map[v1.Hash]int64{}
	for _, b := range rec.BaseBlobs {
		h, _ := ParseDigest(b.Digest) // checked by ParseRecord
		if _, stored := r.blobs[h]; stored {
			return fmt.Errorf("%w: blob %s is both stored and left to the base bundle", ErrCorrupt, h)
		}
		r.base[h] = b.Size
	}
	return nil
}

// checkManifests checks that every image of ferry.json and every entry of
// index.json names a manifest the bundle holds, with its size.
func (r *Reader) checkManifests(rec *Record, idx *v1.IndexManifest) error {
	for i, im := range rec.Images {
		h, err := ParseDigest(im.Digest)
		if err != nil {
			return fmt.Errorf("%s: image %d (%s): %w", RecordFile, i, clip(im.Source), err)
		}
		if _, ok := r.blobs[h]; !ok {
			return fmt.Errorf("%w: image %s:%s: manifest %s is missing from the bundle", ErrCorrupt, clip(im.Target), strings.Join(im.Tags, ","), h)
		}
	}
	for _, d := range idx.Manifests {
		if size, ok := r.blobs[d.Digest]; ok && size != d.Size {
			return fmt.Errorf("%w: %s gives %s size %d, the bundle holds %d bytes", ErrCorrupt, IndexFile, d.Digest, d.Size, size)
		} else if !ok {
			return fmt.Errorf("%w: %s references %s, which is missing from the bundle", ErrCorrupt, IndexFile, d.Digest)
		}
	}
	return nil
}

// expectedIndex is the index.json that rec implies: one descriptor per
// image and tag, in ferry.json's order, with the image's digest, media type,
// manifest size and ref.name TARGET:TAG. The writer writes exactly this.
func expectedIndex(rec *Record) *v1.IndexManifest {
	idx := &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	sizes := make(map[string]int64, len(rec.Blobs))
	for _, b := range rec.Blobs {
		sizes[b.Digest] = b.Size
	}
	for _, im := range rec.Images {
		d, _ := ParseDigest(im.Digest)
		for _, tag := range im.Tags {
			idx.Manifests = append(idx.Manifests, v1.Descriptor{
				MediaType:   types.MediaType(im.MediaType),
				Digest:      d,
				Size:        sizes[im.Digest],
				Annotations: map[string]string{RefNameAnnotation: im.Target + ":" + tag},
			})
		}
	}
	return idx
}

// checkIndex checks that index.json says exactly what ferry.json implies
// and nothing else (no unknown field, no extra descriptor or annotation).
// ferry.json's bytes are what a bundle's signature covers; this check makes
// the signature pin index.json, which tools other than ferry read.
func checkIndex(data []byte, rec *Record) error {
	var got v1.IndexManifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		return fmt.Errorf("%w: %s does not match %s: %v", ErrCorrupt, IndexFile, RecordFile, err)
	}
	want := expectedIndex(rec)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s does not match %s: %s", ErrCorrupt, IndexFile, RecordFile, fmt.Sprintf(format, args...))
	}
	switch {
	case got.SchemaVersion != want.SchemaVersion:
		return bad("schemaVersion %d", got.SchemaVersion)
	case got.MediaType != want.MediaType:
		return bad("mediaType %q", clip(string(got.MediaType)))
	case len(got.Annotations) != 0 || got.Subject != nil:
		return bad("the index has annotations or a subject")
	case len(got.Manifests) != len(want.Manifests):
		return bad("%d descriptors, %d expected (one per image tag)", len(got.Manifests), len(want.Manifests))
	}
	for i, g := range got.Manifests {
		w := want.Manifests[i]
		ref := w.Annotations[RefNameAnnotation]
		switch {
		case g.Annotations[RefNameAnnotation] != ref || len(g.Annotations) != 1:
			return bad("descriptor %d names %q, expected only %s %q", i, clip(g.Annotations[RefNameAnnotation]), RefNameAnnotation, ref)
		case g.Digest != w.Digest:
			return bad("%s has digest %s, expected %s", ref, g.Digest, w.Digest)
		case g.Size != w.Size:
			return bad("%s has size %d, expected %d", ref, g.Size, w.Size)
		case g.MediaType != w.MediaType:
			return bad("%s has media type %q, expected %q", ref, clip(string(g.MediaType)), w.MediaType)
		case g.Platform != nil || len(g.URLs) != 0 || len(g.Data) != 0 || g.ArtifactType != "":
			return bad("%s has fields ferry does not write (platform, urls, data or artifactType)", ref)
		}
	}
	return nil
}

// ReadRecord reads the ferry.json of a bundle, given the bundle (single
// file or volumes) or a ferry.json file. The bundle is checked as Open
// checks it; a bare ferry.json only as ParseRecord does.
func ReadRecord(path string) (*Record, error) {
	if strings.HasSuffix(path, ".json") {
		data, err := readFileLimited(path, MaxMetadataSize)
		if err != nil {
			return nil, err
		}
		return ParseRecord(data)
	}
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Record(), nil
}

func readFileLimited(path string, max int64) ([]byte, error) {
	data, err := smallfile.Read(path, max)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, path, max)
	}
	return data, err
}

// ParseIndex parses index.json strictly: one JSON document, sha256
// digests only.
func ParseIndex(data []byte) (*v1.IndexManifest, error) {
	var idx v1.IndexManifest
	if err := strictUnmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: %s is not valid: %v", ErrCorrupt, IndexFile, err)
	}
	for _, d := range idx.Manifests {
		if d.Digest.Algorithm != "sha256" || !names.IsSHA256Hex(d.Digest.Hex) {
			return nil, fmt.Errorf("%w: %s references digest %q", ErrUnsupported, IndexFile, clip(d.Digest.String()))
		}
		if d.Size < 0 {
			return nil, fmt.Errorf("%w: %s gives %s a negative size", ErrCorrupt, IndexFile, d.Digest)
		}
	}
	return &idx, nil
}

// ParseRecord parses ferry.json strictly: one JSON document, a known format
// version, well-formed digests and sizes.
func ParseRecord(data []byte) (*Record, error) {
	var rec Record
	if err := strictUnmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%w: %s is not valid JSON: %v", ErrCorrupt, RecordFile, err)
	}
	if rec.FormatVersion < 1 {
		return nil, fmt.Errorf("%w: %s has no format version", ErrCorrupt, RecordFile)
	}
	if rec.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%w: format version %d; this ferry reads up to %d: upgrade ferry", ErrUnsupported, rec.FormatVersion, FormatVersion)
	}
	if len(rec.BaseBlobs) > 0 && rec.Base == "" && len(rec.Have) == 0 {
		return nil, fmt.Errorf("%w: %s lists base blobs but names no base bundle or inventory", ErrCorrupt, RecordFile)
	}
	if err := checkHave(&rec); err != nil {
		return nil, err
	}
	for _, b := range append(append([]Blob(nil), rec.Blobs...), rec.BaseBlobs...) {
		if _, err := ParseDigest(b.Digest); err != nil {
			return nil, fmt.Errorf("%s: blob: %w", RecordFile, err)
		}
		if b.Size < 0 {
			return nil, fmt.Errorf("%w: %s gives blob %s a negative size", ErrCorrupt, RecordFile, clip(b.Digest))
		}
	}
	for _, bi := range rec.BaseImages {
		if _, err := ParseDigest(bi.Digest); err != nil {
			return nil, fmt.Errorf("%s: base image %s: %w", RecordFile, clip(bi.Target), err)
		}
	}
	for i, im := range rec.Images {
		if _, err := ParseDigest(im.Digest); err != nil {
			return nil, fmt.Errorf("%s: image %d (%s): %w", RecordFile, i, clip(im.Source), err)
		}
		if len(im.Tags) == 0 {
			return nil, fmt.Errorf("%w: %s: image %d (%s) has no tag", ErrCorrupt, RecordFile, i, clip(im.Source))
		}
		if !validTarget(im.Target) {
			return nil, fmt.Errorf("%w: %s: image %d has an invalid target path %q", ErrCorrupt, RecordFile, i, clip(im.Target))
		}
		for _, t := range im.Tags {
			if !validTag(t) {
				return nil, fmt.Errorf("%w: %s: image %s has an invalid tag %q", ErrCorrupt, RecordFile, clip(im.Target), clip(t))
			}
		}
	}
	return &rec, nil
}

// validTarget checks a repository path against the OCI distribution grammar.
func validTarget(s string) bool { return names.ValidRepository(s) }

// validTag checks a tag against the OCI distribution grammar.
func validTag(s string) bool { return names.ValidTag(s) }

// Path is the bundle's file name.
func (r *Reader) Path() string { return r.path }

// Size is the bundle file's size.
func (r *Reader) Size() int64 { return r.size }

// Record returns ferry.json.
func (r *Reader) Record() *Record { return r.record }

// Index returns index.json.
func (r *Reader) Index() *v1.IndexManifest { return r.index }

// Has reports whether the bundle holds blob h.
func (r *Reader) Has(h v1.Hash) bool { _, ok := r.blobs[h]; return ok }

// BlobSize returns the stored size of blob h.
func (r *Reader) BlobSize(h v1.Hash) (int64, bool) { s, ok := r.blobs[h]; return s, ok }

// Digests returns every blob in the bundle in tar order.
func (r *Reader) Digests() []v1.Hash {
	out := make([]v1.Hash, 0, len(r.blobs))
	for h := range r.blobs {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		return r.entries[BlobName(out[i])].order < r.entries[BlobName(out[j])].order
	})
	return out
}

// Section returns blob h's raw bytes, unverified.
func (r *Reader) Section(h v1.Hash) (*io.SectionReader, error) {
	sp, ok := r.entries[BlobName(h)]
	if !ok || h.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s: %w", h, ErrBlobNotFound)
	}
	return io.NewSectionReader(r.vs, sp.offset, sp.size), nil
}

// ErrBlobNotFound: the bundle does not hold the blob.
var ErrBlobNotFound = errors.New("not in the bundle")

// Blob opens blob h for reading. The reader checks the digest as the bytes
// pass: the read that reaches the end returns an error wrapping
// ErrDigestMismatch instead of io.EOF if the content is not what its name says.
func (r *Reader) Blob(h v1.Hash) (io.ReadCloser, error) {
	sr, err := r.Section(h)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(NewVerifier(sr, h, sr.Size())), nil
}

// ReadBlob reads a small blob (a manifest, a config) into memory, verified.
func (r *Reader) ReadBlob(h v1.Hash, max int64) ([]byte, error) {
	sr, err := r.Section(h)
	if err != nil {
		return nil, err
	}
	if sr.Size() > max {
		return nil, fmt.Errorf("%w: blob %s is %d bytes, more than the %d allowed here", ErrCorrupt, h, sr.Size(), max)
	}
	b := make([]byte, sr.Size())
	if _, err := io.ReadFull(sr, b); err != nil {
		return nil, fmt.Errorf("%w: reading blob %s: %v", ErrCorrupt, h, err)
	}
	if got := sha256Hex(b); got != h.Hex {
		return nil, fmt.Errorf("%w: blob %s: %w: content is sha256:%s", ErrCorrupt, h, ErrDigestMismatch, got)
	}
	return b, nil
}

// Manifest reads a manifest or index blob and its media type as declared.
func (r *Reader) Manifest(h v1.Hash) ([]byte, types.MediaType, error) {
	b, err := r.ReadBlob(h, MaxManifestSize)
	if err != nil {
		return nil, "", err
	}
	var s struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("%w: manifest %s is not valid JSON: %v", ErrCorrupt, h, err)
	}
	return b, types.MediaType(s.MediaType), nil
}

// Close closes the bundle's files.
func (r *Reader) Close() error { return r.vs.close() }

// Volumes returns the files the bundle was read from: one, or its volumes.
func (r *Reader) Volumes() []string { return r.volumes }

// Verifier is a reader that checks size and digest as bytes pass.
type Verifier struct {
	r    io.Reader
	want v1.Hash
	size int64
	n    int64
	h    hash.Hash

	checked bool
}

// NewVerifier wraps r, which must yield exactly size bytes hashing to want.
func NewVerifier(r io.Reader, want v1.Hash, size int64) *Verifier {
	return &Verifier{r: r, want: want, size: size, h: sha256.New()}
}

func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		return n, fmt.Errorf("%w: blob %s: more than its %d bytes", ErrCorrupt, v.want, v.size)
	}
	// Check on the read that completes the blob, so that a consumer that
	// stops at the known size still sees a mismatch.
	if v.n == v.size && !v.checked {
		v.checked = true
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("%w: blob %s: %w: content is sha256:%s", ErrCorrupt, v.want, ErrDigestMismatch, got)
		}
	}
	if err == io.EOF && v.n != v.size {
		return n, fmt.Errorf("%w: blob %s: %w: %d of %d bytes", ErrCorrupt, v.want, ErrShortBlob, v.n, v.size)
	}
	return n, err
}

// checkHave validates the inventories a bundle names (format version 2).
func checkHave(rec *Record) error {
	if len(rec.Have) > 0 && rec.FormatVersion < 2 {
		return fmt.Errorf("%w: %s names inventories but is format version %d", ErrCorrupt, RecordFile, rec.FormatVersion)
	}
	for _, h := range rec.Have {
		if !isHexID(h.ID) || !names.ValidHost(h.Registry) || (h.Prefix != "" && !validTarget(h.Prefix)) {
			return fmt.Errorf("%w: %s names an invalid inventory (id %q, registry %q, prefix %q)", ErrCorrupt, RecordFile, clip(h.ID), clip(h.Registry), clip(h.Prefix))
		}
		for _, r := range h.Repositories {
			if !validTarget(r) {
				return fmt.Errorf("%w: %s: inventory %s names an invalid repository %q", ErrCorrupt, RecordFile, h.ID, clip(r))
			}
		}
	}
	return nil
}

// isHexID reports whether s is 32 lower-case hex digits (an inventory id).
func isHexID(s string) bool {
	return len(s) == 32 && strings.Trim(s, "0123456789abcdef") == ""
}

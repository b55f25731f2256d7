package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-airgap/ferry/internal/ctxio"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrNotCurrent: the file at the output is not the bundle Write would
// write for the plan; the error says what differs.
var ErrNotCurrent = errors.New("existing bundle is not current")

// Trust tells Current whether the bytes of the file described by info are
// still those whose SHA-256 was sum when they were written (a cache that
// recorded the file's identity after writing it can tell). When it says
// no, or is nil, Current hashes the whole file again.
type Trust func(info os.FileInfo, sum string) bool

// Current reports whether the bundle at path is, byte for byte, what Write
// would write for plan with opts, so that it need not be written again. It
// returns the Result Write would have returned, or an error wrapping
// ErrNotCurrent that says what differs (or another error when the check
// itself failed, e.g. a cancelled context).
//
// What is checked: ferry.json, index.json, oci-layout and ferry.sig are the
// expected bytes (the same identity, id and creation time: the file's own
// creation time is kept unless SOURCE_DATE_EPOCH fixes another); every tar
// header is the expected one at its offset (the same blobs, in the same
// order, of the same sizes); every manifest and config stored in memory is
// the expected bytes; the file has the expected size; PATH.sha256 (and
// PATH.sig when signed) are what Write writes. The layers' bytes are
// covered by the sidecar's checksum: trust says whether the file is
// unchanged since that checksum was computed, else the file is read and
// hashed again (no byte is written either way).
//
// A bundle written as volumes (WithSplit) is never current: it is always
// written again.
func Current(ctx context.Context, path string, plan *Plan, trust Trust, opts ...WriteOption) (*Result, error) {
	o, err := newWriteOptions(opts)
	if err != nil {
		return nil, err
	}
	if o.split > 0 {
		return nil, fmt.Errorf("%w: a bundle in volumes is always written again", ErrNotCurrent)
	}
	if err := validatePlan(plan); err != nil {
		return nil, err
	}
	plan = canonicalPlan(plan)
	info, err := os.Stat(path)
	if err != nil || !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: no bundle file at %s", ErrNotCurrent, path)
	}
	rec, err := ReadRecord(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCurrent, err)
	}
	created := rec.Created
	if _, fixed, _ := SourceDateEpoch(); fixed {
		created = o.now().UTC().Truncate(time.Second)
	}
	entries, total, err := layout(plan, created, o)
	if err != nil {
		return nil, err
	}
	if info.Size() != total {
		return nil, fmt.Errorf("%w: %s is %d bytes, the selection makes %d", ErrNotCurrent, path, info.Size(), total)
	}
	if err := sameEntries(path, entries, total); err != nil {
		return nil, err
	}
	sum, sig, err := checkSidecars(path, entries)
	if err != nil {
		return nil, err
	}
	if trust == nil || !trust(info, sum) {
		got, err := hashFile(ctx, path)
		if err != nil {
			return nil, err
		}
		if got != sum {
			return nil, fmt.Errorf("%w: %s has SHA-256 %s, its %s says %s", ErrNotCurrent, path, got, filepath.Base(path)+".sha256", sum)
		}
	}
	tb := &tempBundle{names: []string{path}, total: total, sums: []string{sum}, sig: sig, offsets: map[v1.Hash]int64{}}
	for _, e := range entries {
		if e.blob != nil {
			tb.offsets[e.blob.Digest] = e.dataOffset()
		}
	}
	return describeResult(path, tb, plan, created, o), nil
}

// sameEntries compares every tar header and every in-memory content of
// entries with the bytes at their offsets in the file at path, and checks
// that the archive ends with its two zero blocks.
func sameEntries(path string, entries []*entry, total int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotCurrent, err)
	}
	defer f.Close()
	var buf []byte
	same := func(want []byte, off int64) bool {
		if cap(buf) < len(want) {
			buf = make([]byte, len(want))
		}
		got := buf[:len(want)]
		_, err := f.ReadAt(got, off)
		return err == nil && bytes.Equal(got, want)
	}
	for _, e := range entries {
		if !same(e.header, e.offset) {
			return fmt.Errorf("%w: entry %s differs (another selection, blob or version)", ErrNotCurrent, e.name)
		}
		if e.data != nil && !same(e.data, e.dataOffset()) {
			return fmt.Errorf("%w: the content of %s differs", ErrNotCurrent, e.name)
		}
	}
	if !same(make([]byte, 1024), total-1024) {
		return fmt.Errorf("%w: the archive's end is damaged", ErrNotCurrent)
	}
	return nil
}

// checkSidecars reads PATH.sha256, which must be the one line Write
// writes, and checks PATH.sig against the signature entry. It returns the
// recorded checksum and the signature.
func checkSidecars(path string, entries []*entry) (string, []byte, error) {
	data, err := readFileLimited(path+".sha256", 4096)
	if err != nil {
		return "", nil, fmt.Errorf("%w: no checksum file: %v", ErrNotCurrent, err)
	}
	line := string(data)
	const hexLen = 64
	if len(line) < hexLen || line[hexLen:] != "  "+filepath.Base(path)+"\n" {
		return "", nil, fmt.Errorf("%w: %s.sha256 is not the checksum line of %s", ErrNotCurrent, filepath.Base(path), filepath.Base(path))
	}
	sum := line[:hexLen]
	if _, err := hex.DecodeString(sum); err != nil {
		return "", nil, fmt.Errorf("%w: %s.sha256 holds no SHA-256", ErrNotCurrent, filepath.Base(path))
	}
	var sig []byte
	for _, e := range entries {
		if e.name == SigFile {
			sig = e.data
		}
	}
	got, err := os.ReadFile(path + ".sig")
	switch {
	case sig == nil && err == nil:
		return "", nil, fmt.Errorf("%w: %s.sig is left from a signed bundle", ErrNotCurrent, filepath.Base(path))
	case sig != nil && (err != nil || string(got) != base64.StdEncoding.EncodeToString(sig)+"\n"):
		return "", nil, fmt.Errorf("%w: %s.sig is missing or differs", ErrNotCurrent, filepath.Base(path))
	}
	return sum, sig, nil
}

// hashFile reads the whole file and returns its SHA-256.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotCurrent, err)
	}
	defer f.Close()
	h := sha256.New()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	if _, err := io.CopyBuffer(h, ctxio.Reader(ctx, f), *bp); err != nil {
		return "", fmt.Errorf("checksumming %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// PartialBlobs lists the blob entries of a bundle file that Write left
// unfinished (WithKeepPartial): where each blob's bytes would start, and
// its size. Every header is written before any blob, so the list is
// complete, but a blob's bytes may be missing or incomplete: a caller must
// check the digest of what it reads. It works on a single-file bundle (or
// the first volume only).
func PartialBlobs(path string) (map[v1.Hash][2]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	spans, err := scan(f, st.Size())
	if err != nil {
		return nil, err
	}
	out := map[v1.Hash][2]int64{}
	for name, sp := range spans {
		if hexpart, ok := strings.CutPrefix(name, BlobPrefix); ok {
			if h, err := ParseDigest("sha256:" + hexpart); err == nil {
				out[h] = [2]int64{sp.offset, sp.size}
			}
		}
	}
	return out, nil
}

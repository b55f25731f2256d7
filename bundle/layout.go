package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// entry is one tar entry at a fixed place in the output.
type entry struct {
	name   string
	header []byte // tar header block(s), PAX records included
	offset int64  // where the header starts
	size   int64
	data   []byte       // in-memory content, or nil
	blob   *PlannedBlob // streamed content, or nil

	written atomic.Int64 // streamed bytes in place so far
	flushed atomic.Int64 // of those, how many the kernel was told to write out
	done    atomic.Bool  // all bytes in place and verified
}

func (e *entry) dataOffset() int64 { return e.offset + int64(len(e.header)) }

func padded(n int64) int64 { return (n + 511) &^ 511 }

// layout computes every entry and its offset. The whole file is a pure
// function of the plan, the creation time and the id.
func layout(plan *Plan, created time.Time, o *writeOptions) ([]*entry, int64, error) {
	rec := buildRecord(plan, created, o)
	recJSON, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, 0, err
	}
	recJSON = append(recJSON, '\n')
	// index.json is what ferry.json implies, and nothing else: a reader
	// checks that, so a signature over ferry.json pins index.json too.
	idxJSON, err := json.MarshalIndent(expectedIndex(rec), "", "  ")
	if err != nil {
		return nil, 0, err
	}
	entries := []*entry{
		{name: LayoutFile, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: IndexFile, data: append(idxJSON, '\n')},
		{name: RecordFile, data: recJSON},
	}
	if o.signer != nil {
		sig, err := sign(o.signer, recJSON)
		if err != nil {
			return nil, 0, err
		}
		entries = append(entries, &entry{name: SigFile, data: sig})
	}
	// manifest.json (docker load) follows ferry.json: what ferry.json and
	// the plan's manifests imply, so equal plans give equal bytes.
	dm, _, err := dockerManifest(rec, newPlanSource(plan))
	if err != nil {
		return nil, 0, err
	}
	if dm != nil {
		entries = append(entries, &entry{name: DockerManifestFile, data: dm})
	}
	blobs := make([]*PlannedBlob, len(plan.Blobs))
	for i := range plan.Blobs {
		blobs[i] = &plan.Blobs[i]
	}
	sort.SliceStable(blobs, func(i, j int) bool { return blobs[i].Kind < blobs[j].Kind })
	for _, b := range blobs {
		e := &entry{name: BlobName(b.Digest), size: b.Size, blob: b}
		if b.Data != nil {
			if int64(len(b.Data)) != b.Size {
				return nil, 0, fmt.Errorf("blob %s: %d bytes in memory, %d planned", b.Digest, len(b.Data), b.Size)
			}
			e.data = b.Data
		}
		entries = append(entries, e)
	}
	var off int64
	for _, e := range entries {
		if e.blob == nil {
			e.size = int64(len(e.data))
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     e.name,
			Size:     e.size,
			Mode:     0o644,
			ModTime:  created,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("tar header for %s: %w", e.name, err)
		}
		e.header = buf.Bytes()
		e.offset = off
		off += int64(len(e.header)) + padded(e.size)
	}
	return entries, off + 1024, nil // two zero blocks end the archive
}

func buildRecord(plan *Plan, created time.Time, o *writeOptions) *Record {
	rec := &Record{
		FormatVersion:  FormatVersion,
		FerryVersion:   o.ferryVersion,
		Created:        created,
		ID:             o.id,
		Base:           plan.Base,
		Images:         make([]Image, 0, len(plan.Images)),
		Blobs:          make([]Blob, 0, len(plan.Blobs)),
		BaseBlobs:      plan.BaseBlobs,
		BaseImages:     plan.BaseImages,
		Have:           plan.Have,
		DockerPlatform: o.dockerPlatform,
	}
	rec.FormatVersion = formatVersionOf(rec)
	sizes := make(map[v1.Hash]int64, len(plan.Blobs))
	for _, b := range plan.BaseBlobs {
		if h, err := ParseDigest(b.Digest); err == nil {
			sizes[h] = b.Size
		}
	}
	for _, b := range plan.Blobs {
		sizes[b.Digest] = b.Size
		rec.Blobs = append(rec.Blobs, Blob{Digest: b.Digest.String(), Size: b.Size, MediaType: string(b.MediaType)})
	}
	for _, pi := range plan.Images {
		im := pi.Image
		im.Size = 0
		seen := map[v1.Hash]bool{}
		for _, h := range pi.Blobs {
			if !seen[h] {
				seen[h] = true
				im.Size += sizes[h]
			}
		}
		im.Tags = append([]string(nil), im.Tags...)
		rec.Images = append(rec.Images, im)
	}
	if rec.ID == "" {
		rec.ID = contentID(rec)
	}
	return rec
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Package bundle reads and writes ferry bundles: one POSIX tar holding an OCI
// image layout (oci-layout, index.json, blobs/sha256/...) plus ferry.json, the
// bundle's own record of what is inside and where each image must go.
//
// The package knows nothing about registries or credentials. A writer is
// given a Plan (every image and every blob, with sizes known in advance) and a
// way to open each blob; a reader indexes the tar once and serves blobs by
// offset without extracting anything.
package bundle

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferry-airgap/ferry/internal/names"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FormatVersion is the greatest version of ferry.json this package reads
// and writes. Readers refuse a bundle with a greater version. A bundle is
// written as version 1 unless it uses a field of version 2 (Have), so that
// an older ferry reads every bundle it can understand and says "upgrade
// ferry" about the others.
const FormatVersion = 2

// formatVersionOf is the version rec needs.
func formatVersionOf(rec *Record) int {
	if len(rec.Have) > 0 {
		return 2
	}
	return 1
}

// Entry names inside a bundle.
const (
	LayoutFile = "oci-layout"
	IndexFile  = "index.json"
	RecordFile = "ferry.json"
	// SigFile holds the raw 64-byte Ed25519 signature of ferry.json's exact
	// bytes; it follows ferry.json in a signed bundle.
	SigFile    = "ferry.sig"
	BlobPrefix = "blobs/sha256/"
)

// RefNameAnnotation names an image inside an OCI layout; ferry sets it to
// TARGET_PATH:TAG so that skopeo's oci-archive:BUNDLE:TARGET_PATH:TAG works.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Limits that protect readers from hostile bundles.
const (
	// MaxMetadataSize bounds index.json, ferry.json and oci-layout.
	MaxMetadataSize = 64 << 20
	// MaxManifestSize bounds a manifest or index blob read into memory
	// (distribution's own limit is 4 MiB).
	MaxManifestSize = 4 << 20
)

// Sentinel errors. Every error this package returns about a bundle's content
// wraps one of these.
var (
	// ErrCorrupt: the bundle is damaged or hostile (bad tar, bad entry,
	// digest mismatch, missing blob).
	ErrCorrupt = errors.New("bundle is corrupt")
	// ErrNotBundle: the file is not a ferry bundle at all (not a tar, or
	// a tar without oci-layout and ferry.json): the wrong file was given.
	ErrNotBundle = errors.New("not a ferry bundle")
	// ErrUnsupported: a newer format version or an unknown digest algorithm.
	ErrUnsupported = errors.New("unsupported bundle")
	// ErrUnsigned: a trusted key was required but the bundle has no
	// signature.
	ErrUnsigned = errors.New("bundle is unsigned")
	// ErrBadSignature: the bundle's signature does not verify with any
	// trusted key.
	ErrBadSignature = errors.New("bundle signature does not verify")
)

// Record is ferry.json.
type Record struct {
	FormatVersion int       `json:"formatVersion"`
	FerryVersion  string    `json:"ferryVersion"`
	Created       time.Time `json:"created"`
	ID            string    `json:"id"`
	// Base is the id of the bundle this one is a delta of, if any.
	Base   string  `json:"base,omitempty"`
	Images []Image `json:"images"`
	Blobs  []Blob  `json:"blobs"`
	// BaseBlobs are the configs and layers the images need that a delta
	// leaves out because its base (or the base's own base) carried them:
	// the target registry must already hold them.
	BaseBlobs []Blob `json:"baseBlobs,omitempty"`
	// BaseImages are the images the base chain already carried and this
	// delta therefore leaves out (target, digest, tags), so that a delta of
	// a delta knows what the target holds.
	BaseImages []BaseImage `json:"baseImages,omitempty"`
	// Have names the inventories (ferry inventory) this bundle was cut
	// against (export --have): BaseImages and BaseBlobs are then what those
	// registries held, which the target must still hold. Format version 2.
	Have []HaveRef `json:"have,omitempty"`
	// DockerPlatform is the platform manifest.json (docker load) takes from
	// multi-platform indexes; empty when the bundle has no manifest.json
	// by choice (export --docker-platform none) or was written before it.
	DockerPlatform string `json:"dockerPlatform,omitempty"`
}

// HaveRef names one inventory a bundle was cut against.
type HaveRef struct {
	// ID is the inventory's content id.
	ID string `json:"id"`
	// Registry and Prefix are the inventory's REGISTRY[/PREFIX]: the one
	// target the bundle may be imported into on that site.
	Registry string    `json:"registry"`
	Prefix   string    `json:"prefix,omitempty"`
	Created  time.Time `json:"created"`
	// Repositories are the target paths in which the inventory saw the
	// blobs the bundle leaves out: where import looks for (and mounts) a
	// blob that an image's own repository lacks.
	Repositories []string `json:"repositories,omitempty"`
}

// Target returns REGISTRY[/PREFIX].
func (h HaveRef) Target() string {
	if h.Prefix == "" {
		return h.Registry
	}
	return h.Registry + "/" + h.Prefix
}

// BaseImage names an image carried by an earlier bundle of a delta chain.
type BaseImage struct {
	Target string   `json:"target"`
	Digest string   `json:"digest"`
	Tags   []string `json:"tags"`
}

// Image is one exported image: one manifest or index, with every tag it is
// exported under at one target path.
type Image struct {
	// Source is the fully qualified source reference the image was read
	// from, with its tag, e.g. docker.io/library/redis:7.2.
	Source string `json:"source"`
	// Target is the repository path the image must go to, without registry,
	// e.g. cloudforet/spaceone/redis.
	Target    string   `json:"target"`
	Tags      []string `json:"tags"`
	Digest    string   `json:"digest"`
	MediaType string   `json:"mediaType"`
	// Platforms lists os/arch[/variant] of the image (one for a plain
	// manifest whose config names it, several for an index).
	Platforms []string `json:"platforms,omitempty"`
	// Size is the total size of the image's distinct blobs, manifests included.
	Size int64 `json:"size"`
	// UpstreamDigest is set when ferry stored a rewritten index holding a
	// subset of the upstream platforms; it is the digest upstream served.
	UpstreamDigest string `json:"upstreamDigest,omitempty"`
	// Task names the mapping-file task the image came from.
	Task string `json:"task,omitempty"`
	// Kind is "helm-chart" for a Helm chart (an OCI artifact as helm push
	// stores it); empty for a container image.
	Kind string `json:"kind,omitempty"`
}

// Blob is one blob stored in the bundle.
type Blob struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType,omitempty"`
}

// ParseDigest parses a digest as the bundle stores it: sha256 with 64
// lower-case hex digits. Anything else (another algorithm, upper case, a
// path-like string) is refused, so a digest can safely become an entry name.
func ParseDigest(s string) (v1.Hash, error) {
	hex, err := names.ParseSHA256(s)
	switch {
	case errors.Is(err, names.ErrAlgorithm):
		return v1.Hash{}, fmt.Errorf("%w: %w", ErrUnsupported, err)
	case err != nil:
		return v1.Hash{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex}, nil
}

// BlobName is the tar entry name of a blob.
func BlobName(h v1.Hash) string { return BlobPrefix + h.Hex }

// clip shortens untrusted text before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

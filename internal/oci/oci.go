// Package oci knows the shapes of manifests and indexes, OCI and Docker
// alike: which media types they have and which descriptors they reference.
// It is shared by the resolver, the bundle and the pusher.
package oci

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Kind tells what a manifest-like document is.
type Kind int

// Kinds of documents.
const (
	KindUnknown Kind = iota
	KindManifest
	KindIndex
)

// KindOf classifies a media type.
func KindOf(mt types.MediaType) Kind {
	switch mt {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return KindManifest
	case types.OCIImageIndex, types.DockerManifestList:
		return KindIndex
	}
	return KindUnknown
}

// IsForeign reports layers that registries do not serve (Windows base layers
// with external URLs); they are referenced but never stored.
func IsForeign(d v1.Descriptor) bool {
	return d.MediaType == types.DockerForeignLayer || (len(d.URLs) > 0 && d.MediaType == types.OCIRestrictedLayer) ||
		(len(d.URLs) > 0 && d.MediaType == types.OCIUncompressedRestrictedLayer)
}

// sniff is the part of any manifest-like document needed to classify it.
type sniff struct {
	MediaType string          `json:"mediaType"`
	Manifests json.RawMessage `json:"manifests"`
	Config    json.RawMessage `json:"config"`
}

// MediaTypeOf returns the media type a document declares, falling back to
// its shape when the field is absent (OCI allows that).
func MediaTypeOf(data []byte) (types.MediaType, error) {
	var s sniff
	if err := json.Unmarshal(data, &s); err != nil {
		return "", fmt.Errorf("parsing manifest: %w", err)
	}
	if s.MediaType != "" {
		return types.MediaType(s.MediaType), nil
	}
	switch {
	case s.Manifests != nil:
		return types.OCIImageIndex, nil
	case s.Config != nil:
		return types.OCIManifestSchema1, nil
	}
	return "", fmt.Errorf("document is neither a manifest nor an index")
}

// Index parses an index or manifest list.
func Index(data []byte) (*v1.IndexManifest, error) {
	var im v1.IndexManifest
	if err := json.Unmarshal(data, &im); err != nil {
		return nil, fmt.Errorf("parsing index: %w", err)
	}
	return &im, nil
}

// Manifest parses an image manifest.
func Manifest(data []byte) (*v1.Manifest, error) {
	var m v1.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	return &m, nil
}

// Refs returns what a manifest-like document references: the children of an
// index, or the config and the stored layers of a manifest (foreign layers
// left out). mt is the media type the document was served or stored with.
func Refs(mt types.MediaType, data []byte) ([]v1.Descriptor, error) {
	switch KindOf(mt) {
	case KindIndex:
		im, err := Index(data)
		if err != nil {
			return nil, err
		}
		return im.Manifests, nil
	case KindManifest:
		m, err := Manifest(data)
		if err != nil {
			return nil, err
		}
		out := make([]v1.Descriptor, 0, 1+len(m.Layers))
		out = append(out, m.Config)
		for _, l := range m.Layers {
			if !IsForeign(l) {
				out = append(out, l)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported manifest media type %q", mt)
}

// PlatformString formats a platform as os/arch[/variant].
func PlatformString(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// DigestTag is the tag named after digest h (sha256-<hex>): the OCI
// referrers tag schema, cosign's prefix, and the tag ferry gives an image
// pinned by digest alone.
func DigestTag(h v1.Hash) string { return h.Algorithm + "-" + h.Hex }

package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	helmchart "helm.sh/helm/v3/pkg/chart"
)

// Blob is one blob of an artifact, in memory (charts are small).
type Blob struct {
	Descriptor v1.Descriptor
	Data       []byte
}

// Artifact is a chart as `helm push` stores it: an OCI image manifest whose
// config is the chart's metadata and whose first layer is the .tgz, byte
// for byte.
type Artifact struct {
	Manifest Blob // MediaType types.OCIManifestSchema1
	Config   Blob
	Layers   []Blob // the chart, and its provenance file when there is one
}

// manifest is the OCI image manifest as helm marshals it (ocispec.Manifest:
// no mediaType field, layers sorted by digest).
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// NewArtifact builds the OCI artifact for a chart archive tgz (already
// checked by Load, which gave meta), with prov (nil when the repository has
// none). created is the org.opencontainers.image.created annotation
// (RFC 3339); helm push uses the current time, ferry a fixed one so that
// the same chart gives the same digest.
func NewArtifact(tgz, prov []byte, meta *helmchart.Metadata, created string) (*Artifact, error) {
	config, err := json.Marshal(meta) // the bytes helm push writes
	if err != nil {
		return nil, fmt.Errorf("chart %s: encoding metadata: %w", meta.Name, err)
	}
	a := &Artifact{Config: newBlob(ConfigMediaType, config)}
	a.Layers = append(a.Layers, newBlob(ChartLayerMediaType, tgz))
	if prov != nil {
		a.Layers = append(a.Layers, newBlob(ProvLayerMediaType, prov))
	}
	sort.Slice(a.Layers, func(i, j int) bool {
		return a.Layers[i].Descriptor.Digest.String() < a.Layers[j].Descriptor.Digest.String()
	})
	m := manifest{SchemaVersion: 2, Config: desc(a.Config), Annotations: annotations(meta, created)}
	for _, l := range a.Layers {
		m.Layers = append(m.Layers, desc(l))
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("chart %s: encoding manifest: %w", meta.Name, err)
	}
	a.Manifest = newBlob(string(types.OCIManifestSchema1), data)
	return a, nil
}

func newBlob(mt string, data []byte) Blob {
	h, _, _ := v1.SHA256(bytes.NewReader(data))
	return Blob{Descriptor: v1.Descriptor{MediaType: types.MediaType(mt), Digest: h, Size: int64(len(data))}, Data: data}
}

func desc(b Blob) descriptor {
	return descriptor{MediaType: string(b.Descriptor.MediaType), Digest: b.Descriptor.Digest.String(), Size: b.Descriptor.Size}
}

// annotations are those helm push sets (pkg/registry/util.go
// generateOCIAnnotations): description, title, version, url, created,
// source, authors, then the chart's own annotations, which may override
// all but title and version.
func annotations(meta *helmchart.Metadata, created string) map[string]string {
	out := map[string]string{}
	add := func(k, v string) {
		if strings.TrimSpace(v) != "" {
			out[k] = v
		}
	}
	add("org.opencontainers.image.description", meta.Description)
	add("org.opencontainers.image.title", meta.Name)
	add("org.opencontainers.image.version", meta.Version)
	add("org.opencontainers.image.url", meta.Home)
	add("org.opencontainers.image.created", created)
	if len(meta.Sources) > 0 {
		add("org.opencontainers.image.source", meta.Sources[0])
	}
	if len(meta.Maintainers) > 0 {
		var b strings.Builder
		for i, m := range meta.Maintainers {
			if m == nil {
				continue
			}
			b.WriteString(m.Name)
			if m.Email != "" {
				b.WriteString(" (" + m.Email + ")")
			}
			if i < len(meta.Maintainers)-1 {
				b.WriteString(", ")
			}
		}
		add("org.opencontainers.image.authors", b.String())
	}
	for k, v := range meta.Annotations {
		if k != "org.opencontainers.image.version" && k != "org.opencontainers.image.title" {
			out[k] = v
		}
	}
	return out
}

// ChartLayer returns the chart layer's descriptor of a manifest pulled from
// an OCI registry (helm's current or legacy layer media type).
func ChartLayer(manifestData []byte) (v1.Descriptor, error) {
	var m v1.Manifest
	if err := json.Unmarshal(manifestData, &m); err != nil {
		return v1.Descriptor{}, fmt.Errorf("parsing chart manifest: %w", err)
	}
	if m.Config.MediaType != ConfigMediaType {
		return v1.Descriptor{}, fmt.Errorf("%w: config media type is %q, not a Helm chart's %q", ErrBadChart, m.Config.MediaType, ConfigMediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType == ChartLayerMediaType || l.MediaType == "application/tar+gzip" {
			return l, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w: the manifest has no chart layer (%s)", ErrBadChart, ChartLayerMediaType)
}

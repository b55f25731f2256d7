// Package chart fetches Helm charts, checks them, turns them into the OCI
// artifact `helm push` makes, and renders them to find the images they use.
//
// It uses Helm's own packages (helm.sh/helm/v3: chart loader, chartutil,
// engine) so that what ferry loads and renders is what `helm install` would.
// HTTP goes through the http.RoundTripper the caller gives (ferry's one
// registry transport: TLS, --ca-cert, retries); the package knows nothing of
// credentials' sources.
package chart

import (
	"bytes"
	"errors"
	"fmt"

	helmchart "helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// Media types of a Helm chart stored in an OCI registry, as helm push writes
// them (helm.sh/helm/v3/pkg/registry/constants.go).
const (
	ConfigMediaType     = "application/vnd.cncf.helm.config.v1+json"
	ChartLayerMediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	ProvLayerMediaType  = "application/vnd.cncf.helm.chart.provenance.v1.prov"
)

// Kind is the marker ferry records for a chart in a bundle (bundle.Image.Kind).
const Kind = "helm-chart"

// Limits for what a repository may send.
const (
	// MaxArchiveSize bounds a chart's .tgz; decompression is bounded by
	// Helm's loader (100 MiB in all, 5 MiB per file).
	MaxArchiveSize = 20 << 20
	// MaxIndexSize bounds a repository's index.yaml.
	MaxIndexSize = 64 << 20
	// MaxProvSize bounds a provenance file.
	MaxProvSize = 1 << 20
)

// Sentinel errors, tested with errors.Is.
var (
	// ErrBadChart: the archive is not a chart Helm would accept (traversal,
	// bomb, missing Chart.yaml, name or version other than announced).
	ErrBadChart = errors.New("invalid chart archive")
	// ErrDigestMismatch: the archive is not what the index says.
	ErrDigestMismatch = errors.New("chart digest does not match the repository index")
	// ErrNoVersion: no version of the chart satisfies the constraint.
	ErrNoVersion = errors.New("no matching chart version")
	// ErrRender: the chart failed to render.
	ErrRender = errors.New("chart does not render")
)

// Load reads a chart archive with Helm's loader, which refuses path
// traversal and bounds decompression, and checks that it is the chart
// name at version that was asked for.
func Load(tgz []byte, name, version string) (*helmchart.Chart, error) {
	if len(tgz) > MaxArchiveSize {
		return nil, fmt.Errorf("chart %s %s: %w: archive is %d bytes, more than %d", name, version, ErrBadChart, len(tgz), MaxArchiveSize)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w: %v", name, version, ErrBadChart, err)
	}
	if ch.Metadata == nil || ch.Metadata.Name != name || ch.Metadata.Version != version {
		got := "no Chart.yaml metadata"
		if ch.Metadata != nil {
			got = fmt.Sprintf("Chart.yaml says %s %s", ch.Metadata.Name, ch.Metadata.Version)
		}
		return nil, fmt.Errorf("chart %s %s: %w: %s", name, version, ErrBadChart, got)
	}
	return ch, nil
}

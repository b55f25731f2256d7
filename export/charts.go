package export

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	helmchart "helm.sh/helm/v3/pkg/chart"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/chart"
	"github.com/ferry-airgap/ferry/mapping"
)

// charts is what the mapping files' `charts:` entries add to an export:
// classic-repository charts built into OCI artifacts here, OCI charts
// resolved like images, and the images the charts render.
type charts struct {
	classic []*classicChart
	// oci are the chart artifacts read from OCI repositories; they join
	// the resolved images.
	oci      []*mapping.Image
	ociTasks map[string]bool
	// imageTasks select the images of charts with images: true.
	imageTasks []*mapping.Task
	uses       []chartUse
	warnings   []string
	// excluded says which rendered images exclude: patterns left out.
	excluded []string
}

type classicChart struct {
	spec    *mapping.Chart
	fetched *chart.Fetched
	art     *chart.Artifact
	chart   *helmchart.Chart
}

// chartUse is one image a chart renders, as a canonical source reference.
type chartUse struct {
	chart, version, template string
	image                    string // as written in the chart
	ref                      name.Reference
	carry                    bool // the chart has images: true
}

func chartTaskName(c *mapping.Chart) string { return "chart " + c.Name }

// prepareCharts fetches, checks and renders every chart before the images
// are resolved, so that the images charts need join the selection.
func (o *runner) prepareCharts(ctx context.Context, specs []*mapping.Chart, tasks []*mapping.Task) (*charts, error) {
	c := &charts{ociTasks: map[string]bool{}}
	var ociTasks []*mapping.Task
	for _, spec := range specs {
		if spec.IsOCI() {
			t, err := ociChartTask(spec)
			if err != nil {
				return nil, err
			}
			ociTasks = append(ociTasks, t)
			c.ociTasks[t.Name] = true
			continue
		}
		for _, v := range spec.Versions {
			cc, err := o.fetchClassic(ctx, spec, v)
			if err != nil {
				return nil, err
			}
			if err := c.render(spec, cc.chart); err != nil {
				return nil, err
			}
			c.classic = append(c.classic, cc)
		}
	}
	if len(ociTasks) > 0 {
		if err := o.resolveOCICharts(ctx, c, specs, ociTasks); err != nil {
			return nil, err
		}
	}
	for _, e := range c.excluded {
		o.Logger.Info(e)
	}
	c.imageTasks = chartImageTasks(c.uses, tasks)
	for _, t := range c.imageTasks {
		o.tasks[t.Name] = t // blob fetches find the task's credentials by name
	}
	return c, nil
}

// fetchClassic reads one chart version from a classic repository with the
// registry transport (TLS, --ca-cert, retries) and the repository host's
// credentials, and builds its OCI artifact.
func (o *runner) fetchClassic(ctx context.Context, spec *mapping.Chart, version string) (*classicChart, error) {
	repo := &chart.Repo{URL: spec.Repo, Transport: o.Client.Transport()}
	if u, err := urlHost(spec.Repo); err == nil {
		auth, err := o.Keychain.Resolve(u)
		if err != nil {
			return nil, fmt.Errorf("credentials for Helm repository %s: %w", spec.Repo, err)
		}
		if cfg, err := auth.Authorization(); err == nil && cfg != nil {
			repo.Username, repo.Password = cfg.Username, cfg.Password
		}
	}
	f, err := repo.Fetch(ctx, spec.Name, version)
	if err != nil {
		return nil, err
	}
	ch, err := chart.Load(f.Archive, f.Name, f.Version)
	if err != nil {
		return nil, err
	}
	art, err := chart.NewArtifact(f.Archive, f.Prov, ch.Metadata, createdAnnotation(f.Created))
	if err != nil {
		return nil, err
	}
	return &classicChart{spec: spec, fetched: f, art: art, chart: ch}, nil
}

// createdAnnotation is SOURCE_DATE_EPOCH when set, else the index's
// creation time of the chart version (so the same chart gives the same
// manifest digest run after run), else nothing.
func createdAnnotation(indexCreated time.Time) string {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC().Format(time.RFC3339)
		}
	}
	if indexCreated.IsZero() {
		return ""
	}
	return indexCreated.UTC().Format(time.RFC3339)
}

func urlHost(u string) (string, error) {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "", fmt.Errorf("no scheme in %q", u)
	}
	host, _, _ := strings.Cut(rest, "/")
	return host, nil
}

// render finds the images ch uses. A chart that fails to render is an
// error when its images are to be carried, else a warning.
func (c *charts) render(spec *mapping.Chart, ch *helmchart.Chart) error {
	c.addExtras(spec, ch)
	uses, err := chart.Render(ch, spec.Values)
	if err != nil {
		if spec.Images {
			return err
		}
		c.warnings = append(c.warnings, fmt.Sprintf("%v; its images are not checked", err))
		return nil
	}
	for _, u := range uses {
		if p := spec.Excludes(u.Image); p != nil {
			c.excluded = append(c.excluded, fmt.Sprintf("chart %s %s: template %s: image %s left out by exclude %q", ch.Name(), ch.Metadata.Version, u.Template, u.Image, p))
			continue
		}
		ref, err := name.ParseReference(u.Image)
		if err != nil {
			c.warnings = append(c.warnings, fmt.Sprintf("chart %s %s: template %s: image %q is not a valid reference", ch.Name(), ch.Metadata.Version, u.Template, u.Image))
			continue
		}
		c.uses = append(c.uses, chartUse{chart: ch.Name(), version: ch.Metadata.Version, template: u.Template, image: u.Image, ref: ref, carry: spec.Images})
	}
	return nil
}

// extraImagesTemplate stands for the template of an image a chart entry's
// extraImages: names.
const extraImagesTemplate = "extraImages"

// addExtras adds the images spec's extraImages: name (checked when the
// mapping was loaded) as uses of ch, always carried.
func (c *charts) addExtras(spec *mapping.Chart, ch *helmchart.Chart) {
	for _, e := range spec.ExtraImages {
		ref, err := name.ParseReference(e)
		if err != nil {
			c.warnings = append(c.warnings, fmt.Sprintf("chart %s %s: extra image %q is not a valid reference", ch.Name(), ch.Metadata.Version, e))
			continue
		}
		c.uses = append(c.uses, chartUse{chart: ch.Name(), version: ch.Metadata.Version, template: extraImagesTemplate, image: e, ref: ref, carry: true})
	}
}

// ociChartTask selects an OCI chart like an image: repository
// HOST/PATH/NAME, tags the versions (a range takes its highest match;
// helm writes + in versions as _ in tags).
func ociChartTask(spec *mapping.Chart) (*mapping.Task, error) {
	host, path, _ := strings.Cut(strings.TrimPrefix(spec.Repo, "oci://"), "/")
	from := strings.Trim(strings.Trim(path, "/")+"/"+spec.Name, "/")
	t := &mapping.Task{Name: chartTaskName(spec), File: spec.File, Line: spec.Line, Source: mapping.Endpoint{Registry: host}}
	for _, v := range spec.Versions {
		tags := []string{strings.ReplaceAll(v, "+", "_")}
		if !isExactVersion(v) {
			tags = []string{"semver: " + v, "keep: latest 1"}
		}
		t.Mappings = append(t.Mappings, &mapping.Mapping{From: from, To: spec.Target(), Tags: tags, Line: spec.Line})
	}
	return t, nil
}

// resolveOCICharts resolves the OCI charts through the image path, then
// reads each chart's layer to render it.
func (o *runner) resolveOCICharts(ctx context.Context, c *charts, specs []*mapping.Chart, tasks []*mapping.Task) error {
	for _, t := range tasks {
		o.tasks[t.Name] = t
	}
	res, err := mapping.Resolve(ctx, tasks, o.resolveOptions())
	if err != nil {
		return err
	}
	if len(res.Failures) > 0 {
		f := res.Failures[0]
		return fmt.Errorf("%w: %s: %v", ErrFailed, f.Source, f.Err)
	}
	bySpec := map[string]*mapping.Chart{}
	for _, s := range specs {
		bySpec[chartTaskName(s)] = s
	}
	for _, im := range res.Images {
		spec := bySpec[im.Task]
		layer, err := chart.ChartLayer(im.Root.Data)
		if err != nil {
			return fmt.Errorf("chart %s (%s): %w", spec.Name, im.Source, err)
		}
		tgz, err := o.fetchChartLayer(ctx, im, layer)
		if err != nil {
			return err
		}
		version := strings.ReplaceAll(im.Tag, "_", "+")
		ch, err := chart.Load(tgz, spec.Name, version)
		if err != nil {
			return fmt.Errorf("%s: %w", im.Source, err)
		}
		if err := c.render(spec, ch); err != nil {
			return err
		}
		c.oci = append(c.oci, im)
	}
	return nil
}

// fetchChartLayer reads a chart's .tgz from its repository, bounded and
// checked against its digest.
func (o *runner) fetchChartLayer(ctx context.Context, im *mapping.Image, d v1.Descriptor) ([]byte, error) {
	if d.Size > chart.MaxArchiveSize {
		return nil, fmt.Errorf("chart %s: %w: layer is %d bytes, more than %d", im.Source, chart.ErrBadChart, d.Size, chart.MaxArchiveSize)
	}
	r, err := o.src.Repo(ctx, im.Repository, o.tasks[im.Task])
	if err != nil {
		return nil, err
	}
	// FetchBlob checks size and digest and never writes more than d.Size.
	var buf memSink
	if err := r.FetchBlob(ctx, d.Digest, d.Size, &buf); err != nil {
		return nil, fmt.Errorf("chart %s: %w", im.Source, err)
	}
	return buf.Bytes(), nil
}

// addToPlan adds the classic charts to plan (their blobs once) and marks
// every chart image as a chart.
func (c *charts) addToPlan(plan *bundle.Plan) {
	have := map[v1.Hash]bool{}
	for _, b := range plan.Blobs {
		have[b.Digest] = true
	}
	add := func(b chart.Blob, kind bundle.BlobKind, origin string) {
		if !have[b.Descriptor.Digest] {
			have[b.Descriptor.Digest] = true
			plan.Blobs = append(plan.Blobs, bundle.PlannedBlob{Digest: b.Descriptor.Digest, Size: b.Descriptor.Size,
				MediaType: b.Descriptor.MediaType, Kind: kind, Data: b.Data, Origin: origin})
		}
	}
	planned := map[string]bool{}
	for i := range plan.Images {
		im := &plan.Images[i]
		if c.ociTasks[im.Task] {
			im.Kind = chart.Kind
		}
		planned[im.Target+"@"+im.Digest] = true
	}
	for _, cc := range c.classic {
		a, f := cc.art, cc.fetched
		digest := a.Manifest.Descriptor.Digest
		if planned[cc.spec.Target()+"@"+digest.String()] {
			continue
		}
		planned[cc.spec.Target()+"@"+digest.String()] = true
		add(a.Manifest, bundle.KindManifest, f.URL)
		add(a.Config, bundle.KindConfig, f.URL)
		pi := bundle.PlannedImage{Image: bundle.Image{
			Source: classicSource(cc.spec, f.Version), Target: cc.spec.Target(), Tags: []string{strings.ReplaceAll(f.Version, "+", "_")},
			Digest: digest.String(), MediaType: string(types.OCIManifestSchema1), Task: chartTaskName(cc.spec), Kind: chart.Kind,
		}, Blobs: []v1.Hash{digest, a.Config.Descriptor.Digest}}
		for _, l := range a.Layers {
			add(l, bundle.KindLayer, f.URL)
			pi.Blobs = append(pi.Blobs, l.Descriptor.Digest)
		}
		plan.Images = append(plan.Images, pi)
	}
}

// classicSource names a classic-repository chart like an image reference,
// HOST/PATH/NAME:VERSION (the repository URL without scheme), so that
// everything reading ferry.json's sources can parse it.
func classicSource(spec *mapping.Chart, version string) string {
	_, rest, _ := strings.Cut(spec.Repo, "://")
	return strings.TrimSuffix(rest, "/") + "/" + spec.Name + ":" + strings.ReplaceAll(version, "+", "_")
}

// count is how many chart versions the export carries.
func (c *charts) count() int { return len(c.classic) + len(c.oci) }

// warnUncarried names every rendered image that the resolved selection
// does not carry.
func (c *charts) warnUncarried(images []*mapping.Image) []string {
	carried := map[string]bool{}
	for _, im := range images {
		carried[im.Source] = true
		carried[im.Registry+"/"+im.Repository.RepositoryStr()+"@"+im.Root.Digest.String()] = true
		if im.UpstreamDigest.Hex != "" {
			carried[im.Registry+"/"+im.Repository.RepositoryStr()+"@"+im.UpstreamDigest.String()] = true
		}
	}
	out := append([]string(nil), c.warnings...)
	seen := map[string]bool{}
	for _, u := range c.uses {
		src := canonicalSource(u.ref)
		key := u.chart + u.version + u.template + src
		if carried[src] || seen[key] {
			continue
		}
		seen[key] = true
		hint := "add it to a task, or set images: true on the chart"
		if u.carry {
			hint = "it could not be resolved; see the failures"
		}
		where := "template " + u.template + " uses"
		if u.template == extraImagesTemplate {
			where = "extraImages: lists"
		}
		out = append(out, fmt.Sprintf("chart %s %s: %s image %s, which the bundle does not carry (%s)", u.chart, u.version, where, src, hint))
	}
	return out
}

// canonicalSource is a reference as mapping.Image.Source writes it:
// docker.io/library/redis:7.2 or REGISTRY/PATH@sha256:....
func canonicalSource(ref name.Reference) string {
	repo := mapping.CanonicalRegistry(ref.Context().RegistryStr()) + "/" + ref.Context().RepositoryStr()
	if d, ok := ref.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + ref.Identifier()
}

package serve

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/chart"
)

// chartKind marks a Helm chart in ferry.json.
const chartKind = chart.Kind

// ChartValues is the values-airgap.yaml fragment for one chart of the
// bundles: the image keys its values.yaml has, pointed at the mirror.
type ChartValues struct {
	Name, Version string
	Ref           string         // oci://HOST/PREFIX/TARGET of the chart
	Values        map[string]any // nested, as helm -f reads it
	Notes         []string       // images the chart names that the bundles do not carry, keys ferry cannot set
}

// imageLoc is where an upstream repository went on the mirror.
type imageLoc struct{ target string }

// chartValues reads each chart's values (through o.ChartArchive) and maps
// their image keys to the mirror.
func chartValues(recs []*bundle.Record, o MirrorOptions, host, prefix string) ([]ChartValues, error) {
	if o.ChartArchive == nil {
		return nil, nil
	}
	where := map[string]imageLoc{}
	for _, rec := range recs {
		for _, im := range rec.Images {
			if im.Kind == chartKind {
				continue
			}
			if up, repo, err := SourceRepo(im.Source); err == nil {
				where[up+"/"+repo] = imageLoc{target: joinPath(prefix, im.Target)}
			}
		}
	}
	var out []ChartValues
	for _, rec := range recs {
		for _, im := range rec.Images {
			if im.Kind != chartKind {
				continue
			}
			archive, err := o.ChartArchive(rec, im)
			if err != nil {
				return nil, fmt.Errorf("chart %s: %w", im.Target, err)
			}
			if archive == nil {
				continue
			}
			name := im.Target[strings.LastIndex(im.Target, "/")+1:]
			for _, tag := range im.Tags {
				version := strings.ReplaceAll(tag, "_", "+")
				ch, err := chart.Load(archive, name, version)
				if err != nil {
					return nil, err
				}
				cv := ChartValues{Name: name, Version: version, Ref: "oci://" + host + "/" + joinPath(prefix, im.Target), Values: map[string]any{}}
				w := &valueWalker{host: host, where: where, cv: &cv}
				w.walk(ch.Values, nil, 0)
				for _, dep := range ch.Dependencies() {
					w.walk(dep.Values, []string{dep.Name()}, 0)
				}
				w.globals(ch.Values)
				out = append(out, cv)
			}
		}
	}
	return out, nil
}

type valueWalker struct {
	host  string
	where map[string]imageLoc
	cv    *ChartValues
	leads map[string]bool // leading paths of the images set, for global registry keys
}

func (w *valueWalker) walk(v map[string]any, path []string, depth int) {
	if depth > 20 {
		return
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "global" && depth == 0 {
			continue
		}
		p := append(append([]string(nil), path...), k)
		switch x := v[k].(type) {
		case map[string]any:
			if k == "image" {
				w.imageMap(x, p)
				continue
			}
			w.walk(x, p, depth+1)
		case string:
			if k == "image" && x != "" {
				w.imageString(x, p)
			}
		}
	}
}

// imageMap handles image: {registry:, repository:, tag:}.
func (w *valueWalker) imageMap(m map[string]any, p []string) {
	repo, _ := m["repository"].(string)
	if repo == "" {
		return
	}
	reg, hasReg := m["registry"].(string)
	ref := repo
	if reg != "" {
		ref = reg + "/" + repo
	}
	up, r := upstreamRepo(ref)
	loc, ok := w.where[up+"/"+r]
	if !ok {
		w.cv.Notes = append(w.cv.Notes, fmt.Sprintf("%s: %s/%s is not in the bundles", strings.Join(p, "."), up, r))
		return
	}
	// The leading path that turns the repository value into the target.
	if lead, ok := leadingPath(repo, loc.target); ok && hasReg {
		w.set(append(p, "registry"), joinPath(w.host, lead))
		w.lead(lead)
		return
	}
	if hasReg {
		w.set(append(p, "registry"), w.host)
		w.set(append(p, "repository"), loc.target)
		return
	}
	w.set(append(p, "repository"), w.host+"/"+loc.target)
}

// imageString handles image: REF.
func (w *valueWalker) imageString(s string, p []string) {
	name, suffix := s, ""
	if i := strings.Index(name, "@"); i >= 0 {
		name, suffix = name[:i], name[i:]
	}
	if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i:], "/") {
		name, suffix = name[:i], name[i:]+suffix
	}
	up, r := upstreamRepo(name)
	loc, ok := w.where[up+"/"+r]
	if !ok {
		w.cv.Notes = append(w.cv.Notes, fmt.Sprintf("%s: %s is not in the bundles", strings.Join(p, "."), s))
		return
	}
	w.set(p, w.host+"/"+loc.target+suffix)
}

func (w *valueWalker) lead(l string) {
	if w.leads == nil {
		w.leads = map[string]bool{}
	}
	w.leads[l] = true
}

// globals sets global.imageRegistry / global.image.registry when the chart
// has them and every image keyed by registry shares one leading path.
func (w *valueWalker) globals(values map[string]any) {
	g, _ := values["global"].(map[string]any)
	if g == nil {
		return
	}
	_, flat := g["imageRegistry"]
	gi, _ := g["image"].(map[string]any)
	_, nested := gi["registry"]
	if !flat && !nested {
		return
	}
	if len(w.leads) != 1 {
		w.cv.Notes = append(w.cv.Notes, "global image registry: the chart has one, but its images do not share one path on the mirror; set the per-image keys above")
		return
	}
	var lead string
	for l := range w.leads {
		lead = l
	}
	if flat {
		w.set([]string{"global", "imageRegistry"}, joinPath(w.host, lead))
	}
	if nested {
		w.set([]string{"global", "image", "registry"}, joinPath(w.host, lead))
	}
}

func (w *valueWalker) set(p []string, value string) {
	m := w.cv.Values
	for _, k := range p[:len(p)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[p[len(p)-1]] = value
}

// upstreamRepo reads REGISTRY/PATH or a Docker Hub short name into the
// canonical upstream host and repository.
func upstreamRepo(ref string) (string, string) {
	first, rest, ok := strings.Cut(ref, "/")
	if !ok || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		ref = "docker.io/" + ref
	}
	up, repo, err := SourceRepo(ref)
	if err != nil {
		return first, rest
	}
	return up, repo
}

// writeChartValues prints one values-airgap.yaml fragment per chart.
func writeChartValues(p func(string, ...any), charts []ChartValues) {
	for _, cv := range charts {
		p("\n# ==== Helm: values-airgap.yaml for chart %s %s (keys found in its values.yaml) ====\n", cv.Name, cv.Version)
		p("# helm install %s %s --version %s -f values-airgap.yaml\n", cv.Name, cv.Ref, cv.Version)
		for _, n := range cv.Notes {
			p("# NOT set: %s\n", n)
		}
		if len(cv.Values) == 0 {
			p("# (no image keys in the chart's values point at images in the bundles)\n")
			continue
		}
		b, err := yaml.Marshal(cv.Values)
		if err != nil {
			p("# cannot encode: %v\n", err)
			continue
		}
		p("%s", b)
	}
}

// ChartArchiveFrom returns a MirrorOptions.ChartArchive that reads charts
// out of open bundles (a record without a reader, e.g. a bare ferry.json,
// or a delta whose chart layer its base carried, gives no archive).
func ChartArchiveFrom(readers map[*bundle.Record]*bundle.Reader) func(*bundle.Record, bundle.Image) ([]byte, error) {
	return func(rec *bundle.Record, im bundle.Image) ([]byte, error) {
		r := readers[rec]
		if r == nil {
			return nil, nil
		}
		h, err := bundle.ParseDigest(im.Digest)
		if err != nil {
			return nil, err
		}
		data, _, err := r.Manifest(h)
		if err != nil {
			return nil, err
		}
		layer, err := chart.ChartLayer(data)
		if err != nil {
			return nil, err
		}
		if !r.Has(layer.Digest) {
			return nil, nil
		}
		return r.ReadBlob(layer.Digest, chart.MaxArchiveSize)
	}
}

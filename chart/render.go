package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	helmchart "helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// ImageUse is one image reference found in a rendered chart.
type ImageUse struct {
	Image    string // as written in the rendered manifest
	Template string // e.g. spaceone/templates/deployment.yaml
}

// Render renders ch as `helm template` would with its default values
// merged with valueFiles (later files win), and returns every `image:`
// string of the rendered manifests (containers, init containers, ephemeral
// containers and any resource's image field), each image once per template,
// sorted.
func Render(ch *helmchart.Chart, valueFiles []string) ([]ImageUse, error) {
	what := fmt.Sprintf("chart %s %s", ch.Name(), ch.Metadata.Version)
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s: values file %s: %w", what, f, err)
		}
		mergeMaps(vals, v)
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return nil, fmt.Errorf("%s: %w: dependencies: %v", what, ErrRender, err)
	}
	opts := chartutil.ReleaseOptions{Name: ch.Name(), Namespace: "default", Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: values: %v", what, ErrRender, err)
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", what, ErrRender, err)
	}
	var uses []ImageUse
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ext := path.Ext(name)
		if ext != ".yaml" && ext != ".yml" && ext != ".json" && ext != ".tpl" {
			continue
		}
		images, err := imagesIn(out[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w: template %s renders invalid YAML: %v", what, ErrRender, name, err)
		}
		for _, im := range images {
			uses = append(uses, ImageUse{Image: im, Template: name})
		}
	}
	return uses, nil
}

// imagesIn returns the `image:` strings of every document in a rendered
// template, each once, in order.
func imagesIn(rendered string) ([]string, error) {
	if strings.TrimSpace(rendered) == "" {
		return nil, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(rendered)))
	var out []string
	seen := map[string]bool{}
	for {
		var doc any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				sort.Strings(out)
				return out, nil
			}
			return nil, err
		}
		walkImages(doc, func(s string) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}, 0)
	}
}

func walkImages(v any, add func(string), depth int) {
	if depth > 100 {
		return
	}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "image" {
				if s = strings.TrimSpace(s); s != "" {
					add(s)
				}
				continue
			}
			walkImages(x, add, depth+1)
		}
	case []any:
		for _, x := range v {
			walkImages(x, add, depth+1)
		}
	}
}

// mergeMaps merges src into dst, recursing into maps (helm's rule for
// several -f files).
func mergeMaps(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mergeMaps(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

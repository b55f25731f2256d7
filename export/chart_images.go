package export

import (
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ferry-airgap/ferry/mapping"
)

// isExactVersion reports whether v names one version rather than a range.
func isExactVersion(v string) bool {
	_, err := semver.StrictNewVersion(strings.TrimPrefix(v, "v"))
	return err == nil
}

// chartImageTasks selects the images that charts with images: true render,
// one task per chart and source registry. Each image goes where the
// selection already sends its repository, else under the layout of a task
// reading the same registry (the prefix its mappings add to the source
// path), else to its own path. Credentials and TLS settings come from that
// task's source.
func chartImageTasks(uses []chartUse, tasks []*mapping.Task) []*mapping.Task {
	byKey := map[string]*mapping.Task{}
	var out []*mapping.Task
	added := map[string]bool{}
	for _, u := range uses {
		if !u.carry {
			continue
		}
		reg := mapping.CanonicalRegistry(u.ref.Context().RegistryStr())
		path := u.ref.Context().RepositoryStr()
		src, to := targetFor(reg, path, tasks)
		key := u.chart + "\x00" + reg
		t := byKey[key]
		if t == nil {
			t = &mapping.Task{Name: chartImagesTask(u.chart, reg), Source: mapping.Endpoint{Registry: reg}}
			if src != nil {
				t.Source.Auth, t.Source.SkipTLSVerify = src.Source.Auth, src.Source.SkipTLSVerify
			}
			byKey[key] = t
			out = append(out, t)
		}
		id := key + "\x00" + canonicalSource(u.ref)
		if added[id] {
			continue
		}
		added[id] = true
		m := &mapping.Mapping{From: path, To: to}
		if d, ok := u.ref.(name.Digest); ok {
			m.Digests = []string{d.DigestStr()}
		} else {
			m.Tags = []string{u.ref.Identifier()}
		}
		t.Mappings = append(t.Mappings, m)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// chartImagesTask names the task that selects the images chart renders
// (or lists in extraImages:) from registry reg. A bundle records it as
// those images' task: ChartOfTask reads it back.
func chartImagesTask(chart, reg string) string {
	return "chart " + chart + " images from " + reg
}

// ChartOfTask says which chart a bundle image came from, by the task
// ferry.json records for it: "chart NAME" is the chart NAME itself (image
// false), "chart NAME images from REGISTRY" one of the images NAME renders
// or lists in extraImages: (image true). An image that a mapping file's
// task selects too is recorded under that task, and so not reported here.
func ChartOfTask(task string) (chart string, image, ok bool) {
	rest, found := strings.CutPrefix(task, "chart ")
	if !found || rest == "" {
		return "", false, false
	}
	if name, _, isImage := strings.Cut(rest, " images from "); isImage {
		return name, true, name != ""
	}
	if strings.Contains(rest, " ") {
		return "", false, false
	}
	return rest, false, true
}

// targetFor returns the task whose layout an image of reg/path follows
// (nil when none reads reg) and the target path.
func targetFor(reg, path string, tasks []*mapping.Task) (*mapping.Task, string) {
	var sameHost *mapping.Task
	prefix := ""
	for _, t := range tasks {
		if t.SourceHost() != strings.SplitN(reg, "/", 2)[0] {
			continue
		}
		for _, m := range t.Mappings {
			full, err := t.SourceRepository(m)
			if err != nil {
				continue
			}
			to := strings.Trim(m.To, "/")
			if to == "" {
				to = strings.Trim(m.From, "/")
			}
			srcPath := strings.TrimPrefix(full, reg+"/")
			if full == reg+"/"+path {
				return t, to
			}
			if sameHost == nil && strings.HasSuffix(to, srcPath) {
				sameHost, prefix = t, strings.TrimSuffix(to, srcPath)
			}
		}
		if sameHost == nil {
			sameHost = t
		}
	}
	return sameHost, prefix + path
}

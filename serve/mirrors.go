package serve

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ferry-airgap/ferry/bundle"
)

// MirrorOptions describe the registry clients should pull from.
type MirrorOptions struct {
	// Registry is HOST[:PORT] (HTTPS assumed) or a URL with http:// or
	// https://; a /PATH after it is the Prefix (as 'ferry import --to'
	// takes it: HARBOR/PROJECT).
	Registry string
	// Prefix is the leading path the images sit under there (ferry serve
	// --prefix, or the project/path ferry import pushed to).
	Prefix string
	// SourceNames: the registry is `ferry serve --source-names`, which serves
	// every image under HOST_SEGMENT/SOURCE_REPOSITORY too.
	SourceNames bool
	// Name is the ImageDigestMirrorSet's metadata.name (default
	// "ferry-" and the first bundle's id).
	Name string
	// ChartArchive returns the .tgz of a chart the record carries, so that
	// a values-airgap.yaml fragment can be printed for it; nil (or a nil
	// archive) leaves charts out.
	ChartArchive func(rec *bundle.Record, im bundle.Image) ([]byte, error)
}

// Mirror is how one upstream registry's images are reached on the mirror.
type Mirror struct {
	Upstream string // canonical host: docker.io, quay.io, 127.0.0.1:5000
	// Path is the leading path that maps an upstream repository to the
	// mirror's ("" = same path); containerd gets it as override_path.
	Path string
	// Reachable and Unreachable list "SOURCE_REPO → MIRROR_REPO" for
	// images the mirror path does and does not serve.
	Reachable, Unreachable []string
}

// MirrorSet is the client configuration for a set of bundles.
type MirrorSet struct {
	Scheme, Host string // of the registry
	Mirrors      []Mirror
	// Digest maps each source repository to the repositories holding it on
	// the mirror (HOST/PREFIX/TARGET), for OpenShift.
	Digest  map[string][]string
	Name    string
	Bundles []string // "id (created …, N images)"
	// Charts are the values-airgap.yaml fragments of the bundles' charts.
	Charts []ChartValues
}

// ErrMirrorOptions: the registry or prefix given cannot be used.
var ErrMirrorOptions = errors.New("bad mirror options")

// Mirrors works out how clients reach the images of recs through o.Registry.
func Mirrors(recs []*bundle.Record, o MirrorOptions) (*MirrorSet, error) {
	scheme, host, path, err := mirrorRegistry(o.Registry)
	if err != nil {
		return nil, err
	}
	switch {
	case path != "" && o.Prefix != "" && strings.Trim(o.Prefix, "/") != path:
		return nil, fmt.Errorf("%w: --registry %s names the path %q and --prefix says %q: give one", ErrMirrorOptions, o.Registry, path, o.Prefix)
	case path != "":
		o.Prefix = path // HARBOR/PROJECT, as import's --to
	}
	prefix, err := cleanPrefix(o.Prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMirrorOptions, err)
	}
	ms := &MirrorSet{Scheme: scheme, Host: host, Digest: map[string][]string{}, Name: o.Name}
	byUpstream, err := ms.collectImages(recs, host, prefix)
	if err != nil {
		return nil, err
	}
	if ms.Charts, err = chartValues(recs, o, host, prefix); err != nil {
		return nil, err
	}
	if ms.Name == "" || ms.Name == "ferry-" {
		ms.Name = "ferry"
	}
	ups := make([]string, 0, len(byUpstream))
	for u := range byUpstream {
		ups = append(ups, u)
	}
	sort.Strings(ups)
	for _, u := range ups {
		ms.Mirrors = append(ms.Mirrors, upstreamMirror(u, byUpstream[u], o.SourceNames, host, prefix))
	}
	return ms, nil
}

// mirrorRegistry splits --registry (HOST[:PORT] or http(s)://HOST[:PORT],
// optionally followed by /PATH as 'ferry import --to' takes it) into
// scheme, host and path.
func mirrorRegistry(registry string) (scheme, host, path string, err error) {
	scheme, host = "https", registry
	if s, rest, ok := strings.Cut(registry, "://"); ok {
		scheme, host = strings.ToLower(s), rest
	}
	host, path, _ = strings.Cut(strings.TrimSuffix(host, "/"), "/")
	if (scheme != "https" && scheme != "http") || host == "" || strings.ContainsAny(host, "?#@ ") {
		return "", "", "", fmt.Errorf("%w: registry %q: want HOST[:PORT][/PATH] or http(s)://HOST[:PORT][/PATH]", ErrMirrorOptions, registry)
	}
	return scheme, host, path, nil
}

// mirrorImage is one image of a bundle: its source repository (under its
// upstream registry) and its target path (under the served registry).
type mirrorImage struct{ source, target string }

// collectImages records the bundles, the default name and the digest
// mirrors of recs, and returns their images grouped by upstream registry.
func (ms *MirrorSet) collectImages(recs []*bundle.Record, host, prefix string) (map[string][]mirrorImage, error) {
	byUpstream := map[string][]mirrorImage{}
	seenDigest := map[string]bool{}
	for _, rec := range recs {
		ms.Bundles = append(ms.Bundles, fmt.Sprintf("%s (created %s, %d images)", rec.ID, rec.Created.UTC().Format("2006-01-02T15:04:05Z"), len(rec.Images)))
		if ms.Name == "" {
			ms.Name = "ferry-" + dnsLabel(rec.ID)
		}
		for _, im := range rec.Images {
			if im.Kind == chartKind {
				continue // helm pulls charts by their target name; no runtime mirror applies
			}
			up, repo, err := SourceRepo(im.Source)
			if err != nil {
				return nil, fmt.Errorf("bundle %s: image %s: %w", rec.ID, im.Target, err)
			}
			target := joinPath(prefix, im.Target)
			byUpstream[up] = append(byUpstream[up], mirrorImage{repo, target})
			src, dst := up+"/"+repo, host+"/"+target
			if !seenDigest[src+" "+dst] {
				seenDigest[src+" "+dst] = true
				ms.Digest[src] = append(ms.Digest[src], dst)
			}
		}
	}
	for _, v := range ms.Digest {
		sort.Strings(v)
	}
	return byUpstream, nil
}

// upstreamMirror is the mirror of upstream u: its path on host and which of
// imgs it reaches.
func upstreamMirror(u string, imgs []mirrorImage, sourceNames bool, host, prefix string) Mirror {
	m := Mirror{Upstream: u}
	if sourceNames {
		m.Path = joinPath(prefix, HostSegment(u))
	} else {
		m.Path = commonLeadingPath(imgs)
	}
	seen := map[string]bool{}
	for _, im := range imgs {
		line := u + "/" + im.source + " → " + host + "/" + joinPath(m.Path, im.source)
		p, ok := leadingPath(im.source, im.target)
		if !sourceNames && (!ok || p != m.Path) {
			line = u + "/" + im.source + " → " + host + "/" + im.target
		}
		if seen[line] {
			continue
		}
		seen[line] = true
		if sourceNames || ok && p == m.Path {
			m.Reachable = append(m.Reachable, line)
		} else {
			m.Unreachable = append(m.Unreachable, line)
		}
	}
	sort.Strings(m.Reachable)
	sort.Strings(m.Unreachable)
	return m
}

// commonLeadingPath is the leading path that turns most source repositories
// into their target path (the shortest, then the first, on a tie); images
// renamed otherwise are unreachable through the mirror.
func commonLeadingPath(imgs []mirrorImage) string {
	count := map[string]int{}
	for _, im := range imgs {
		if p, ok := leadingPath(im.source, im.target); ok {
			count[p]++
		}
	}
	best, bestN := "", -1
	for p, n := range count {
		if n > bestN || n == bestN && (len(p) < len(best) || len(p) == len(best) && p < best) {
			best, bestN = p, n
		}
	}
	return best
}

// leadingPath returns P when target is P/source (or "" when equal).
func leadingPath(source, target string) (string, bool) {
	if target == source {
		return "", true
	}
	if p, ok := strings.CutSuffix(target, "/"+source); ok {
		return p, true
	}
	return "", false
}

// dnsLabel makes s usable in a Kubernetes object name.
func dnsLabel(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		}
	}
	out := b.String()
	if len(out) > 40 {
		out = out[:40]
	}
	return strings.Trim(out, "-") // a DNS label neither starts nor ends with "-"
}

// upstreamServer is the URL containerd falls back to when the mirror fails.
func upstreamServer(u string) string {
	if u == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + u
}

// Write prints the client configurations: containerd hosts.toml files (one
// per upstream registry, each headed by the path it belongs at), the
// Docker daemon.json hint, a registries.conf drop-in for Podman and CRI-O,
// and the OpenShift ImageDigestMirrorSet.
func (ms *MirrorSet) Write(w io.Writer) error {
	ew := &errWriter{w: w}
	p := ew.printf
	base := ms.Scheme + "://" + ms.Host
	p("# ferry mirrors for %s\n", base)
	for _, b := range ms.Bundles {
		p("# bundle %s\n", b)
	}
	p("\n# ==== containerd (config_path = \"/etc/containerd/certs.d\" in the CRI registry config) ====\n")
	for _, m := range ms.Mirrors {
		p("\n# --- /etc/containerd/certs.d/%s/hosts.toml ---\n", m.Upstream)
		for _, r := range m.Reachable {
			p("# pulls %s\n", r)
		}
		for _, r := range m.Unreachable {
			p("# NOT mirrored (its path there is not PATH/<upstream repository>; pull it by that name, or serve with --source-names): %s\n", r)
		}
		p("server = %q\n", upstreamServer(m.Upstream))
		if len(m.Reachable) == 0 {
			continue
		}
		p("\n")
		if m.Path == "" {
			p("[host.%q]\n", base)
			p("  capabilities = [\"pull\", \"resolve\"]\n")
		} else {
			p("[host.%q]\n", base+"/v2/"+m.Path)
			p("  capabilities = [\"pull\", \"resolve\"]\n")
			p("  override_path = true\n")
		}
		if ms.Scheme == "https" {
			p("  # with a private CA: ca = \"/etc/containerd/certs.d/%s/ca.crt\"\n", m.Upstream)
		}
	}

	p("\n# ==== Docker (/etc/docker/daemon.json) ====\n")
	p("# registry-mirrors applies to Docker Hub images only, and a mirror URL cannot have a path.\n")
	var hub *Mirror
	for i := range ms.Mirrors {
		if ms.Mirrors[i].Upstream == "docker.io" {
			hub = &ms.Mirrors[i]
		}
	}
	switch {
	case hub == nil:
		p("# No image here comes from Docker Hub: Docker needs no mirror; pull %s/<path> directly.\n", ms.Host)
	case hub.Path != "" || len(hub.Reachable) == 0:
		p("# Not applicable: Docker Hub images are served under %q, not at their Docker Hub paths;\n", hub.Path)
		p("# pull them by their mirror names instead (e.g. %s/%s).\n", ms.Host, firstTarget(hub))
	default:
		p("{\n  \"registry-mirrors\": [%q]", base)
		if ms.Scheme == "http" {
			p(",\n  \"insecure-registries\": [%q]", ms.Host)
		}
		p("\n}\n")
		for _, r := range hub.Unreachable {
			p("# NOT mirrored: %s\n", r)
		}
	}

	ms.writeRegistriesConf(p)

	p("\n# ==== OpenShift (oc apply -f -): pulls by digest; tags need an ImageTagMirrorSet ====\n")
	p("---\napiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: %s\nspec:\n  imageDigestMirrors:\n", ms.Name)
	srcs := make([]string, 0, len(ms.Digest))
	for s := range ms.Digest {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, s := range srcs {
		p("  - source: %s\n    mirrors:\n", s)
		for _, m := range ms.Digest[s] {
			p("      - %s\n", m)
		}
	}
	writeChartValues(p, ms.Charts)
	return ew.err
}

func firstTarget(m *Mirror) string {
	all := append(append([]string(nil), m.Reachable...), m.Unreachable...)
	if len(all) == 0 {
		return ""
	}
	_, t, _ := strings.Cut(all[0], " → ")
	_, t, _ = strings.Cut(t, "/")
	return t
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// writeRegistriesConf prints the containers-registries.conf(5) drop-in
// (Podman, CRI-O, Buildah, skopeo): per upstream registry, a mirror whose
// location carries the leading path, which replaces the matched prefix,
// so UPSTREAM/REPO is pulled as HOST/PATH/REPO.
func (ms *MirrorSet) writeRegistriesConf(p func(string, ...any)) {
	p("\n# ==== Podman, CRI-O, skopeo (/etc/containers/registries.conf.d/ferry.conf) ====\n")
	for _, m := range ms.Mirrors {
		if len(m.Reachable) == 0 {
			continue
		}
		location := ms.Host
		if m.Path != "" {
			location += "/" + m.Path
		}
		p("\n[[registry]]\nprefix = %q\nlocation = %q\n", m.Upstream, m.Upstream)
		p("[[registry.mirror]]\nlocation = %q\n", location)
		if ms.Scheme == "http" {
			p("insecure = true\n")
		}
		for _, r := range m.Unreachable {
			p("# NOT mirrored: %s\n", r)
		}
	}
}

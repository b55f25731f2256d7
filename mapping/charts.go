package mapping

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/filter"
)

// Chart is one entry of a mapping file's `charts:` list, a ferry extension
// beside dregsy's `tasks:`: a Helm chart to carry, and optionally the images
// it renders.
type Chart struct {
	// Repo is a classic Helm repository (http:// or https://, serving
	// index.yaml) or an OCI path (oci://HOST[/PATH]).
	Repo string
	Name string
	// Versions are exact versions or semver ranges (the highest match of
	// each is taken); never empty.
	Versions []string
	// To is the target path the chart goes under: TARGET/To/Name:VERSION.
	// Default: the OCI repository's path, or "charts" for a classic repo.
	To string
	// Images: also carry every image the chart renders with its default
	// values (plus Values).
	Images bool
	// Values are values files (paths relative to the mapping file's
	// directory made absolute) merged over the chart's defaults when
	// rendering.
	Values []string
	// Exclude are image name patterns (`exclude:`, --chart-exclude): a
	// rendered image that one of them selects (see Excludes) is neither
	// carried nor warned about.
	Exclude []*filter.Pattern
	// ExtraImages are images the chart pulls at run time that no template
	// names (`extraImages:`, --chart-extra-image): always carried with it,
	// whatever Images says, and never excluded.
	ExtraImages []string
	File        string // the mapping file the chart came from ("" for --chart)
	Line        int
}

// Excludes returns the first Exclude pattern that selects image (as the
// chart writes it, e.g. "busybox:1.28"), or nil. A pattern is matched
// against the image's name without tag or digest, in two spellings: as
// written ("busybox") and canonical ("docker.io/library/busybox": Docker
// Hub as docker.io, one-segment names under library/); it selects the
// image when it matches either (a '!' pattern: when it matches neither).
func (c *Chart) Excludes(image string) *filter.Pattern {
	if len(c.Exclude) == 0 {
		return nil
	}
	names := ImageNames(image)
	for _, p := range c.Exclude {
		if p.Match(names...) {
			return p
		}
	}
	return nil
}

// ImageNames returns the names an exclude pattern is matched against: the
// reference without tag or digest as written, and its canonical form
// (REGISTRY/PATH, Docker Hub as docker.io) when it parses.
func ImageNames(image string) []string {
	image = strings.TrimSpace(image)
	written, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(written, ":"); i > strings.LastIndex(written, "/") {
		written = written[:i]
	}
	out := []string{written}
	if ref, err := name.ParseReference(image); err == nil {
		canon := CanonicalRegistry(ref.Context().RegistryStr()) + "/" + ref.Context().RepositoryStr()
		if canon != written {
			out = append(out, canon)
		}
	}
	return out
}

// AddExclude adds an image name pattern (--chart-exclude); the error wraps
// ErrInvalid and names the chart.
func (c *Chart) AddExclude(pattern string) error {
	p, err := filter.ParsePattern(pattern)
	if err != nil {
		return &LoadError{Msg: fmt.Sprintf("chart %s: exclude: %v", c, err)}
	}
	c.Exclude = append(c.Exclude, p)
	return nil
}

// AddExtraImage adds an image the chart pulls at run time
// (--chart-extra-image); the error wraps ErrInvalid and names the chart.
func (c *Chart) AddExtraImage(ref string) error {
	r, err := checkExtraImage(ref)
	if err != nil {
		return &LoadError{Msg: fmt.Sprintf("chart %s: %v", c, err)}
	}
	c.ExtraImages = append(c.ExtraImages, r)
	return nil
}

// checkExtraImage checks an extraImages item: a full image reference with
// a tag or digest (a bare name would mean "latest", which ferry never
// guesses).
func checkExtraImage(s string) (string, error) {
	s = strings.TrimSpace(s)
	_, err := name.ParseReference(s)
	if err == nil && ImageNames(s)[0] == s {
		err = errors.New("no tag or digest")
	}
	if err != nil {
		return "", fmt.Errorf("extra image %q is not an image reference with a tag or digest (e.g. busybox:1.36 or quay.io/org/app@sha256:…): %v", clipValue(s), err)
	}
	return s, nil
}

// IsOCI reports whether the chart comes from an OCI registry.
func (c *Chart) IsOCI() bool { return strings.HasPrefix(c.Repo, "oci://") }

// Target is the repository path the chart lands at (without registry).
func (c *Chart) Target() string {
	if to := strings.Trim(c.To, "/"); to != "" {
		return to + "/" + c.Name
	}
	return c.Name
}

// String names the chart in messages: REPO/NAME.
func (c *Chart) String() string { return strings.TrimSuffix(c.Repo, "/") + "/" + c.Name }

// ParseChartFlag reads `--chart REPO/NAME@VERSION` (VERSION exact or a
// range): a one-off chart that carries its images too (images: true) under
// the default target path. The error wraps ErrInvalid.
func ParseChartFlag(s string) (*Chart, error) {
	s = strings.TrimSpace(s)
	at := strings.LastIndex(s, "@")
	if at < 0 || at == len(s)-1 || strings.Contains(s[at:], "/") || strings.LastIndex(s[:at], "/") < 0 {
		return nil, &LoadError{Msg: "--chart: expected REPO/NAME@VERSION, e.g. https://charts.example.com/redis@1.2.3"}
	}
	ref := s[:at]
	i := strings.LastIndex(ref, "/")
	c := &Chart{Repo: ref[:i], Name: ref[i+1:], Versions: []string{s[at+1:]}, Images: true}
	if err := c.check(); err != nil {
		return nil, &LoadError{Msg: "--chart: " + err.Error()}
	}
	return c, nil
}

// check validates the fields and fills in the default To.
func (c *Chart) check() error {
	u, err := url.Parse(c.Repo)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "oci") || u.User != nil {
		shown := c.Repo
		if err == nil && u.User != nil {
			u.User = nil
			shown = u.String()
		} else if err != nil {
			shown = "(unparsable URL)"
		}
		return fmt.Errorf("repo %q must be an http(s):// Helm repository URL or oci://HOST/PATH, without credentials (give those with --auth-file or docker login)", clipValue(shown))
	}
	if c.Name == "" || strings.ContainsAny(c.Name, "/\\ :@") || c.Name == "." || c.Name == ".." {
		return fmt.Errorf("name %q is not a chart name", clipValue(c.Name))
	}
	for _, v := range c.Versions {
		if _, err := semver.NewConstraint(v); err != nil {
			return fmt.Errorf("version %q is neither a version nor a semver range: %v", clipValue(v), err)
		}
	}
	if c.To == "" {
		c.To = "charts"
		if c.IsOCI() {
			c.To = strings.Trim(u.Path, "/")
		}
	}
	if c.To != "" {
		if _, err := cleanRepoPath(strings.Trim(c.To, "/")); err != nil {
			return fmt.Errorf("to: %v", err)
		}
	}
	return nil
}

func clipValue(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// charts parses the top-level `charts:` list.
func (p *parser) charts(n *yaml.Node) []*Chart {
	n = p.deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "charts: expected a list of charts, found %s", kindName(n))
		return nil
	}
	var out []*Chart
	for i, item := range n.Content {
		if !p.tick() {
			break
		}
		if c := p.chart(p.deref(item), i+1); c != nil {
			out = append(out, c)
		}
	}
	return out
}

func (p *parser) chart(n *yaml.Node, index int) *Chart {
	label := fmt.Sprintf("chart %d", index)
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s: expected a mapping with repo, name, version, found %s", label, kindName(n))
		return nil
	}
	c := &Chart{File: p.file, Line: n.Line}
	errs := len(p.errs)
	for _, e := range p.entries(n, 0) {
		field := e.name + " in " + label
		switch e.name {
		case "repo":
			c.Repo, _ = p.scalar(e.val, field)
			c.Repo = strings.TrimSpace(c.Repo)
		case "name":
			c.Name, _ = p.scalar(e.val, field)
			c.Name = strings.TrimSpace(c.Name)
		case "version":
			c.Versions = p.stringList(e.val, field)
		case "to":
			c.To, _ = p.scalar(e.val, field)
			c.To = strings.Trim(strings.TrimSpace(c.To), "/")
		case "images":
			c.Images, _ = p.boolean(e.val, field)
		case "exclude":
			for _, item := range p.items(e.val, field) {
				if pat, err := filter.ParsePattern(item.Value); err != nil {
					p.errorf(item.Line, "%s: exclude: %v", chartLabel(c, label), err)
				} else {
					c.Exclude = append(c.Exclude, pat)
				}
			}
		case "extraImages":
			for _, item := range p.items(e.val, field) {
				if ref, err := checkExtraImage(item.Value); err != nil {
					p.errorf(item.Line, "%s: %v", chartLabel(c, label), err)
				} else {
					c.ExtraImages = append(c.ExtraImages, ref)
				}
			}
		case "values":
			for _, v := range p.stringList(e.val, field) {
				if !filepath.IsAbs(v) && p.file != "" {
					v = filepath.Join(filepath.Dir(p.file), v)
				}
				c.Values = append(c.Values, v)
			}
		default:
			p.errorf(e.key.Line, "unknown key %q in %s", e.name, label)
		}
	}
	if len(p.errs) > errs {
		return nil
	}
	switch {
	case c.Repo == "":
		p.errorf(n.Line, "%s has no repo: (a https:// Helm repository or oci:// path)", label)
	case c.Name == "":
		p.errorf(n.Line, "%s has no name:", label)
	case len(c.Versions) == 0:
		p.errorf(n.Line, "chart %q has no version: (an exact version or a semver range)", c.Name)
	default:
		if err := c.check(); err != nil {
			p.errorf(n.Line, "chart %q: %v", c.Name, err)
			return nil
		}
		return c
	}
	return nil
}

// chartLabel names a chart in a message: its name when known so far, else
// "chart N".
func chartLabel(c *Chart, label string) string {
	if c.Name != "" {
		return fmt.Sprintf("chart %q", c.Name)
	}
	return label
}

// items reads a string or a list of strings as nodes (for their lines);
// empty items are refused.
func (p *parser) items(n *yaml.Node, what string) []*yaml.Node {
	n = p.deref(n)
	list := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		list = n.Content
	}
	var out []*yaml.Node
	for _, item := range list {
		if !p.tick() {
			return nil
		}
		item = p.deref(item)
		s, ok := p.scalar(item, what)
		if !ok {
			return nil
		}
		if strings.TrimSpace(s) == "" {
			p.errorf(item.Line, "%s: empty value", what)
			return nil
		}
		out = append(out, item)
	}
	return out
}

// stringList reads a string or a list of strings (empty items refused).
func (p *parser) stringList(n *yaml.Node, what string) []string {
	n = p.deref(n)
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []string
	for _, item := range items {
		if !p.tick() {
			return nil
		}
		s, ok := p.scalar(item, what)
		if !ok {
			return nil
		}
		if s = strings.TrimSpace(s); s == "" {
			p.errorf(item.Line, "%s: empty value", what)
			return nil
		}
		out = append(out, s)
	}
	return out
}

package mapping

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"
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
	File   string // the mapping file the chart came from ("" for --chart)
	Line   int
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

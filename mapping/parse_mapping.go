package mapping

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/filter"
	"github.com/ferry-airgap/ferry/internal/names"
)

func (p *parser) mappings(n *yaml.Node, label string) []*Mapping {
	n = p.deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "mappings in %s: expected a list of from:/to: entries, found %s", label, kindName(n))
		return nil
	}
	var out []*Mapping
	for _, item := range n.Content {
		if !p.tick() {
			break
		}
		if m := p.mapping(p.deref(item), label); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// mapping reads one mapping once per node; a mapping referenced again
// through an alias is a copy of the first result.
func (p *parser) mapping(n *yaml.Node, label string) *Mapping {
	m, ok := p.memoMappings[n]
	if !ok {
		m = p.readMapping(n, label)
		p.memoMappings[n] = m
	}
	if m == nil {
		return nil
	}
	c := *m
	return &c
}

func (p *parser) readMapping(n *yaml.Node, label string) *Mapping {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "mapping in %s: expected from:, to:, tags:, found %s", label, kindName(n))
		return nil
	}
	m := &Mapping{Line: n.Line}
	ok := true
	hasFrom := false
	for _, e := range p.entries(n, 0) {
		switch e.name {
		case "from":
			hasFrom = true
			path, valid := p.mappingFrom(e.val, label)
			if !valid {
				ok = false
				continue
			}
			m.From = path
		case "to":
			path, valid := p.mappingTo(e.val, label)
			if !valid {
				ok = false
				continue
			}
			m.To = path
		case "tags":
			m.Tags = p.tags(e.val, label)
		case "platform":
			s, valid := p.scalar(e.val, "platform in "+label)
			s = strings.TrimSpace(s)
			if valid && s != "" && s != "all" && !platformRE.MatchString(s) {
				p.errorf(e.val.Line, "%s: platform %q is neither all nor os/arch[/variant] (e.g. linux/amd64, linux/arm/v7)", label, s)
			}
			m.Platform = s
		case "digests":
			m.Digests = p.digests(e.val, label)
		default:
			if !ignoredMappingKeys[e.name] {
				p.errorf(e.key.Line, "unknown key %q in mapping of %s", e.name, label)
			}
		}
	}
	if !hasFrom {
		p.errorf(n.Line, "mapping in %s has no from:", label)
		return nil
	}
	if !ok {
		return nil
	}
	if m.To == "" {
		m.To = m.From
	}
	return m
}

// mappingFrom reads a mapping's from: value, the source repository path; it
// reports false (after an error) when the value is unusable.
func (p *parser) mappingFrom(n *yaml.Node, label string) (string, bool) {
	s, valid := p.scalar(n, "from in "+label)
	if !valid {
		return "", false
	}
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, regexPrefix) {
		p.errorf(n.Line, "%s: repository regex in from: is not supported by ferry; list repositories explicitly", label)
		return "", false
	}
	path, err := cleanRepoPath(s)
	if err != nil {
		p.errorf(n.Line, "%s: from: %v", label, err)
		return "", false
	}
	if looksLikeHost(path) {
		p.warnf(n.Line, "%s: from %q starts with what looks like a registry host; like dregsy, ferry reads it as a path under the source registry (put the host in source: registry:)", label, s)
	}
	return path, true
}

// mappingTo reads a mapping's to: value, the target path; "" (and true)
// when it is empty, so that From is used.
func (p *parser) mappingTo(n *yaml.Node, label string) (string, bool) {
	s, valid := p.scalar(n, "to in "+label)
	if !valid {
		return "", false
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", true
	}
	if strings.HasPrefix(s, regexPrefix) {
		p.errorf(n.Line, "%s: regex in to: is not supported by ferry; write the target path explicitly", label)
		return "", false
	}
	path, err := cleanRepoPath(s)
	if err != nil {
		p.errorf(n.Line, "%s: to: %v", label, err)
		return "", false
	}
	return path, true
}

// tags reads a tags: list once per node (see parser.memoTags).
func (p *parser) tags(n *yaml.Node, label string) []string {
	n = p.deref(n)
	if out, ok := p.memoTags[n]; ok {
		return out
	}
	out := p.readTags(n, label)
	p.memoTags[n] = out
	return out
}

func (p *parser) readTags(n *yaml.Node, label string) []string {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "tags in %s: expected a list, e.g. tags: ['latest'], found %s", label, kindName(n))
		return nil
	}
	var out []string
	for _, item := range n.Content {
		if !p.tick() {
			break
		}
		s, ok := p.scalar(item, "tag in "+label)
		if !ok {
			continue
		}
		s = strings.TrimSpace(s)
		if s == "" {
			p.errorf(item.Line, "%s: empty tag", label)
			continue
		}
		if len(s) > maxTagItem {
			p.errorf(item.Line, "%s: tag filter item of %d bytes; at most %d", label, len(s), maxTagItem)
			continue
		}
		if err := p.checkFilter(s); err != nil {
			p.errorf(item.Line, "%s: %v", label, err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// checkFilter parses one tags: item, once per distinct text. Regexes cost
// time to compile in proportion to their length (Unicode classes most), so
// the distinct regex text of a file is bounded.
func (p *parser) checkFilter(item string) error {
	if err, ok := p.memoFilters[item]; ok {
		return err
	}
	if strings.HasPrefix(item, regexPrefix) || strings.HasPrefix(item, "keep:") {
		p.regexText += len(item)
		if p.regexText > maxRegexText {
			return fmt.Errorf("the file's tag regexes total more than %d KiB; split it into several files", maxRegexText>>10)
		}
	}
	// Checked one item at a time, so that the error has its line.
	_, err := filter.Parse([]string{item})
	p.memoFilters[item] = err
	return err
}

func (p *parser) digests(n *yaml.Node, label string) []string {
	n = p.deref(n)
	if out, ok := p.memoDigests[n]; ok {
		return out
	}
	out := p.readDigests(n, label)
	p.memoDigests[n] = out
	return out
}

func (p *parser) readDigests(n *yaml.Node, label string) []string {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "digests in %s: expected a list of algorithm:hex digests, found %s", label, kindName(n))
		return nil
	}
	var out []string
	for _, item := range n.Content {
		if !p.tick() {
			break
		}
		s, ok := p.scalar(item, "digest in "+label)
		if !ok {
			continue
		}
		s = strings.TrimSpace(s)
		if !names.ValidDigest(s) {
			p.errorf(item.Line, "%s: %q is not a digest (sha256:<64 hex digits>)", label, s)
			continue
		}
		out = append(out, s)
	}
	return out
}

package mapping

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

func (p *parser) checkDuplicateTasks(tasks []*Task) {
	seen := map[string]*Task{}
	for _, t := range tasks {
		if t.Name == "" {
			continue
		}
		if prev, ok := seen[t.Name]; ok {
			p.errorf(t.Line, "task %q is already defined at %s:%d", t.Name, prev.File, prev.Line)
			continue
		}
		seen[t.Name] = t
	}
}

func (p *parser) tasks(n *yaml.Node) []*Task {
	n = p.deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "tasks: expected a list of tasks, found %s", kindName(n))
		return nil
	}
	var out []*Task
	for i, item := range n.Content {
		if !p.tick() {
			break
		}
		if t := p.task(p.deref(item), i+1); t != nil {
			out = append(out, t)
		}
	}
	return out
}

func (p *parser) task(n *yaml.Node, index int) *Task {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "task %d: expected a mapping with name, source, mappings, found %s", index, kindName(n))
		return nil
	}
	entries := p.entries(n, 0)
	t := &Task{File: p.file, Line: n.Line}
	// The name first, so that every other message can say which task.
	nameErr := false
	for _, e := range entries {
		if e.name == "name" {
			if s, ok := p.scalar(e.val, "name of task "+strconv.Itoa(index)); ok {
				t.Name = strings.TrimSpace(s)
			} else {
				nameErr = true
			}
		}
	}
	label := fmt.Sprintf("task %q", t.Name)
	if t.Name == "" {
		label = fmt.Sprintf("task %d", index)
		if !nameErr {
			p.errorf(n.Line, "%s has no name (every task needs name:)", label)
		}
	}

	var source, target *yaml.Node
	sourceLine, targetLine := n.Line, n.Line
	for _, e := range entries {
		switch e.name {
		case "name":
		case "interval":
			t.Interval = p.interval(e.val, label)
		case "verbose":
			t.Verbose, _ = p.boolean(e.val, "verbose in "+label)
		case "source":
			source, sourceLine = e.val, e.key.Line
		case "target":
			target, targetLine = e.val, e.key.Line
		case "mappings":
			t.Mappings = p.mappings(e.val, label)
		default:
			p.errorf(e.key.Line, "unknown key %q in %s", e.name, label)
		}
	}
	if source == nil {
		p.errorf(n.Line, "%s has no source: (every task needs source: with registry:)", label)
	} else {
		t.Source = p.endpoint(source, sourceLine, "source", label)
	}
	if target != nil {
		t.Target = p.endpoint(target, targetLine, "target", label)
	}
	if len(t.Mappings) == 0 && !p.stopped() {
		p.warnf(n.Line, "%s has no mappings; it copies nothing", label)
	}
	return t
}

func (p *parser) interval(n *yaml.Node, label string) time.Duration {
	n = p.deref(n)
	if isNull(n) {
		return 0
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.errorf(n.Line, "interval in %s must be whole seconds, e.g. 21600", label)
		return 0
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	switch {
	case err != nil || v > math.MaxInt64/int64(time.Second):
		p.errorf(n.Line, "interval in %s is out of range", label)
		return 0
	case v < 0:
		p.errorf(n.Line, "interval in %s must be 0 or a positive number of seconds", label)
		return 0
	case v > 0 && v < minInterval:
		p.errorf(n.Line, "interval in %s is %d seconds; the minimum is %d (as in dregsy)", label, v, minInterval)
		return 0
	}
	return time.Duration(v) * time.Second
}

// endpoint reads a source: or target: once per node and role.
func (p *parser) endpoint(n *yaml.Node, keyLine int, role, label string) Endpoint {
	key := endpointKey{p.deref(n), role}
	ep, ok := p.memoEndpoints[key]
	if !ok {
		ep = p.readEndpoint(key.n, keyLine, role, label)
		p.memoEndpoints[key] = ep
	}
	ep.Line = keyLine
	ep.Placeholders = slices.Clone(ep.Placeholders)
	return ep
}

func (p *parser) readEndpoint(n *yaml.Node, keyLine int, role, label string) Endpoint {
	ep := Endpoint{Line: keyLine}
	if isNull(n) {
		if role == "source" {
			p.errorf(keyLine, "%s: source has no registry:", label)
		}
		return ep
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s: %s must be a mapping with registry:, auth:, skip-tls-verify:, found %s", label, role, kindName(n))
		return ep
	}
	hasRegistry := false
	for _, e := range p.entries(n, 0) {
		field := role + " " + e.name
		switch e.name {
		case "registry":
			hasRegistry = true
			if ph, ok := p.placeholder(e.val); ok {
				ep.Placeholders = append(ep.Placeholders, "registry")
				if role == "source" {
					p.warnf(e.key.Line, "%s: %s is a placeholder %s; the task cannot be exported until it is filled in", label, field, ph)
				} else {
					p.warnf(e.key.Line, "%s: %s is a placeholder %s; import takes the target from --to", label, field, ph)
				}
				continue
			}
			s, ok := p.scalar(e.val, field+" in "+label)
			if !ok {
				continue
			}
			s = strings.TrimSpace(s)
			if s == "" {
				hasRegistry = false
				continue
			}
			if _, _, err := splitRegistry(s); err != nil {
				p.errorf(e.val.Line, "%s: %s: %v", label, field, err)
				continue
			}
			ep.Registry = s
		case "auth":
			if ph, ok := p.placeholder(e.val); ok {
				ep.Placeholders = append(ep.Placeholders, "auth")
				p.warnf(e.key.Line, "%s: %s is a placeholder %s; credentials come from flags, --auth-file or the docker keychain instead", label, field, ph)
				continue
			}
			v := p.deref(e.val)
			if v.Kind != yaml.ScalarNode {
				// Never print the value: it may hold credentials.
				p.errorf(v.Line, "%s: %s must be a base64 string (of {\"username\": ..., \"password\": ...} or user:password) or none, found %s", label, field, kindName(v))
				continue
			}
			if isNull(v) || strings.TrimSpace(v.Value) == "" {
				continue
			}
			a, err := decodeAuth(v.Value)
			if err != nil {
				p.errorf(v.Line, "%s: %s: %v", label, field, err)
				continue
			}
			ep.Auth = a
		case "skip-tls-verify":
			ep.SkipTLSVerify, _ = p.boolean(e.val, field+" in "+label)
		case "auth-refresh":
			p.warnf(e.key.Line, "%s: %s is ignored: ferry does not refresh ECR credentials itself; use a docker credential helper (docker-credential-ecr-login)", label, field)
		default:
			if !ignoredEndpointKeys[e.name] {
				p.errorf(e.key.Line, "unknown key %q in %s %s", e.name, label, role)
			}
		}
	}
	if !hasRegistry && role == "source" {
		p.errorf(n.Line, "%s: source has no registry:", label)
	}
	return ep
}

// placeholder reports whether n is a template placeholder where a string is
// expected: a map whose values are all empty (`{Token}` in YAML), or a
// string such as "{Token}", "${TOKEN}" or "<base64 ...>". It returns the
// placeholder's text for messages (keys only, never values).
func (p *parser) placeholder(n *yaml.Node) (string, bool) {
	n = p.deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		var keys []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := p.deref(n.Content[i]), p.deref(n.Content[i+1])
			if k.Kind != yaml.ScalarNode || !isNull(v) {
				return "", false
			}
			keys = append(keys, k.Value)
		}
		return "{" + strings.Join(keys, ", ") + "}", true
	case yaml.ScalarNode:
		s := strings.TrimSpace(n.Value)
		if n.ShortTag() == "!!str" && placeholderRE.MatchString(s) {
			if len(s) > 60 {
				s = s[:57] + "..."
			}
			return strconv.Quote(s), true
		}
	}
	return "", false
}

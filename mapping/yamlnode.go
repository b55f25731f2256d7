package mapping

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// scalar returns the text of a scalar node; what names the field for the
// error when n is a list or map.
func (p *parser) scalar(n *yaml.Node, what string) (string, bool) {
	n = p.deref(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "%s: expected a string, found %s", what, kindName(n))
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

// boolean accepts YAML booleans, including the YAML 1.1 forms (yes, no, on,
// off) that dregsy's YAML library accepts.
func (p *parser) boolean(n *yaml.Node, what string) (bool, bool) {
	n = p.deref(n)
	if isNull(n) {
		return false, true
	}
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on", "y":
			return true, true
		case "false", "no", "off", "n":
			return false, true
		}
	}
	p.errorf(n.Line, "%s: expected true or false", what)
	return false, false
}

type entry struct {
	key, val *yaml.Node
	name     string
}

// entries returns the key/value pairs of a mapping node, with YAML merge
// keys (<<: *anchor) expanded and duplicate keys reported.
func (p *parser) entries(n *yaml.Node, depth int) []entry {
	if out, ok := p.memoEntries[n]; ok {
		return out
	}
	out := p.readEntries(n, depth)
	p.memoEntries[n] = out
	return out
}

func (p *parser) readEntries(n *yaml.Node, depth int) []entry {
	var out, merged []entry
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !p.tick() {
			return out
		}
		k, v := p.deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "expected a key, found %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			if depth > 10 {
				p.errorf(k.Line, "merge keys (<<) nested too deeply")
				continue
			}
			v = p.deref(v)
			switch v.Kind {
			case yaml.MappingNode:
				merged = append(merged, p.entries(v, depth+1)...)
			case yaml.SequenceNode:
				for _, item := range v.Content {
					if item = p.deref(item); item.Kind == yaml.MappingNode {
						merged = append(merged, p.entries(item, depth+1)...)
					} else {
						p.errorf(item.Line, "merge key (<<) needs mappings, found %s", kindName(item))
					}
				}
			default:
				p.errorf(v.Line, "merge key (<<) needs a mapping, found %s", kindName(v))
			}
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "duplicate key %q (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, entry{key: k, val: v, name: k.Value})
	}
	for _, e := range merged {
		if _, dup := seen[e.name]; !dup {
			seen[e.name] = e.key.Line
			out = append(out, e)
		}
	}
	return out
}

// deref follows aliases (*anchor) to the node they stand for.
func (p *parser) deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 64; i++ {
		n = n.Alias
	}
	if n == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return "a " + strings.TrimPrefix(n.ShortTag(), "!!")
	case yaml.AliasNode:
		return "an alias"
	default:
		return "a document"
	}
}

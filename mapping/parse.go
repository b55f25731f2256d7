package mapping

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse reads one mapping file's content; name is used in messages and in
// Task.File. Unlike Load it accepts a file without tasks.
func Parse(name string, data []byte) (*Config, error) {
	if len(data) > maxFileSize {
		return nil, &LoadError{File: name, Msg: fmt.Sprintf("file is %d bytes, larger than the %d MiB a mapping file may be; split it into several files (-f A -f B)", len(data), maxFileSize>>20)}
	}
	p := &parser{file: name, budget: maxNodes,
		memoEntries: map[*yaml.Node][]entry{}, memoMappings: map[*yaml.Node]*Mapping{},
		memoTags: map[*yaml.Node][]string{}, memoDigests: map[*yaml.Node][]string{},
		memoEndpoints: map[endpointKey]Endpoint{}, memoFilters: map[string]error{}}
	cfg := p.parse(data)
	// Report in file order; tasks are checked name first, endpoints last.
	slices.SortStableFunc(p.errs, func(a, b error) int {
		return errLine(a) - errLine(b)
	})
	switch len(p.errs) {
	case 0:
		return cfg, nil
	case 1:
		return nil, p.errs[0]
	default:
		return nil, errors.Join(p.errs...)
	}
}

// errLine is the line of a LoadError, or a large number for errors
// without one (they go last).
func errLine(err error) int {
	if le, ok := err.(*LoadError); ok && le.Line > 0 {
		return le.Line
	}
	return math.MaxInt32
}

// parser walks the yaml.Node tree of one file, collecting errors so that a
// user sees all problems of a file at once.
type parser struct {
	file     string
	errs     []error
	warnings []string
	budget   int // nodes left to visit; guards against alias bombs
	// Results per YAML node. An alias (*anchor) stands for a node already
	// read: it is checked once, however often it is referenced, so that a
	// small file of nested aliases (a "billion laughs") costs what its
	// text costs, not what its expansion would.
	memoEntries   map[*yaml.Node][]entry
	memoMappings  map[*yaml.Node]*Mapping
	memoTags      map[*yaml.Node][]string
	memoDigests   map[*yaml.Node][]string
	memoEndpoints map[endpointKey]Endpoint
	memoFilters   map[string]error // tags: items by text
	regexText     int              // bytes of distinct regex items compiled
}

type endpointKey struct {
	n    *yaml.Node
	role string
}

func (p *parser) errorf(line int, format string, args ...any) {
	if len(p.errs) >= maxErrors {
		return
	}
	p.errs = append(p.errs, &LoadError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, &LoadError{File: p.file, Msg: "too many errors, giving up"})
	}
}

func (p *parser) warnf(line int, format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: ", p.file, line)+fmt.Sprintf(format, args...))
}

func (p *parser) stopped() bool { return len(p.errs) >= maxErrors || p.budget < 0 }

// tick counts one visited node; it returns false when parsing must stop
// (too many errors, or a file so large or so aliased that walking it
// would take too long).
func (p *parser) tick() bool {
	if p.stopped() {
		return false
	}
	p.budget--
	if p.budget < 0 {
		p.errs = append(p.errs, &LoadError{File: p.file, Msg: "file too large or too deeply aliased"})
		return false
	}
	return true
}

func (p *parser) parse(data []byte) *Config {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg // empty file
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "a second YAML document (after ---) is not supported; put all tasks in one document")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
		return nil
	}

	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return cfg
		}
		root = root.Content[0]
	}
	root = p.deref(root)
	if isNull(root) {
		return cfg
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root.Line, "expected a mapping with a tasks: list at the top level, found %s", kindName(root))
		return nil
	}
	for _, e := range p.entries(root, 0) {
		switch {
		case e.name == "tasks":
			cfg.Tasks = p.tasks(e.val)
		case e.name == "charts":
			cfg.Charts = p.charts(e.val)
		case ignoredTopKeys[e.name]:
		default:
			p.errorf(e.key.Line, "unknown top-level key %q", e.name)
		}
	}
	p.checkDuplicateTasks(cfg.Tasks)
	cfg.warnings = p.warnings
	return cfg
}

// yamlError reports a syntax error as file:line: message.
func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errorf(line, "invalid YAML: %s", m[2])
		return
	}
	p.errorf(0, "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

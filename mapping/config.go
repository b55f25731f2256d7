package mapping

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-airgap/ferry/filter"
	"github.com/ferry-airgap/ferry/internal/names"
)

// ErrInvalid is wrapped by every error that comes from the content of a
// mapping file (or from a file that cannot be read, or an unknown --task
// name): the CLI maps it to exit status 2. Test for it with errors.Is.
var ErrInvalid = errors.New("invalid mapping file")

// LoadError is one problem in a mapping file, located by file and line.
// Its text never contains a credential.
type LoadError struct {
	File string // as passed to Load or Parse; empty for errors not tied to a file
	Line int    // 1-based; 0 when unknown
	Msg  string
	Err  error // underlying error (e.g. from the file system), if any
}

func (e *LoadError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns ErrInvalid and the underlying error, if any.
func (e *LoadError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// Config is the content of one or more mapping files in dregsy's format.
type Config struct {
	// Tasks in the order the files and the tasks within them were given.
	// Task names are unique across all files.
	Tasks []*Task
	// Charts are the files' `charts:` entries (ferry's extension), in order.
	Charts []*Chart

	warnings []string
}

// Task is one dregsy task: where images come from, where they go, which
// ones.
//
// A task whose source registry is a placeholder (Source.Placeholders holds
// "registry") loads without error, so that other tasks of the same file stay
// usable; using the task is an error (see CheckSource). Placeholders in the
// source auth or anywhere in the target are only warnings: export falls back
// to the other credential sources, and import takes the target from --to.
type Task struct {
	Name string
	// Interval between runs of `ferry sync --watch`; 0 when the file sets
	// none (dregsy then runs the task once). Export ignores it. When set it
	// is at least 30 s, dregsy's minimum.
	Interval time.Duration
	File     string // the file the task came from
	Line     int    // line of the task's first key in File
	Source   Endpoint
	// Target is optional for ferry (import uses --to, export needs none);
	// Target.Registry is "" when the file gives none.
	Target   Endpoint
	Mappings []*Mapping
	// Verbose is dregsy's per-task verbosity flag, kept for `ferry sync`.
	Verbose bool
}

// Endpoint is a task's source or target registry.
type Endpoint struct {
	// Registry is the value of `registry:` as written (trimmed): a host with
	// an optional :port, optionally followed by a repository path prefix
	// (dregsy joins registry and path with "/"). Compare registries with
	// CanonicalRegistry. Empty when not given or a placeholder.
	Registry string
	// Auth is the decoded `auth:` value; nil when the file gives none or a
	// placeholder, in which case credentials come from flags, --auth-file or
	// the docker keychain.
	Auth          *Auth
	SkipTLSVerify bool
	// Placeholders lists the fields ("registry", "auth") whose value in the
	// file is a placeholder left from a template, e.g. `auth: {Token}` (which
	// YAML reads as a map), "{registry_address}" or "<base64 ...>".
	Placeholders []string
	Line         int // line of the endpoint in the file; 0 when absent
}

// HasPlaceholder reports whether field ("registry" or "auth") was left as a
// placeholder in the file.
func (e *Endpoint) HasPlaceholder(field string) bool {
	return slices.Contains(e.Placeholders, field)
}

// Auth is a decoded `auth:` value. Its String, GoString, Format, MarshalJSON,
// MarshalYAML and LogValue methods never reveal the password.
type Auth struct {
	Username string
	Password string
	// Anonymous is set by `auth: none`: use no credentials at all, not even
	// the docker keychain's.
	Anonymous bool
}

const redacted = "REDACTED"

// String describes the credentials without the password.
func (a Auth) String() string {
	if a.Anonymous {
		return "anonymous"
	}
	if a.Password == "" {
		return fmt.Sprintf("user %q, no password", a.Username)
	}
	return fmt.Sprintf("user %q, password %s", a.Username, redacted)
}

// GoString is used by %#v; the password is replaced.
func (a Auth) GoString() string {
	pw := ""
	if a.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("mapping.Auth{Username:%q, Password:%q, Anonymous:%t}", a.Username, pw, a.Anonymous)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d, ...) print the
// redacted form.
func (a Auth) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, a.GoString())
	case verb == 'q':
		io.WriteString(f, strconv.Quote(a.String()))
	default:
		io.WriteString(f, a.String())
	}
}

type authView struct {
	Username  string `json:"username,omitempty" yaml:"username,omitempty"`
	Password  string `json:"password,omitempty" yaml:"password,omitempty"`
	Anonymous bool   `json:"anonymous,omitempty" yaml:"anonymous,omitempty"`
}

func (a Auth) view() authView {
	v := authView{Username: a.Username, Anonymous: a.Anonymous}
	if a.Password != "" {
		v.Password = redacted
	}
	return v
}

// MarshalJSON writes the username and "REDACTED" in place of the password.
func (a Auth) MarshalJSON() ([]byte, error) { return json.Marshal(a.view()) }

// MarshalYAML writes the username and "REDACTED" in place of the password.
func (a Auth) MarshalYAML() (any, error) { return a.view(), nil }

// LogValue keeps the password out of slog output.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Mapping is one `mappings:` entry: a repository and the tags to take.
type Mapping struct {
	// From is the source repository path, without a leading "/" and
	// relative to the task's source registry (join them with
	// Task.SourceRepository). It is never a regex: ferry refuses dregsy's
	// `from: regex:...` repository listing.
	From string
	// To is the target path; the file's `to:`, or From when omitted.
	To string
	// Platform is "" (keep the whole upstream index), "all", or
	// os/arch[/variant].
	Platform string
	// Tags are the tag filters as written (verbatim tags, 'regex: ...',
	// 'semver: ...', 'keep: ...', digest pins); empty means all tags. Each
	// item has passed filter.Parse, which interprets them.
	Tags []string
	// Digests are dregsy's `digests:` list (algorithm:hex), validated.
	Digests []string
	Line    int // line of the mapping in the task's file
}

// Ignored keys: dregsy settings that mean nothing to ferry. They are
// accepted so that dregsy files load unchanged.
var (
	ignoredTopKeys = map[string]bool{
		"relay": true, "docker": true, "skopeo": true, "lister": true, "watch": true,
		"dockerhost": true, "api-version": true, // deprecated dregsy settings
	}
	ignoredEndpointKeys = map[string]bool{"lister": true} // auth-refresh: warned about
	ignoredMappingKeys  = map[string]bool{"preserve-digests": true}
)

const (
	regexPrefix = "regex:"
	// minInterval is dregsy's minimum task interval (internal/pkg/sync).
	minInterval = 30
	// maxNodes bounds the work done on one file, alias expansion included.
	maxNodes = 1 << 20
	// maxFileSize bounds the bytes of one mapping file (about 10,000
	// mappings): parsing is linear in the text, so this bounds its time.
	maxFileSize = 1 << 20
	// maxTagItem bounds one tags: item. A tag is at most 128 characters;
	// a regex to select tags needs far fewer than this, and compiling one
	// costs time in proportion to its length.
	maxTagItem = 1024
	// maxRegexText bounds the distinct regex text (regex: and keep: items)
	// of one file: at worst (Unicode classes) about 12µs of compiling a byte.
	maxRegexText = 16 << 10
	// maxErrors is how many problems one file reports before giving up.
	maxErrors = 20
)

var (
	placeholderRE = regexp.MustCompile(`^(?:\$?\{[^{}]*\}|<[^<>]*>)$`)
	platformRE    = regexp.MustCompile(`^[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_.]+)?$`)
	yamlLineRE    = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// Load reads and merges mapping files: their tasks are concatenated in the
// order given. A task name defined twice, in one file or across files, is an
// error naming both places. Every error wraps ErrInvalid; a file's problems
// are all reported (up to 20), joined.
func Load(paths ...string) (*Config, error) {
	if len(paths) == 0 {
		return nil, &LoadError{Msg: "no mapping file given"}
	}
	cfg := &Config{}
	var errs []error
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, &LoadError{File: path, Msg: "reading mapping file", Err: unwrapPathError(err)})
			continue
		}
		c, err := Parse(path, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := cfg.merge(c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(cfg.Tasks) == 0 && len(cfg.Charts) == 0 {
		return nil, &LoadError{File: strings.Join(paths, ", "), Msg: "no tasks defined (expected a tasks: list)"}
	}
	return cfg, nil
}

// unwrapPathError drops the *fs.PathError wrapper, whose text repeats the
// path that LoadError already names.
func unwrapPathError(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// merge appends o's tasks to c, refusing duplicate task names.
func (c *Config) merge(o *Config) error {
	var errs []error
	for _, t := range o.Tasks {
		if prev := c.task(t.Name); prev != nil {
			errs = append(errs, &LoadError{File: t.File, Line: t.Line,
				Msg: fmt.Sprintf("task %q is already defined at %s:%d", t.Name, prev.File, prev.Line)})
			continue
		}
		c.Tasks = append(c.Tasks, t)
	}
	c.Charts = append(c.Charts, o.Charts...)
	c.warnings = append(c.warnings, o.warnings...)
	return errors.Join(errs...)
}

func (c *Config) task(name string) *Task {
	for _, t := range c.Tasks {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Select returns the tasks named (ferry's --task NAME), in file order, or
// all tasks when names is empty. An unknown name is an error wrapping
// ErrInvalid that lists the known names.
func (c *Config) Select(names []string) ([]*Task, error) {
	if len(names) == 0 {
		return slices.Clone(c.Tasks), nil
	}
	want := make(map[string]bool, len(names))
	var unknown []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if c.task(n) == nil {
			if !slices.Contains(unknown, strconv.Quote(n)) {
				unknown = append(unknown, strconv.Quote(n))
			}
			continue
		}
		want[n] = true
	}
	if len(unknown) > 0 {
		known := make([]string, len(c.Tasks))
		for i, t := range c.Tasks {
			known[i] = t.Name
		}
		noun := "task"
		if len(unknown) > 1 {
			noun = "tasks"
		}
		return nil, &LoadError{Msg: fmt.Sprintf("unknown %s %s; the mapping files define: %s",
			noun, strings.Join(unknown, ", "), strings.Join(known, ", "))}
	}
	var out []*Task
	for _, t := range c.Tasks {
		if want[t.Name] {
			out = append(out, t)
		}
	}
	return out, nil
}

// Warnings returns what Load accepted but the user should know about, one
// line each, naming file, line, task and field: placeholders left in the
// file, ignored settings that change behaviour, tasks without mappings.
func (c *Config) Warnings() []string { return slices.Clone(c.warnings) }

// CheckSource returns an error (wrapping ErrInvalid) when the task cannot be
// used as a source of images because its source registry is a placeholder.
func (t *Task) CheckSource() error {
	if t.Source.HasPlaceholder("registry") || t.Source.Registry == "" {
		return &LoadError{File: t.File, Line: t.Source.Line,
			Msg: fmt.Sprintf("task %q: source registry is a placeholder; fill in the registry address", t.Name)}
	}
	return nil
}

// SourceRepository returns the full source repository name of m, e.g.
// "docker.io/library/redis" (see the package function SourceRepository).
func (t *Task) SourceRepository(m *Mapping) (string, error) {
	if err := t.CheckSource(); err != nil {
		return "", err
	}
	name, err := SourceRepository(t.Source.Registry, m.From)
	if err != nil {
		return "", &LoadError{File: t.File, Line: m.Line, Msg: fmt.Sprintf("task %q", t.Name), Err: err}
	}
	return name, nil
}

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

// decodeAuth decodes dregsy's auth: base64 of {"username": "...",
// "password": "..."} or of user:password. Its errors never contain the
// value or any part of it.
func decodeAuth(s string) (*Auth, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") {
		return &Auth{Anonymous: true}, nil
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(s) // unpadded
	}
	if err != nil {
		raw, err = base64.URLEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not valid base64 (expected base64 of {\"username\": \"...\", \"password\": \"...\"} or of user:password, or none)")
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("base64 decodes to binary data, not credentials")
	}
	text := strings.TrimRight(string(raw), "\r\n")
	if strings.HasPrefix(strings.TrimSpace(text), "{") {
		var j struct {
			Username *string `json:"username"`
			Password *string `json:"password"`
		}
		if err := json.Unmarshal([]byte(text), &j); err != nil {
			// The JSON error could quote part of the secret: do not wrap it.
			return nil, errors.New("base64 decodes to malformed JSON (expected {\"username\": \"...\", \"password\": \"...\"})")
		}
		if j.Username == nil || *j.Username == "" {
			if j.Password == nil || *j.Password == "" {
				return nil, errors.New("decoded JSON has no username or password (write auth: none for anonymous access)")
			}
			return nil, errors.New("decoded JSON has a password but no username")
		}
		a := &Auth{Username: *j.Username}
		if j.Password != nil {
			a.Password = *j.Password
		}
		return a, nil
	}
	user, pass, ok := strings.Cut(text, ":")
	if !ok {
		return nil, errors.New("base64 decodes to neither JSON {\"username\": ..., \"password\": ...} nor user:password")
	}
	if user == "" {
		return nil, errors.New("decoded user:password has an empty user")
	}
	return &Auth{Username: user, Password: pass}, nil
}

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
			s, valid := p.scalar(e.val, "from in "+label)
			if !valid {
				ok = false
				continue
			}
			s = strings.TrimSpace(s)
			if strings.HasPrefix(s, regexPrefix) {
				p.errorf(e.val.Line, "%s: repository regex in from: is not supported by ferry; list repositories explicitly", label)
				ok = false
				continue
			}
			path, err := cleanRepoPath(s)
			if err != nil {
				p.errorf(e.val.Line, "%s: from: %v", label, err)
				ok = false
				continue
			}
			if looksLikeHost(path) {
				p.warnf(e.val.Line, "%s: from %q starts with what looks like a registry host; like dregsy, ferry reads it as a path under the source registry (put the host in source: registry:)", label, s)
			}
			m.From = path
		case "to":
			s, valid := p.scalar(e.val, "to in "+label)
			if !valid {
				ok = false
				continue
			}
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if strings.HasPrefix(s, regexPrefix) {
				p.errorf(e.val.Line, "%s: regex in to: is not supported by ferry; write the target path explicitly", label)
				ok = false
				continue
			}
			path, err := cleanRepoPath(s)
			if err != nil {
				p.errorf(e.val.Line, "%s: to: %v", label, err)
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

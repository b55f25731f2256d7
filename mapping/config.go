package mapping

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
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

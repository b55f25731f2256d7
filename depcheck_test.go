package ferry_test

// The package boundaries of docs/architecture.md, pinned: arrows point down,
// only cmd/ferry knows terminals and cobra, internal/registry and
// internal/names stay leaves that every command can build on. The graph
// comes from `go list -json ./...` (transitive Deps and direct Imports of
// every package), so no dependency is needed to read it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ferry-airgap/ferry"

type goPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct, non-test
	Deps       []string // transitive, non-test
}

// packageGraph lists every package of the module and every package they
// depend on, keyed by import path.
func packageGraph(t *testing.T) map[string]*goPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the dependency check needs the go command on PATH: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-json", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	graph := map[string]*goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("reading go list output: %v", err)
		}
		graph[p.ImportPath] = &p
	}
	// A check over an empty or partial graph would pass for nothing.
	for _, want := range []string{module + "/cmd/ferry", module + "/internal/names", module + "/internal/registry", module + "/filter", module + "/bundle"} {
		if graph[want] == nil {
			t.Fatalf("go list did not report %s", want)
		}
	}
	return graph
}

func ours(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

func short(path string) string { return strings.TrimPrefix(path, module+"/") }

// ferryDeps is the module's packages among p's transitive dependencies.
func ferryDeps(p *goPackage) []string {
	var out []string
	for _, d := range p.Deps {
		if ours(d) {
			out = append(out, d)
		}
	}
	return out
}

// TestDepsTerminalOnlyInCmd: no package but cmd/ferry imports cobra,
// progressbar or golang.org/x/term. Cobra and progressbar may not be
// reached even through another package. golang.org/x/term is checked on
// ferry's own imports only: Helm's renderer (chart/, for `images: true`)
// links k8s.io/client-go, whose exec credential plugin imports x/term;
// ferry never runs that plugin, and no ferry package may use x/term itself.
func TestDepsTerminalOnlyInCmd(t *testing.T) {
	graph := packageGraph(t)
	for path, p := range graph {
		if !ours(path) || path == module+"/cmd/ferry" {
			continue
		}
		if slices.Contains(p.Imports, "golang.org/x/term") {
			t.Errorf("%s imports golang.org/x/term; only cmd/ferry may know terminals", short(path))
		}
	}
	cli := []string{"github.com/spf13/cobra", "github.com/schollz/progressbar/v3"}
	if cmd := graph[module+"/cmd/ferry"]; !slices.Contains(cmd.Deps, "github.com/spf13/cobra") {
		t.Fatalf("cmd/ferry does not depend on cobra: the graph is not what this test expects")
	}
	for path, p := range graph {
		if !ours(path) || path == module+"/cmd/ferry" {
			continue
		}
		for _, c := range cli {
			if slices.Contains(p.Deps, c) {
				t.Errorf("%s depends on %s; only cmd/ferry may know terminals and flags", short(path), c)
			}
		}
	}
}

// TestDepsNamesIsLeaf: internal/names imports no ferry package and nothing
// outside the standard library, so that every package may use it.
func TestDepsNamesIsLeaf(t *testing.T) {
	graph := packageGraph(t)
	names := graph[module+"/internal/names"]
	for _, d := range names.Deps {
		if p := graph[d]; p == nil || !p.Standard {
			t.Errorf("internal/names depends on %s; it must stay a standard-library-only leaf", d)
		}
	}
}

// TestDepsRegistryIsLeaf: internal/registry, the one transport every
// registry-facing command builds on, imports no ferry package except
// internal/names and other leaves (internal packages that import no ferry
// package themselves).
func TestDepsRegistryIsLeaf(t *testing.T) {
	graph := packageGraph(t)
	for _, d := range ferryDeps(graph[module+"/internal/registry"]) {
		p := graph[d]
		if !strings.HasPrefix(d, module+"/internal/") {
			t.Errorf("internal/registry depends on %s; it may use only leaf internal packages", short(d))
			continue
		}
		if fd := ferryDeps(p); len(fd) > 0 {
			t.Errorf("internal/registry depends on %s, which is not a leaf: it depends on %s", short(d), strings.Join(fd, ", "))
		}
	}
}

// TestDepsFilterDoesNoIO: filter is pure tag selection. Neither it nor any
// non-standard package it uses imports a package that reaches files, the
// network or other processes. (fmt reaches os inside the standard library,
// so the check is on direct imports along the way, not on all of Deps.)
func TestDepsFilterDoesNoIO(t *testing.T) {
	graph := packageGraph(t)
	ioPkgs := []string{"os", "os/exec", "io/fs", "path/filepath", "net", "net/http", "syscall"}
	filter := graph[module+"/filter"]
	check := append([]string{filter.ImportPath}, filter.Deps...)
	for _, path := range check {
		p := graph[path]
		if p == nil || p.Standard {
			continue
		}
		if ours(path) && path != filter.ImportPath && path != module+"/internal/names" {
			t.Errorf("filter depends on %s; it may use only internal/names from this module", short(path))
		}
		for _, imp := range p.Imports {
			if slices.Contains(ioPkgs, imp) {
				t.Errorf("filter depends on %s, which imports %s: filter must do no I/O", short(path), imp)
			}
		}
	}
}

// TestDepsBundleKnowsNoRegistry: the bundle format knows nothing about
// registries, their transport or their credentials.
func TestDepsBundleKnowsNoRegistry(t *testing.T) {
	graph := packageGraph(t)
	banned := []string{
		module + "/internal/registry", module + "/mapping", module + "/push",
		"net/http",
		"github.com/google/go-containerregistry/pkg/v1/remote",
		"github.com/google/go-containerregistry/pkg/authn",
	}
	for _, d := range graph[module+"/bundle"].Deps {
		if slices.Contains(banned, d) {
			t.Errorf("bundle depends on %s; the format must not know about registries", short(d))
		}
	}
}

package cache

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyUpstreamGoKnowsRegistries guards the package's boundary: only
// upstream.go talks to registries (internal/registry, ggcr's transport and
// remote), so that registry access can change in one file; and nothing
// here knows about the command line.
func TestOnlyUpstreamGoKnowsRegistries(t *testing.T) {
	registryOnly := []string{"github.com/ferry-airgap/ferry/internal/registry", "github.com/google/go-containerregistry/pkg/v1/remote",
		"github.com/google/go-containerregistry/pkg/name"}
	never := []string{"github.com/spf13/cobra", "github.com/schollz/progressbar"}
	des, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), n, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			for _, bad := range never {
				if strings.HasPrefix(p, bad) {
					t.Errorf("%s imports %s", n, p)
				}
			}
			for _, reg := range registryOnly {
				if strings.HasPrefix(p, reg) && n != "upstream.go" {
					t.Errorf("%s imports %s: only upstream.go may talk to registries", n, p)
				}
			}
		}
	}
}

package registry

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsNoFerryPackage: internal/registry sits below every other ferry
// package (export, push, sync and the mapping resolver reach registries
// through it), so it imports none of them; the leaf packages of names and
// shared defaults are the exceptions allowed.
func TestImportsNoFerryPackage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/ferry-airgap/ferry/") && p != "github.com/ferry-airgap/ferry/internal/names" && p != "github.com/ferry-airgap/ferry/internal/defaults" {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}

package static

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/serve"
)

// FuzzPaths: whatever names and tags a bundle brings, those checkPaths
// accepts become paths inside the tree, and nothing else does.
func FuzzPaths(f *testing.F) {
	for _, s := range [][2]string{{"proj/app", "1.0"}, {"../etc", "x"}, {"a/..", "b"}, {"a", "../../x"}, {"a//b", "t"}, {"a", ".x"}, {"A", "t"}, {"a/b.c-d__e", "V1.2_3-rc"}} {
		f.Add(s[0], s[1])
	}
	root := filepath.Join(string(filepath.Separator), "srv", "registry")
	t0 := &tree{root: root}
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	f.Fuzz(func(t *testing.T, name, tag string) {
		err := checkPaths([]serve.Content{{Name: name, Tags: map[string]v1.Hash{tag: h}}})
		if err != nil {
			return
		}
		for _, rel := range []string{"v2/" + name + "/manifests/" + tag, "v2/" + name + "/blobs/" + h.String(), "v2/" + name + "/tags/list"} {
			p, err := t0.abs(rel)
			if err != nil {
				t.Fatalf("accepted %q:%q, but %s: %v", name, tag, rel, err)
			}
			if !strings.HasPrefix(p, filepath.Join(root, "v2")+string(filepath.Separator)) {
				t.Fatalf("accepted %q:%q, which lands at %s", name, tag, p)
			}
			if filepath.Clean(p) != filepath.Join(root, filepath.FromSlash(rel)) {
				t.Fatalf("accepted %q:%q, whose path %s is not literal", name, tag, rel)
			}
			for _, c := range strings.Split(rel, "/") {
				if c == "" || c == "." || c == ".." || strings.HasPrefix(c, ".") {
					t.Fatalf("accepted %q:%q with component %q", name, tag, c)
				}
			}
		}
	})
}

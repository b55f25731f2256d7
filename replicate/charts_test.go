package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
)

// TestSyncSaysChartsAreForExport: sync copies images only; a file's charts:
// entries are a warning, and a file with nothing but charts is an error.
func TestSyncSaysChartsAreForExport(t *testing.T) {
	client, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chart := "charts:\n  - {repo: 'https://charts.example.com', name: web, version: 1.0.0}\n"
	both := write("both.yaml", "tasks:\n  - name: a\n    source: {registry: r.example.com}\n    mappings: [{from: x, tags: ['1']}]\n"+chart)
	only := write("only.yaml", chart)

	s, err := New(Options{Files: []string{both}, Client: client, Keychain: kc})
	if err != nil {
		t.Fatal(err)
	}
	tasks, warnings, err := s.Load()
	if err != nil || len(tasks) != 1 || !strings.Contains(strings.Join(warnings, "\n"), "1 charts: entries ignored") {
		t.Errorf("tasks and charts: %d tasks, warnings %q, %v", len(tasks), warnings, err)
	}
	s, _ = New(Options{Files: []string{only}, Client: client, Keychain: kc})
	if _, _, err := s.Load(); !errors.Is(err, mapping.ErrInvalid) || !strings.Contains(err.Error(), "ferry export") {
		t.Errorf("charts only: err = %v, want ErrInvalid pointing at ferry export", err)
	}
}

package export

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckOutput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mapping := write("m.yaml", []byte("tasks: []\n"))
	notes := write("notes.txt", []byte("my notes"))
	empty := write("empty.tar", nil)
	var b strings.Builder
	tw := tar.NewWriter(&b)
	_ = tw.WriteHeader(&tar.Header{Name: "oci-layout", Size: 0, Mode: 0o644})
	_ = tw.Close()
	old := write("old.tar", []byte(b.String()))
	link := filepath.Join(dir, "link.yaml")
	if err := os.Link(mapping, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		output string
		inputs []string
		force  bool
		want   string // "" = accepted
	}{
		{filepath.Join(dir, "new.tar"), []string{mapping}, false, ""},
		{old, []string{mapping}, false, ""},
		{empty, []string{mapping}, false, ""},
		{notes, nil, true, ""},
		{notes, nil, false, "exists and is not a ferry bundle"},
		{mapping, []string{mapping}, true, "would overwrite the input"},
		{filepath.Join(dir, ".", "m.yaml"), []string{mapping}, false, "would overwrite the input"},
		{link, []string{mapping}, false, "would overwrite the input"},
		{filepath.Join(dir, "c.tar"), []string{filepath.Join(dir, "c.tar.sha256")}, false, "would overwrite the input"},
		{filepath.Join(dir, "b.tar"), []string{filepath.Join(dir, "b.tar.sig")}, false, "would overwrite the input"},
		{dir, nil, false, "is a folder"},
		{filepath.Join(dir, "no", "b.tar"), nil, false, "does not exist"},
		{"-", nil, false, "written with seeks"},
	} {
		err := CheckOutput(tc.output, tc.inputs, tc.force)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckOutput(%s, %v) = %v, want nil", tc.output, tc.inputs, err)
		case tc.want != "" && (!errors.Is(err, ErrOutput) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckOutput(%s, %v) = %v, want %q", tc.output, tc.inputs, err, tc.want)
		}
	}
	if data, _ := os.ReadFile(notes); string(data) != "my notes" {
		t.Errorf("notes changed: %q", data)
	}
}

// TestRemoveStaleTemps: the temporary files killed exports of the output
// left (one file, or volumes) are removed; those of other outputs, and
// names that only look alike, are kept.
func TestRemoveStaleTemps(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b[1].tar")
	stale := []string{".b[1].tar.tmp-123", ".b[1].tar.000.tmp-9", ".b[1].tar.012.tmp-77"}
	kept := []string{"b[1].tar", ".b[1].tar.sha256", ".other.tar.tmp-1", ".b[1].tarx.tmp-1", ".b[1].tar.0001.tmp-1", "b1.tar.tmp-2"}
	for _, n := range append(append([]string(nil), stale...), kept...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleTemps(out)
	for _, n := range stale {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s was left", n)
		}
	}
	for _, n := range kept {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s was removed", n)
		}
	}
}

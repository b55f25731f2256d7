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

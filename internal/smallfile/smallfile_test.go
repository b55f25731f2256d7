package smallfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	content := bytes.Repeat([]byte("x"), 100)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}

	got, err := Read(path, 100)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("Read at the limit = %d bytes, %v; want the 100 bytes", len(got), err)
	}
	got, err = Read(path, 99)
	if !errors.Is(err, ErrTooLarge) || got != nil {
		t.Fatalf("Read over the limit = %d bytes, %v; want nil, ErrTooLarge", len(got), err)
	}
	if _, err := Read(filepath.Join(dir, "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v; want fs.ErrNotExist", err)
	}
	if _, err := Read(dir, 10); err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("Read of a directory: %v; want the read error", err)
	}
}

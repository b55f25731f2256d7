package bundle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// flipByte flips one byte in the middle of blob h inside the bundle file.
func flipByte(t *testing.T, path string, h v1.Hash) {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := r.Section(h)
	if err != nil {
		t.Fatal(err)
	}
	_, off, size := sr.Outer()
	r.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var one [1]byte
	if _, err := f.ReadAt(one[:], off+size/2); err != nil {
		t.Fatal(err)
	}
	one[0] ^= 1
	if _, err := f.WriteAt(one[:], off+size/2); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyFlippedManifestReportedOnce: a damaged manifest used to be two
// problems (the image tree could not be read; the blob's hash is wrong),
// and one more per image sharing it. It is one problem, under the
// manifest's own entry, naming every image that needs it.
func TestVerifyFlippedManifestReportedOnce(t *testing.T) {
	a := testImage(t, "base", "app a")
	out := filepath.Join(t.TempDir(), "bundle.tar")
	if _, err := Write(context.Background(), out, planFor(t, map[string]v1.Image{"proj/a": a, "proj/b": a}, nil)); err != nil {
		t.Fatal(err)
	}
	md, _ := a.Digest()
	flipByte(t, out, md)

	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := Verify(context.Background(), r, 2, nil)
	if !errors.Is(err, ErrVerify) || len(rep.Problems) != 1 {
		t.Fatalf("err = %v, problems = %v", err, rep.Problems)
	}
	p := rep.Problems[0]
	if p.Entry != BlobName(md) || !slices.Equal(p.Images, []string{"proj/a:v1", "proj/b:v1"}) || !errors.Is(p.Err, ErrDigestMismatch) {
		t.Fatalf("problem = %+v", p)
	}
	if err.Error() != "bundle failed verification: 1 problem(s)" {
		t.Fatalf("err = %v", err)
	}
}

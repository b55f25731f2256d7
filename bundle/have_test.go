package bundle

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestWriteHave: a bundle cut against an inventory records it, is format
// version 2 (and only such a bundle is), and reads the blobs it leaves to
// the registry as Missing.
func TestWriteHave(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, "base layer held", "app layer new")
	plan := planFor(t, map[string]v1.Image{"proj/a": img}, nil)
	plain, err := Write(context.Background(), filepath.Join(dir, "plain.tar"), planFor(t, map[string]v1.Image{"proj/a": img}, nil), WithClock(fixedClock))
	if err != nil {
		t.Fatal(err)
	}
	if plain.Record.FormatVersion != 1 {
		t.Fatalf("a bundle without inventories is format %d, want 1 (older ferry reads it)", plain.Record.FormatVersion)
	}
	layers, _ := img.Layers()
	held, _ := layers[0].Digest()
	kept := plan.Blobs[:0]
	for _, b := range plan.Blobs {
		if b.Digest == held {
			plan.BaseBlobs = append(plan.BaseBlobs, Blob{Digest: b.Digest.String(), Size: b.Size})
			continue
		}
		kept = append(kept, b)
	}
	plan.Blobs = kept
	ref := HaveRef{ID: strings.Repeat("c", 32), Registry: "harbor.internal:443", Prefix: "mirror", Created: time.Unix(1700000000, 0).UTC(), Repositories: []string{"proj/a"}}
	plan.Have = []HaveRef{ref}
	out := filepath.Join(dir, "have.tar")
	res, err := Write(context.Background(), out, plan, WithClock(fixedClock))
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.FormatVersion != 2 {
		t.Fatalf("format %d, want 2", res.Record.FormatVersion)
	}
	r, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := r.Record().Have
	if len(got) != 1 || got[0].ID != ref.ID || got[0].Target() != "harbor.internal:443/mirror" || !got[0].Created.Equal(ref.Created) {
		t.Fatalf("have = %+v", got)
	}
	tree, err := r.Tree(mustDigest(t, res.Record.Images[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	_ = tree.Walk(func(n *Node) error {
		if n.Missing {
			missing++
			if n.Digest != held {
				t.Errorf("missing %s, want %s", n.Digest, held)
			}
		}
		return nil
	})
	if missing != 1 {
		t.Fatalf("%d blobs missing, want 1", missing)
	}
	if rep, err := Verify(context.Background(), r, 2, nil); err != nil || len(rep.Bad) != 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// TestParseRecordHave: inventories need format 2 and well-formed fields;
// base blobs need a base bundle or an inventory; format 3 is refused as
// unsupported.
func TestParseRecordHave(t *testing.T) {
	blob := `{"digest":"sha256:` + hex64('b') + `","size":3}`
	have := func(v int, h string) string {
		return `{"formatVersion":` + string(rune('0'+v)) + `,"images":[],"blobs":[],"baseBlobs":[` + blob + `],"have":[` + h + `]}`
	}
	good := `{"id":"` + strings.Repeat("a", 32) + `","registry":"reg:5000","prefix":"m","created":"2026-01-01T00:00:00Z","repositories":["app/web"]}`
	if rec, err := ParseRecord([]byte(have(2, good))); err != nil || len(rec.Have) != 1 {
		t.Fatalf("valid: %v", err)
	}
	for _, c := range []struct {
		name, data string
		want       error
	}{
		{"format 1 with inventories", have(1, good), ErrCorrupt},
		{"format 3", have(3, good), ErrUnsupported},
		{"base blobs, no base", `{"formatVersion":1,"images":[],"blobs":[],"baseBlobs":[` + blob + `]}`, ErrCorrupt},
		{"bad id", have(2, strings.Replace(good, strings.Repeat("a", 32), "../x", 1)), ErrCorrupt},
		{"bad registry", have(2, strings.Replace(good, "reg:5000", "a b", 1)), ErrCorrupt},
		{"bad repository", have(2, strings.Replace(good, "app/web", "../etc", 1)), ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseRecord([]byte(c.data)); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func mustDigest(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

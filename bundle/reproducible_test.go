package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// reproPlan is a plan of three images sharing a base layer, with blobs and
// images in an order that depends on shuffle.
func reproPlan(t *testing.T, shuffle bool) *Plan {
	t.Helper()
	plan := planFor(t, map[string]v1.Image{
		"proj/a": testImage(t, "base", "a"),
		"proj/b": testImage(t, "base", "b"),
		"proj/c": testImage(t, "base", "c1", "c2"),
	}, nil)
	for i := range plan.Images {
		switch plan.Images[i].Target {
		case "proj/a":
			plan.Images[i].Tags = []string{"v1", "latest", "v1"}
		case "proj/c":
			plan.Images[i].Tags = []string{"v1", "latest"}
			if shuffle {
				plan.Images[i].Tags = []string{"latest", "v1"}
			}
		}
	}
	if shuffle {
		slices.Reverse(plan.Blobs)
		slices.Reverse(plan.Images)
	}
	return plan
}

// TestWriteReproducible: the same content gives the same bytes whatever
// the plan's order and the jobs limit; the id derives from the content.
func TestWriteReproducible(t *testing.T) {
	t.Setenv(SourceDateEpochEnv, "")
	dir := t.TempDir()
	write := func(name string, plan *Plan, opts ...WriteOption) (*Result, []byte) {
		out := filepath.Join(dir, name)
		res, err := Write(context.Background(), out, plan, append([]WriteOption{WithClock(fixedClock), WithFerryVersion("v1.2.3")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return res, data
	}
	r1, b1 := write("one.tar", reproPlan(t, false), WithJobs(1))
	r2, b2 := write("two.tar", reproPlan(t, true), WithJobs(8))
	if r1.SHA256 != r2.SHA256 || string(b1) != string(b2) {
		t.Fatalf("same content, different bytes: %s vs %s", r1.SHA256, r2.SHA256)
	}
	if len(r1.Record.ID) != 32 || r1.Record.ID != r2.Record.ID {
		t.Errorf("ids %q and %q: want one 32-hex content id", r1.Record.ID, r2.Record.ID)
	}
	// Canonical order: images by target, tags sorted and unique, blobs by
	// kind then digest.
	var targets []string
	for _, im := range r1.Record.Images {
		targets = append(targets, im.Target)
		if !slices.IsSorted(im.Tags) || len(slices.Compact(slices.Clone(im.Tags))) != len(im.Tags) {
			t.Errorf("image %s tags %v: not sorted and unique", im.Target, im.Tags)
		}
	}
	if !slices.Equal(targets, []string{"proj/a", "proj/b", "proj/c"}) {
		t.Errorf("image order %v", targets)
	}
	// A different time changes the bytes but not the id; different content
	// changes the id.
	later := func() time.Time { return fixedClock().Add(time.Hour) }
	r3, _ := write("three.tar", reproPlan(t, false), WithClock(later))
	if r3.SHA256 == r1.SHA256 || r3.Record.ID != r1.Record.ID {
		t.Errorf("another creation time: sha %s (was %s), id %s (was %s)", r3.SHA256, r1.SHA256, r3.Record.ID, r1.Record.ID)
	}
	other := reproPlan(t, false)
	other.Images[0].Tags = append(other.Images[0].Tags, "extra")
	r4, _ := write("four.tar", other)
	if r4.Record.ID == r1.Record.ID {
		t.Error("an extra tag left the content id unchanged")
	}
}

// TestWriteSourceDateEpoch: SOURCE_DATE_EPOCH sets ferry.json's created
// and every tar header's time; a bad value is refused before anything is
// written.
func TestWriteSourceDateEpoch(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(SourceDateEpochEnv, "1700000000")
	out := filepath.Join(dir, "b.tar")
	res, err := Write(context.Background(), out, reproPlan(t, false))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Unix(1700000000, 0).UTC()
	if !res.Record.Created.Equal(want) {
		t.Errorf("created = %s, want %s", res.Record.Created, want)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		if !h.ModTime.Equal(want) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("entry %s: time %s uid %d gid %d user %q group %q", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname)
		}
	}
	if n < 4 {
		t.Fatalf("only %d entries", n)
	}

	for _, bad := range []string{"yesterday", "-1", "1.5", "99999999999999"} {
		t.Setenv(SourceDateEpochEnv, bad)
		out := filepath.Join(dir, "bad.tar")
		_, err := Write(context.Background(), out, reproPlan(t, false))
		if !errors.Is(err, ErrSourceDateEpoch) {
			t.Errorf("SOURCE_DATE_EPOCH=%q: err = %v, want ErrSourceDateEpoch", bad, err)
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("SOURCE_DATE_EPOCH=%q left %s behind", bad, out)
		}
	}
}

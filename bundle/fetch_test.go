package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// withRestartingFetch turns every layer of plan into a Fetch that first
// writes wrong bytes of the right size, lets the bundle's checksum read
// them, then resets and writes the real bytes.
func withRestartingFetch(t *testing.T, plan *Plan) *Plan {
	t.Helper()
	out := *plan
	out.Blobs = nil
	for _, b := range plan.Blobs {
		if b.Open != nil {
			open := b.Open
			b.Open = nil
			b.Fetch = func(ctx context.Context, w Sink) error {
				if _, err := w.Write(bytes.Repeat([]byte{'x'}, int(b.Size))); err != nil {
					return err
				}
				time.Sleep(20 * time.Millisecond) // the checksum catches up with the wrong bytes
				if err := w.Reset(); err != nil {
					return err
				}
				rc, err := open(ctx)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(w, rc)
				return err
			}
		}
		out.Blobs = append(out.Blobs, b)
	}
	return &out
}

func TestWriteFetchRestartLeavesNoTrace(t *testing.T) {
	big := strings.Repeat("layer bytes that span volumes ", 400) // ~12 KiB
	plan := planFor(t, map[string]v1.Image{"proj/a": testImage(t, "base", big), "proj/b": testImage(t, "base", "app b")}, nil)
	for _, split := range []int64{0, 4096} {
		dir := t.TempDir()
		want, err := Write(context.Background(), filepath.Join(dir, "open.tar"), plan, WithClock(fixedClock), WithID("f"), WithSplit(split))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Write(context.Background(), filepath.Join(dir, "fetch.tar"), withRestartingFetch(t, plan), WithClock(fixedClock), WithID("f"), WithSplit(split), WithJobs(2))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Volumes) != len(want.Volumes) {
			t.Fatalf("split %d: %d volumes, want %d", split, len(got.Volumes), len(want.Volumes))
		}
		side, _ := os.ReadFile(got.Sidecar)
		lines := strings.Split(strings.TrimSpace(string(side)), "\n")
		for i := range got.Volumes {
			a, _ := os.ReadFile(want.Volumes[i])
			b, _ := os.ReadFile(got.Volumes[i])
			if !bytes.Equal(a, b) {
				t.Fatalf("split %d: volume %d differs from the bundle written without a restart", split, i)
			}
			sum := sha256.Sum256(b)
			if !strings.HasPrefix(lines[i], hex.EncodeToString(sum[:])+"  ") {
				t.Errorf("split %d: checksum line %q does not match the file (sha256 %x)", split, lines[i], sum)
			}
		}
	}
}

func TestWriteFetchTooLongLeavesNothing(t *testing.T) {
	plan := planFor(t, map[string]v1.Image{"proj/a": testImage(t, "base", "app")}, nil)
	for i := range plan.Blobs {
		if b := &plan.Blobs[i]; b.Open != nil {
			size := b.Size
			b.Open, b.Fetch = nil, func(ctx context.Context, w Sink) error {
				_, err := w.Write(make([]byte, size+1))
				return err
			}
		}
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "b.tar")
	_, err := Write(context.Background(), out, plan, WithClock(fixedClock))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "more than the") {
		t.Fatalf("err = %v, want a too-long blob refused", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("left behind: %v", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

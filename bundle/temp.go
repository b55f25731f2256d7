package bundle

import (
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tempBundle is a bundle being written: one temporary file, or one per
// volume, beside the output.
type tempBundle struct {
	names []string // temporary names
	vs    *volumeSet
	total int64
	sums  []string // SHA-256 of each file, once complete
	sig   []byte   // ferry.sig, when signed
	keep  bool     // remove leaves the files (WithKeepPartial)
	// offsets: where each blob's bytes start, counted across volumes.
	offsets map[v1.Hash]int64
}

func (tb *tempBundle) remove() {
	if tb == nil {
		return
	}
	if tb.vs != nil {
		_ = tb.vs.close()
		tb.vs = nil
	}
	if tb.keep {
		return
	}
	for _, n := range tb.names {
		_ = os.Remove(n)
	}
}

// finalNames are the names the files get: path, or path.000, path.001, ...
func (tb *tempBundle) finalNames(path string) []string {
	if len(tb.names) == 1 {
		return []string{path}
	}
	out := make([]string, len(tb.names))
	for i := range out {
		out[i] = VolumeName(path, i)
	}
	return out
}

// install renames the finished files into place and removes what an
// earlier bundle of the same name left that the new one does not replace
// (a single file where volumes now are, or surplus volumes), so that a
// reader never mixes two bundles.
func (tb *tempBundle) install(path string) error {
	final := tb.finalNames(path)
	for i, n := range tb.names {
		if err := os.Chmod(n, 0o644); err != nil {
			tb.remove()
			return err
		}
		if err := os.Rename(n, final[i]); err != nil {
			tb.remove()
			return fmt.Errorf("renaming bundle into place: %w", err)
		}
	}
	if len(final) > 1 {
		_ = os.Remove(path)
	}
	start := len(final)
	if len(final) == 1 {
		start = 0
	}
	for i := start; ; i++ {
		if err := os.Remove(VolumeName(path, i)); err != nil {
			break
		}
	}
	return nil
}

// createTemp creates the temporary files for a bundle of total bytes, split
// into volumes of fewer than split bytes when split > 0.
func createTemp(path string, total, split int64) (*tempBundle, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	part, count := total, 1
	if split > 0 {
		if split < 2048 {
			return nil, fmt.Errorf("volume size %d is too small", split)
		}
		part = split - 1 // each volume strictly below the size asked for
		count = int((total + part - 1) / part)
		if count > 999 {
			return nil, fmt.Errorf("a %d-byte bundle in volumes below %d bytes needs %d volumes; at most 999", total, split, count)
		}
	}
	tb := &tempBundle{total: total, vs: &volumeSet{part: part, total: total}}
	for i := 0; i < count; i++ {
		pattern := "." + base + ".tmp-*"
		if count > 1 {
			pattern = "." + filepath.Base(VolumeName(base, i)) + ".tmp-*"
		}
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			tb.remove()
			return nil, fmt.Errorf("creating bundle: %w", err)
		}
		tb.names = append(tb.names, f.Name())
		tb.vs.files = append(tb.vs.files, f)
		size := min(part, total-int64(i)*part)
		if err := f.Truncate(size); err != nil {
			tb.remove()
			return nil, fmt.Errorf("sizing bundle file to %d bytes: %w", size, err)
		}
	}
	return tb, nil
}

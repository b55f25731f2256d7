package export

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-airgap/ferry/bundle"
)

// ErrOutput: the output (-o) cannot or must not be written. Checked before
// any request to a registry, so that a mistake costs no pull.
var ErrOutput = errors.New("bad output")

// CheckOutput checks the bundle path before an export starts. It refuses
// an output that is one of the inputs (or would overwrite one with its
// .sha256 or .sig sidecar), a directory, a path in a folder that does not
// exist, and, unless force is set, an existing non-empty file that is not
// a ferry bundle: an export never destroys what it did not write.
func CheckOutput(output string, inputs []string, force bool) error {
	if output == "-" {
		return fmt.Errorf("%w: -o -: a bundle is written with seeks, not as a stream; write a file and send that (ferry export ... -o b.tar && cat b.tar)", ErrOutput)
	}
	for _, in := range inputs {
		for _, w := range []string{output, output + ".sha256", output + ".sig"} {
			if samePath(in, w) {
				return fmt.Errorf("%w: -o %s would overwrite the input %s", ErrOutput, output, in)
			}
		}
	}
	dir := filepath.Dir(output)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: -o %s: folder %s does not exist", ErrOutput, output, dir)
	}
	fi, err := os.Stat(output)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: -o %s: %v", ErrOutput, output, err)
	case fi.IsDir():
		return fmt.Errorf("%w: -o %s is a folder; give a file name, e.g. -o %s", ErrOutput, output, filepath.Join(output, "bundle.tar"))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: -o %s is not a regular file", ErrOutput, output)
	case force || fi.Size() == 0:
		return nil
	}
	if ok, err := isBundle(output); err != nil {
		return fmt.Errorf("%w: -o %s: %v", ErrOutput, output, err)
	} else if !ok {
		return fmt.Errorf("%w: -o %s exists and is not a ferry bundle; not overwriting it (--force replaces it)", ErrOutput, output)
	}
	return nil
}

// isBundle reports whether path starts like a bundle: a tar whose first
// entry is oci-layout (bundle-format.md fixes the order).
func isBundle(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h, err := tar.NewReader(io.LimitReader(f, 64<<10)).Next()
	if err != nil {
		return false, nil
	}
	return h.Name == bundle.LayoutFile, nil
}

// removeStaleTemps removes the temporary files that exports of output
// killed before they could clean up left beside it (.NAME.tmp-* and, for
// volumes, .NAME.NNN.tmp-*: bundle.Write's names). Premise: the caller
// holds output's lock (lockOutput) and has just written or confirmed the
// bundle, so no live export is writing these files: only an export of
// output writes them, and it holds the same lock while it does.
func removeStaleTemps(output string) {
	dir, base := filepath.Split(output)
	if dir == "" {
		dir = "."
	}
	for _, pattern := range []string{"." + base + ".tmp-*", "." + base + ".[0-9][0-9][0-9].tmp-*"} {
		names, _ := filepath.Glob(filepath.Join(dir, globEscape(pattern)))
		for _, n := range names {
			if info, err := os.Lstat(n); err == nil && info.Mode().IsRegular() {
				_ = os.Remove(n)
			}
		}
	}
}

// globEscape escapes glob metacharacters in the part of pattern before
// ".tmp-*" that comes from the file name, keeping the pattern's own.
func globEscape(pattern string) string {
	name, rest, _ := strings.Cut(pattern, ".tmp-")
	digits := strings.HasSuffix(name, ".[0-9][0-9][0-9]")
	name = strings.TrimSuffix(name, ".[0-9][0-9][0-9]")
	var b strings.Builder
	for _, r := range name {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	if digits {
		b.WriteString(".[0-9][0-9][0-9]")
	}
	return b.String() + ".tmp-" + rest
}

// samePath reports whether a and b name the same file: the same clean
// absolute path, or (both existing) the same inode.
func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	ab, err2 := filepath.Abs(b)
	if err1 == nil && err2 == nil && aa == ab {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

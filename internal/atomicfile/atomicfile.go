// Package atomicfile writes small files so that a reader sees the old file
// or the whole new one, never a part: a temporary file beside the target,
// with its final mode from the start, synced, then renamed.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically with mode perm. The temporary
// file has mode perm before any byte is written, so a private key is never
// readable by others, even briefly. After a failure no temporary file is
// left and path is as it was.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// Package smallfile reads files that must be small (metadata, manifests,
// signatures) without trusting their size: at most one byte past the limit
// is ever read.
package smallfile

import (
	"errors"
	"io"
	"os"
)

// ErrTooLarge is returned by Read for a file longer than its limit. Callers
// wrap it, or replace it, with a message that says what the file is.
var ErrTooLarge = errors.New("file larger than its limit")

// Read returns the content of path, or ErrTooLarge when it is longer than
// max bytes. Other errors are those of os.Open and Read, unwrapped.
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, ErrTooLarge
	}
	return data, nil
}

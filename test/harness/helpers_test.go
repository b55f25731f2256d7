package harness

import (
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func v1SHA256(r io.Reader) (string, int64, error) {
	h, n, err := v1.SHA256(r)
	return h.String(), n, err
}

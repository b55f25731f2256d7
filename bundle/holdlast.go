package bundle

import "io"

// HoldLast passes on the bytes of rc, a reader of a size-byte blob that
// checks them as they pass (Reader.Blob, NewVerifier, push's
// Source.OpenBlob), except that it reads the blob's last byte on its
// own and passes it on only when that read, which completes the check,
// succeeded. A damaged blob's request body so always ends short of its
// Content-Length, whatever the transport buffers or writes at once: the
// registry (or object store) sees the upload cut and can commit nothing.
func HoldLast(rc io.ReadCloser, size int64) io.ReadCloser {
	return &holdLast{ReadCloser: rc, left: size}
}

type holdLast struct {
	io.ReadCloser
	left int64 // bytes before the end of the blob
	last [1]byte
}

func (h *holdLast) Read(p []byte) (int, error) {
	switch {
	case h.left <= 0 || len(p) == 0:
		return h.ReadCloser.Read(p)
	case h.left == 1:
		n, err := h.ReadCloser.Read(h.last[:])
		if err != nil && err != io.EOF {
			return 0, err
		}
		h.left -= int64(n)
		return copy(p, h.last[:n]), err
	case int64(len(p)) >= h.left:
		p = p[:h.left-1]
	}
	n, err := h.ReadCloser.Read(p)
	h.left -= int64(n)
	return n, err
}

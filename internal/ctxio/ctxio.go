// Package ctxio stops long copies once their context is done.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r, whose Read fails with ctx's error once ctx is done:
// a copy of a large blob then stops at its next chunk when the command is
// cancelled.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// tempSource reads the blobs of a bundle being written: from the plan when
// in memory, else from their place in the file (all in place by then).
type tempSource struct {
	f     io.ReaderAt
	blobs map[v1.Hash]*entry
}

func (s tempSource) stored(h v1.Hash) bool { _, ok := s.blobs[h]; return ok }

func (s tempSource) small(h v1.Hash, max int64) ([]byte, error) {
	e, ok := s.blobs[h]
	switch {
	case !ok:
		return nil, fmt.Errorf("blob %s: %w", h, ErrBlobNotFound)
	case e.data != nil:
		return e.data, nil // checked against its digest when written
	case e.size > max:
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d allowed here", h, e.size, max)
	}
	b := make([]byte, e.size)
	if _, err := s.f.ReadAt(b, e.dataOffset()); err != nil {
		return nil, fmt.Errorf("reading blob %s back: %w", h, err)
	}
	if got := sha256Hex(b); got != h.Hex {
		return nil, fmt.Errorf("blob %s: %w: content is sha256:%s", h, ErrDigestMismatch, got)
	}
	return b, nil
}

// deepCheckTemp decompresses every layer of the bundle being written (all
// its blobs are in place in f and verified) and checks it against the
// diff_ids its image configs list. It returns the blobs that failed: a
// layer that does not match or decompresses beyond the limits, or a config
// whose diff_ids cannot be paired with its layers; or the context's error.
func deepCheckTemp(ctx context.Context, f io.ReaderAt, entries []*entry, plan *Plan, o *writeOptions) (map[v1.Hash]error, error) {
	src := tempSource{f: f, blobs: map[v1.Hash]*entry{}}
	for _, e := range entries {
		if e.blob != nil {
			src.blobs[e.blob.Digest] = e
		}
	}
	images := make([]Image, len(plan.Images))
	for i, pi := range plan.Images {
		images[i] = pi.Image
	}
	dp := planDeep(images, src)
	failed := map[v1.Hash]error{}
	for cfg, err := range dp.bad {
		failed[cfg] = err
	}
	layers := make([]v1.Hash, 0, len(dp.layers))
	for h := range dp.layers {
		layers = append(layers, h)
	}
	sort.Slice(layers, func(i, j int) bool { return layers[i].Hex < layers[j].Hex })
	o.logger.Info("checking layers against their diff_ids", "layers", len(layers))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	for _, h := range layers {
		g.Go(func() error {
			e := src.blobs[h]
			err := deepCheckOne(gctx, io.NewSectionReader(f, e.dataOffset(), e.size), h, dp.layers[h], *o.deep)
			if err != nil && gctx.Err() == nil {
				mu.Lock()
				failed[h] = err
				mu.Unlock()
			}
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return failed, nil
}

// deepCheckOne decompresses layer h and returns an error naming every
// expectation it fails.
func deepCheckOne(ctx context.Context, sr *io.SectionReader, h v1.Hash, expects []*layerExpect, lim DeepLimits) error {
	res, err := inflateLayer(ctx, sr, sr.Size(), lim, nil)
	switch {
	case err != nil:
		return fmt.Errorf("layer %s: %w", h, err)
	case res.digest != h.Hex:
		return fmt.Errorf("layer %s: %w: content is sha256:%s", h, ErrDigestMismatch, res.digest)
	}
	var errs []error
	for _, m := range mismatches(h, res.diffID, expects) {
		errs = append(errs, m.err)
	}
	return errors.Join(errs...)
}

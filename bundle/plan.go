package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/names"
)

// partialFailure reports images that failed; with keep-going the bundle
// holds the rest.
type partialFailure struct {
	failures    []Failure
	failedBlobs map[v1.Hash]error
}

func (p *partialFailure) Error() string {
	if len(p.failures) == 1 {
		return p.failures[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d images failed:", len(p.failures))
	for _, f := range p.failures {
		b.WriteString("\n  ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap exposes each failure's cause to errors.Is.
func (p *partialFailure) Unwrap() []error {
	out := make([]error, 0, len(p.failures))
	for _, f := range p.failures {
		out = append(out, f.Err)
	}
	return out
}

// Failures returns the per-image failures inside err, if any.
func Failures(err error) []Failure {
	var pf *partialFailure
	if errors.As(err, &pf) {
		return pf.failures
	}
	return nil
}

func validatePlan(plan *Plan) error {
	if len(plan.Images) == 0 {
		return errors.New("nothing to write: no images")
	}
	have := make(map[v1.Hash]*PlannedBlob, len(plan.Blobs))
	for i := range plan.Blobs {
		b := &plan.Blobs[i]
		if b.Digest.Algorithm != "sha256" || !names.IsSHA256Hex(b.Digest.Hex) {
			return fmt.Errorf("blob %q: only sha256 digests can be stored", b.Digest)
		}
		if b.Size < 0 {
			return fmt.Errorf("blob %s: negative size", b.Digest)
		}
		if _, dup := have[b.Digest]; dup {
			return fmt.Errorf("blob %s planned twice", b.Digest)
		}
		if b.Data == nil && b.Open == nil && b.Fetch == nil {
			return fmt.Errorf("blob %s has no content", b.Digest)
		}
		have[b.Digest] = b
	}
	base := map[v1.Hash]bool{}
	for _, b := range plan.BaseBlobs {
		h, err := ParseDigest(b.Digest)
		if err != nil {
			return fmt.Errorf("base blob: %w", err)
		}
		if _, dup := have[h]; dup {
			return fmt.Errorf("blob %s is both stored and left to the base", h)
		}
		base[h] = true
	}
	if len(plan.BaseBlobs) > 0 && plan.Base == "" && len(plan.Have) == 0 {
		return errors.New("base blobs without a base bundle id or an inventory")
	}
	for _, im := range plan.Images {
		d, err := ParseDigest(im.Digest)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.Source, err)
		}
		if b, ok := have[d]; !ok || b.Kind != KindManifest {
			return fmt.Errorf("image %s: its manifest %s is not planned", im.Source, d)
		}
		for _, h := range im.Blobs {
			if _, ok := have[h]; !ok && !base[h] {
				return fmt.Errorf("image %s: blob %s is not planned", im.Source, h)
			}
		}
	}
	return nil
}

func newPartialFailure(plan *Plan, failed map[v1.Hash]error) *partialFailure {
	pf := &partialFailure{failedBlobs: failed}
	for _, im := range plan.Images {
		for _, h := range im.Blobs {
			if err, bad := failed[h]; bad {
				pf.failures = append(pf.failures, Failure{Image: describe(im.Image), Digest: h.String(), Err: err})
				break
			}
		}
	}
	if len(pf.failures) == 0 { // a blob no image needs failed
		for h, err := range failed {
			pf.failures = append(pf.failures, Failure{Image: "(unreferenced)", Digest: h.String(), Err: err})
		}
	}
	return pf
}

func describe(im Image) string {
	return im.Target + ":" + strings.Join(im.Tags, ",") + " (" + im.Source + ")"
}

// reducePlan drops the images that need a failed blob, and every blob only
// they needed; the kept blobs are read back from the first attempt's file.
func reducePlan(plan *Plan, failed map[v1.Hash]error, tb *tempBundle) (*Plan, error) {
	entries := map[v1.Hash]int64{}
	r, err := scan(tb.vs, tb.total)
	if err != nil {
		return nil, err
	}
	for name, e := range r {
		if h, err := ParseDigest("sha256:" + strings.TrimPrefix(name, BlobPrefix)); err == nil {
			entries[h] = e.offset
		}
	}
	out := &Plan{Base: plan.Base, BaseBlobs: plan.BaseBlobs, BaseImages: plan.BaseImages, Have: plan.Have}
	keep := map[v1.Hash]bool{}
	for _, im := range plan.Images {
		ok := true
		for _, h := range im.Blobs {
			if _, bad := failed[h]; bad {
				ok = false
				break
			}
		}
		if ok {
			out.Images = append(out.Images, im)
			for _, h := range im.Blobs {
				keep[h] = true
			}
		}
	}
	if len(out.Images) == 0 {
		return nil, errors.New("no image could be exported")
	}
	for _, b := range plan.Blobs {
		if !keep[b.Digest] {
			continue
		}
		nb := b
		if nb.Data == nil {
			off, ok := entries[b.Digest]
			if !ok {
				return nil, fmt.Errorf("blob %s missing from the first attempt", b.Digest)
			}
			size := b.Size
			nb.Origin = "the first attempt"
			nb.Fetch = nil
			src := tb.vs
			nb.Open = func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(src, off, size)), nil
			}
		}
		out.Blobs = append(out.Blobs, nb)
	}
	return out, nil
}

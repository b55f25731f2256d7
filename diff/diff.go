// Package diff compares two bundles: which tags were added, removed or moved
// to another digest, which images came and went, how many bytes of blobs
// the newer bundle brings that the older did not hold, and, for a moved
// tag, which layers changed. It reads bundles through bundle.Reader, so
// volumes and delta bundles work without extracting anything.
//
// A bundle describes a state of the target registry: a full bundle its
// images, a delta its images plus the images its base chain already carried
// (ferry.json's baseImages). Comparing a base with its delta therefore shows
// what importing the delta changes.
package diff

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/ferry-airgap/ferry/bundle"
)

// Result is what changed from Old to New. Every list is sorted (by target,
// then tag or digest), so equal inputs give equal output.
type Result struct {
	Old Side `json:"old"`
	New Side `json:"new"`

	TagsAdded   []Tag  `json:"tagsAdded"`
	TagsRemoved []Tag  `json:"tagsRemoved"`
	TagsMoved   []Move `json:"tagsMoved"`

	ImagesAdded   []Image `json:"imagesAdded"`
	ImagesRemoved []Image `json:"imagesRemoved"`

	// NewBlobs and NewBytes count the blobs New's images need that Old's
	// did not: what importing New transfers on top of Old.
	NewBlobs int   `json:"newBlobs"`
	NewBytes int64 `json:"newBytes"`
}

// Side names one of the two bundles.
type Side struct {
	Path    string `json:"path"`
	ID      string `json:"id"`
	Base    string `json:"base,omitempty"` // the bundle this one is a delta of
	Created string `json:"created"`
	Images  int    `json:"images"` // images in the state it describes (base chain included)
	Tags    int    `json:"tags"`
}

// Tag is one TARGET:TAG and the digest it points to.
type Tag struct {
	Target string `json:"target"`
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
}

// Move is a tag that points to another digest in New.
type Move struct {
	Target    string `json:"target"`
	Tag       string `json:"tag"`
	OldDigest string `json:"oldDigest"`
	NewDigest string `json:"newDigest"`
	// Layers lists the layers of the new image that the old one did not
	// have (Added) and the other way round (Removed), over all platforms.
	// LayersKnown is false when either image's manifest is not in its
	// bundle (it came with a delta's base): then both lists are empty.
	LayersKnown   bool   `json:"layersKnown"`
	LayersAdded   []Blob `json:"layersAdded"`
	LayersRemoved []Blob `json:"layersRemoved"`
}

// Image is one image (target path and digest) with its tags.
type Image struct {
	Target string   `json:"target"`
	Digest string   `json:"digest"`
	Tags   []string `json:"tags"`
}

// Blob is a blob digest and size.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Differs reports whether anything a registry would see changed: a tag or
// an image. (Two bundles of equal content but another creation time do not
// differ.)
func (r *Result) Differs() bool {
	return len(r.TagsAdded)+len(r.TagsRemoved)+len(r.TagsMoved)+len(r.ImagesAdded)+len(r.ImagesRemoved) > 0
}

// Bundles compares the bundles old and new. It reads ferry.json and, for
// moved tags, the two images' manifests (verified against their digests).
func Bundles(ctx context.Context, oldB, newB *bundle.Reader) (*Result, error) {
	oldS, newS := stateOf(oldB), stateOf(newB)
	res := &Result{
		Old: side(oldB, oldS), New: side(newB, newS),
		TagsAdded: []Tag{}, TagsRemoved: []Tag{}, TagsMoved: []Move{},
		ImagesAdded: []Image{}, ImagesRemoved: []Image{},
	}
	compareTags(res, oldS, newS)
	res.ImagesAdded, res.ImagesRemoved = compareImages(oldS, newS), compareImages(newS, oldS)
	for i := range res.TagsMoved {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := layerChanges(oldB, newB, &res.TagsMoved[i]); err != nil {
			return nil, err
		}
	}
	res.NewBlobs, res.NewBytes = newBlobs(oldS, newS)
	return res, nil
}

// state is the registry state a bundle describes.
type state struct {
	tags   map[ref]string            // TARGET:TAG → digest
	images map[image]map[string]bool // (target, digest) → tags
	blobs  map[string]int64          // digest → size: stored, left to the base, and base images' manifests
}

type ref struct{ target, tag string }
type image struct{ target, digest string }

func stateOf(r *bundle.Reader) *state {
	rec := r.Record()
	s := &state{tags: map[ref]string{}, images: map[image]map[string]bool{}, blobs: map[string]int64{}}
	add := func(target, digest string, tags []string) {
		k := image{target, digest}
		if s.images[k] == nil {
			s.images[k] = map[string]bool{}
		}
		for _, t := range tags {
			s.tags[ref{target, t}] = digest
			s.images[k][t] = true
		}
	}
	// Base images first: an image the delta carries itself wins a tag.
	for _, bi := range rec.BaseImages {
		add(bi.Target, bi.Digest, bi.Tags)
		s.blobs[bi.Digest] = 0
	}
	for _, im := range rec.Images {
		add(im.Target, im.Digest, im.Tags)
	}
	for _, bs := range [][]bundle.Blob{rec.BaseBlobs, rec.Blobs} {
		for _, b := range bs {
			s.blobs[b.Digest] = b.Size
		}
	}
	return s
}

func side(r *bundle.Reader, s *state) Side {
	rec := r.Record()
	return Side{Path: r.Path(), ID: rec.ID, Base: rec.Base, Created: rec.Created.UTC().Format("2006-01-02T15:04:05Z"),
		Images: len(s.images), Tags: len(s.tags)}
}

func compareTags(res *Result, oldS, newS *state) {
	for k, nd := range newS.tags {
		switch od, ok := oldS.tags[k]; {
		case !ok:
			res.TagsAdded = append(res.TagsAdded, Tag{k.target, k.tag, nd})
		case od != nd:
			res.TagsMoved = append(res.TagsMoved, Move{Target: k.target, Tag: k.tag, OldDigest: od, NewDigest: nd, LayersAdded: []Blob{}, LayersRemoved: []Blob{}})
		}
	}
	for k, od := range oldS.tags {
		if _, ok := newS.tags[k]; !ok {
			res.TagsRemoved = append(res.TagsRemoved, Tag{k.target, k.tag, od})
		}
	}
	byTag := func(a, b Tag) int { return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Tag, b.Tag)) }
	slices.SortFunc(res.TagsAdded, byTag)
	slices.SortFunc(res.TagsRemoved, byTag)
	slices.SortFunc(res.TagsMoved, func(a, b Move) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Tag, b.Tag))
	})
}

// compareImages lists the images of a that b does not have.
func compareImages(b, a *state) []Image {
	out := []Image{}
	for k, tags := range a.images {
		if _, ok := b.images[k]; ok {
			continue
		}
		im := Image{Target: k.target, Digest: k.digest, Tags: []string{}}
		for t := range tags {
			im.Tags = append(im.Tags, t)
		}
		slices.Sort(im.Tags)
		out = append(out, im)
	}
	slices.SortFunc(out, func(x, y Image) int {
		return cmp.Or(cmp.Compare(x.Target, y.Target), cmp.Compare(x.Digest, y.Digest))
	})
	return out
}

func newBlobs(oldS, newS *state) (n int, bytes int64) {
	for d, size := range newS.blobs {
		if _, ok := oldS.blobs[d]; !ok {
			n++
			bytes += size
		}
	}
	return n, bytes
}

// layerChanges fills in which layers a moved tag's images differ by, when
// both manifests are in their bundles.
func layerChanges(oldB, newB *bundle.Reader, m *Move) error {
	oldL, ok, err := layers(oldB, m.OldDigest)
	if err != nil || !ok {
		return err
	}
	newL, ok, err := layers(newB, m.NewDigest)
	if err != nil || !ok {
		return err
	}
	m.LayersKnown = true
	m.LayersAdded, m.LayersRemoved = minus(newL, oldL), minus(oldL, newL)
	return nil
}

// layers returns the layers (not configs) of the image with the given
// digest, over every platform of an index. ok is false when the bundle does
// not hold the image's manifest (a delta's base image).
func layers(r *bundle.Reader, digest string) (map[string]int64, bool, error) {
	h, err := bundle.ParseDigest(digest)
	if err != nil {
		return nil, false, fmt.Errorf("bundle %s: %w", r.Path(), err)
	}
	if !r.Has(h) {
		return nil, false, nil
	}
	root, err := r.Tree(h)
	if err != nil {
		return nil, false, fmt.Errorf("bundle %s: image %s: %w", r.Path(), digest, err)
	}
	out := map[string]int64{}
	known := true
	var walk func(n *bundle.Node)
	walk = func(n *bundle.Node) {
		switch {
		case n.Missing && (n.MediaType.IsIndex() || n.MediaType.IsImage()):
			known = false // a platform manifest left to a delta's base
		case n.MediaType.IsIndex():
			for _, c := range n.Children {
				walk(c)
			}
		case len(n.Children) > 0: // a manifest: its config, then its layers
			for _, c := range n.Children[1:] {
				out[c.Digest.String()] = c.Size
			}
		}
	}
	walk(root)
	return out, known, nil
}

// minus lists the blobs of a not in b, sorted by digest.
func minus(a, b map[string]int64) []Blob {
	out := []Blob{}
	for d, size := range a {
		if _, ok := b[d]; !ok {
			out = append(out, Blob{d, size})
		}
	}
	slices.SortFunc(out, func(x, y Blob) int { return cmp.Compare(x.Digest, y.Digest) })
	return out
}

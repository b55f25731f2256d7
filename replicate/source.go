package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/mapping"
)

// registrySource is a push.Source over a resolution: manifests come from
// the resolution (already fetched and checked by digest), configs and
// layers are streamed from the source registry with one GET each and
// verified as they pass.
type registrySource struct {
	name   string
	images []bundle.Image
	trees  map[v1.Hash]*bundle.Node
	origin map[v1.Hash]origin // config or layer → where to GET it
	// upstream: for rewritten indexes (platform subsets), root digest →
	// the digest upstream serves.
	upstream map[v1.Hash]v1.Hash
	src      *mapping.Sources
	tasks    map[string]*mapping.Task

	// stop, once closed, refuses new blob downloads (a gentle stop).
	stop <-chan struct{}

	gets atomic.Int64 // blob GETs sent
}

type origin struct {
	repo name.Repository
	task string
	what string // the image's source reference, for errors
}

// newRegistrySource groups resolved images as export does: one image per
// target path and root digest, with all its tags (a digest pin without a
// tag is tagged sha256-HEX), and builds each image's tree.
func newRegistrySource(label string, images []*mapping.Image, src *mapping.Sources, tasks map[string]*mapping.Task) (*registrySource, error) {
	s := &registrySource{name: label, trees: map[v1.Hash]*bundle.Node{}, origin: map[v1.Hash]origin{},
		upstream: map[v1.Hash]v1.Hash{}, src: src, tasks: tasks}
	for _, g := range mapping.GroupImages(images) {
		im := g.Image
		if _, ok := s.trees[im.Root.Digest]; !ok {
			t, err := tree(im)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", im.Source, err)
			}
			s.trees[im.Root.Digest] = t
		}
		rec := bundle.Image{Source: im.Source, Target: im.Target, Tags: g.Tags, Digest: im.Root.Digest.String(),
			MediaType: string(im.Root.MediaType), Platforms: im.Platforms, Size: im.Size(), Task: im.Task}
		if im.UpstreamDigest.Hex != "" {
			rec.UpstreamDigest = im.UpstreamDigest.String()
			s.upstream[im.Root.Digest] = im.UpstreamDigest
		}
		s.images = append(s.images, rec)
	}
	// Blobs are fetched from the first image (of any group) that needs them.
	for _, im := range images {
		for _, d := range im.Blobs {
			if _, ok := s.origin[d.Digest]; !ok {
				s.origin[d.Digest] = origin{repo: im.Repository, task: im.Task, what: im.Source}
			}
		}
	}
	return s, nil
}

// tree builds the bundle tree of a resolved image from the manifests the
// resolution holds.
func tree(im *mapping.Image) (*bundle.Node, error) {
	docs := map[v1.Hash]mapping.Manifest{im.Root.Digest: im.Root}
	for _, c := range im.Children {
		docs[c.Digest] = c
	}
	var build func(d v1.Descriptor, depth int) (*bundle.Node, error)
	build = func(d v1.Descriptor, depth int) (*bundle.Node, error) {
		n := &bundle.Node{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Platform: d.Platform}
		m, ok := docs[d.Digest]
		if !ok {
			if depth > 0 && oci.KindOf(d.MediaType) == oci.KindUnknown {
				return n, nil // config or layer
			}
			return nil, fmt.Errorf("manifest %s was not resolved", d.Digest)
		}
		n.MediaType, n.Data, n.Size = m.MediaType, m.Data, int64(len(m.Data))
		refs, err := oci.Refs(m.MediaType, m.Data)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		for _, c := range refs {
			cn, err := build(c, depth+1)
			if err != nil {
				return nil, err
			}
			n.Children = append(n.Children, cn)
		}
		return n, nil
	}
	return build(v1.Descriptor{Digest: im.Root.Digest, MediaType: im.Root.MediaType}, 0)
}

// Name implements push.Source.
func (s *registrySource) Name() string { return s.name }

// Images implements push.Source.
func (s *registrySource) Images() []bundle.Image { return s.images }

// Tree implements push.Source.
func (s *registrySource) Tree(h v1.Hash) (*bundle.Node, error) {
	t, ok := s.trees[h]
	if !ok {
		return nil, fmt.Errorf("manifest %s was not resolved", h)
	}
	return t, nil
}

// OpenBlob implements push.Source: one GET at the source registry, the
// body checked for size and digest as it streams into the target.
func (s *registrySource) OpenBlob(ctx context.Context, h v1.Hash, size int64) (io.ReadCloser, error) {
	select {
	case <-s.stop:
		return nil, fmt.Errorf("blob %s: not started: %w", h, errStopped)
	default:
	}
	o, ok := s.origin[h]
	if !ok {
		return nil, fmt.Errorf("blob %s: no image of this round needs it (nothing to fetch it from)", h)
	}
	r, err := s.src.Repo(ctx, o.repo, s.tasks[o.task])
	if err != nil {
		return nil, err
	}
	s.gets.Add(1)
	// Checked as it streams: wrong bytes end the upload with an error
	// before the target commits them, and push's retry fetches once more.
	body, err := r.OpenBlob(ctx, h, size)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", o.what, err)
	}
	return body, nil
}

// errStopped: the sync was asked to stop before the blob started.
var errStopped = errors.New("stopping")

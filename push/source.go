package push

import (
	"context"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// Source is a place images are read from on their way into the target: a
// bundle (ferry import) or another registry (ferry sync). The pipeline is
// the same for both; what only one kind can do lives in the optional
// interfaces Verifier and Delta.
type Source interface {
	// Name names the source in summaries and errors ("the bundle X",
	// "registry Y").
	Name() string
	// Images lists the images to push: target path (without prefix), tags,
	// digest and media type of the root manifest or index.
	Images() []bundle.Image
	// Tree returns the image rooted at manifest h: manifests with their
	// bytes, configs and layers with their sizes.
	Tree(h v1.Hash) (*bundle.Node, error)
	// OpenBlob streams a config or layer of size bytes. The reader checks
	// size and digest as the bytes pass: the read that completes the blob
	// fails (wrapping bundle.ErrCorrupt) when they are not what h names.
	OpenBlob(ctx context.Context, h v1.Hash, size int64) (io.ReadCloser, error)
}

// Verifier is a Source that can check its bytes before anything moves (a
// bundle): the blobs in only (nil: all). Blobs named in the report's Bad
// stop the images that need them.
type Verifier interface {
	Verify(ctx context.Context, only map[v1.Hash]bool, jobs int, p bundle.Progress) (*bundle.Report, error)
}

// Delta is a Source that leaves some blobs to an earlier one (a delta
// bundle): Base names it, and tree nodes it leaves out are Missing.
type Delta interface {
	Base() string
}

// BundleSource reads images from a bundle.
type BundleSource struct{ R *bundle.Reader }

// Name implements Source.
func (b BundleSource) Name() string { return "bundle " + b.R.Path() }

// Images implements Source.
func (b BundleSource) Images() []bundle.Image { return b.R.Record().Images }

// Tree implements Source.
func (b BundleSource) Tree(h v1.Hash) (*bundle.Node, error) {
	t, err := b.R.Tree(h)
	if err != nil {
		return nil, fmt.Errorf("reading image from the bundle: %w", err)
	}
	return t, nil
}

// OpenBlob implements Source; the bundle's reader verifies as it reads.
func (b BundleSource) OpenBlob(_ context.Context, h v1.Hash, _ int64) (io.ReadCloser, error) {
	return b.R.Blob(h)
}

// Verify implements Verifier.
func (b BundleSource) Verify(ctx context.Context, only map[v1.Hash]bool, jobs int, p bundle.Progress) (*bundle.Report, error) {
	if only == nil {
		return bundle.Verify(ctx, b.R, jobs, p)
	}
	return bundle.VerifyBlobs(ctx, b.R, only, jobs, p)
}

// Base implements Delta.
func (b BundleSource) Base() string { return b.R.Record().Base }

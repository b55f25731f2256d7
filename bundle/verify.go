package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/internal/ctxio"
	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/oci"
)

// Node is a manifest or blob in an image's tree.
type Node struct {
	Digest    v1.Hash
	MediaType types.MediaType
	Size      int64
	// Platform is set on the children of an index that name one.
	Platform *v1.Platform
	// Children: an index's manifests, or a manifest's config and layers.
	Children []*Node
	// Data holds a manifest's bytes (nil for config and layer blobs).
	Data []byte
	// Missing is true when the blob is not in the bundle (allowed only in a
	// delta bundle, whose base holds it).
	Missing bool
}

// maxDepth bounds nested indexes (an index of indexes of ...).
const maxDepth = 4

// Tree reads the image rooted at manifest h from the bundle, checking each
// manifest's digest. A missing manifest or blob is an error unless the
// bundle is a delta, where it is marked Missing.
func (r *Reader) Tree(h v1.Hash) (*Node, error) {
	size, _ := r.BlobSize(h)
	return r.tree(v1.Descriptor{Digest: h, Size: size}, 0)
}

func (r *Reader) tree(d v1.Descriptor, depth int) (*Node, error) {
	n := &Node{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Platform: d.Platform}
	if d.Digest.Algorithm != "sha256" || !names.IsSHA256Hex(d.Digest.Hex) {
		return nil, fmt.Errorf("%w: reference to digest %q", ErrUnsupported, clip(d.Digest.String()))
	}
	size, ok := r.BlobSize(d.Digest)
	if !ok {
		if bs, inBase := r.base[d.Digest]; inBase && depth > 0 && oci.KindOf(d.MediaType) == oci.KindUnknown {
			if d.Size != 0 && d.Size != bs {
				return nil, fmt.Errorf("%w: blob %s is referenced with size %d but the base holds %d bytes", ErrCorrupt, d.Digest, d.Size, bs)
			}
			n.Missing, n.Size = true, bs
			return n, nil
		}
		if r.record.Base != "" {
			return nil, fmt.Errorf("%w: blob %s is referenced but neither in this delta bundle nor listed as coming from its base %s", ErrCorrupt, d.Digest, r.record.Base)
		}
		return nil, fmt.Errorf("%w: blob %s is referenced but missing", ErrCorrupt, d.Digest)
	}
	if d.Size != 0 && d.Size != size {
		return nil, fmt.Errorf("%w: blob %s is referenced with size %d but holds %d bytes", ErrCorrupt, d.Digest, d.Size, size)
	}
	n.Size = size
	if depth > 0 && oci.KindOf(d.MediaType) == oci.KindUnknown {
		return n, nil // config or layer
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: indexes nested more than %d deep at %s", ErrCorrupt, maxDepth, d.Digest)
	}
	data, mt, err := r.Manifest(d.Digest)
	if err != nil {
		return nil, &blobError{d.Digest, err}
	}
	if mt == "" {
		if mt, err = oci.MediaTypeOf(data); err != nil {
			return nil, fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, d.Digest, err)
		}
	}
	if d.MediaType != "" && d.MediaType != mt {
		return nil, fmt.Errorf("%w: manifest %s declares media type %s but is referenced as %s", ErrCorrupt, d.Digest, mt, d.MediaType)
	}
	n.MediaType, n.Data = mt, data
	refs, err := oci.Refs(mt, data)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, d.Digest, err)
	}
	for _, c := range refs {
		cn, err := r.tree(c, depth+1)
		if err != nil {
			return nil, err
		}
		n.Children = append(n.Children, cn)
	}
	return n, nil
}

// blobError names the blob a tree error is about, so that Verify reports a
// damaged manifest once, under its own entry, however many images need it
// and although hashing finds it damaged too.
type blobError struct {
	digest v1.Hash
	err    error
}

func (e *blobError) Error() string { return e.err.Error() }
func (e *blobError) Unwrap() error { return e.err }

// Walk calls fn for every node of the tree, children before parents
// (the order in which a registry accepts them), each digest once.
func (n *Node) Walk(fn func(*Node) error) error {
	seen := map[v1.Hash]bool{}
	var walk func(*Node) error
	walk = func(n *Node) error {
		for _, c := range n.Children {
			if err := walk(c); err != nil {
				return err
			}
		}
		if seen[n.Digest] {
			return nil
		}
		seen[n.Digest] = true
		return fn(n)
	}
	return walk(n)
}

// Problem is one thing wrong with a bundle.
type Problem struct {
	// Entry is the tar entry concerned (a blob name, index.json, ...).
	Entry string `json:"entry"`
	// Images lists the images (TARGET:TAG) that need the entry.
	Images []string `json:"images,omitempty"`
	Err    error    `json:"-"`
	// Message is Err's text, for JSON output.
	Message string `json:"message"`
}

func (p Problem) String() string {
	s := p.Entry + ": " + p.Message
	if len(p.Images) > 0 {
		s += " (needed by " + strings.Join(p.Images, ", ") + ")"
	}
	return s
}

// Report is what Verify found.
type Report struct {
	Images   int       `json:"images"`
	Tags     int       `json:"tags"`
	Blobs    int       `json:"blobs"`
	Bytes    int64     `json:"bytes"`
	Problems []Problem `json:"problems"`
	// SignedBy names the trusted key the bundle's signature was checked
	// with, when one was (set by the caller of CheckSignature).
	SignedBy string `json:"signedBy,omitempty"`
	// Deep is set by VerifyDeep: Layers layers were decompressed (to
	// Uncompressed bytes) and matched their diff_ids.
	Deep         bool  `json:"deep,omitempty"`
	Layers       int   `json:"layersChecked,omitempty"`
	Uncompressed int64 `json:"uncompressedBytes,omitempty"`
	// Bad holds the digests whose content failed its check.
	Bad map[v1.Hash]error `json:"-"`
}

// OK reports a bundle without problems.
func (rep *Report) OK() bool { return len(rep.Problems) == 0 }

// ErrVerify is returned by Verify when the bundle has problems.
var ErrVerify = errors.New("bundle failed verification")

// Verify checks everything a bundle claims without any network: every
// blob's size and SHA-256 (hashed in parallel), every image's tree complete.
// It returns a report listing each problem; the error wraps ErrVerify when
// there is any, or is the context's error.
func Verify(ctx context.Context, r *Reader, jobs int, p Progress) (*Report, error) {
	return verify(ctx, r, nil, jobs, p)
}

// VerifyBlobs is Verify limited to the blobs in only (manifests and
// structure are always checked): import hashes just what it may upload,
// not what the target already holds.
func VerifyBlobs(ctx context.Context, r *Reader, only map[v1.Hash]bool, jobs int, p Progress) (*Report, error) {
	if only == nil {
		only = map[v1.Hash]bool{}
	}
	return verify(ctx, r, only, jobs, p)
}

// VerifyDeep is Verify that also decompresses every layer an image config
// names (gzip, zstd or plain tar, recognised by their first bytes as
// docker and containerd do) and checks it against the config's
// rootfs.diff_ids, each within lim; layers are read once, in parallel
// (jobs), for both their digest and their diff_id.
func VerifyDeep(ctx context.Context, r *Reader, jobs int, lim DeepLimits, p Progress) (*Report, error) {
	return verifyWith(ctx, r, nil, jobs, p, &lim)
}

func verify(ctx context.Context, r *Reader, only map[v1.Hash]bool, jobs int, p Progress) (*Report, error) {
	return verifyWith(ctx, r, only, jobs, p, nil)
}

func verifyWith(ctx context.Context, r *Reader, only map[v1.Hash]bool, jobs int, p Progress, deep *DeepLimits) (*Report, error) {
	if jobs < 1 {
		jobs = runtime.GOMAXPROCS(0)
	}
	if p == nil {
		p = ProgressFunc(func(Event) {})
	}
	rep := &Report{Images: len(r.record.Images), Bad: map[v1.Hash]error{}}
	probs := problems{}
	users := r.checkTrees(rep, probs)
	// manifest.json is for docker load only: import (only != nil), which
	// never reads it, does not check it.
	if len(probs) == 0 && only == nil {
		if err := r.checkDockerExact(); err != nil {
			probs.add(DockerManifestFile, "", err)
		}
	}
	var dp *deepPlan
	if deep != nil {
		dp = r.planDeep(rep, probs, users)
	}

	digests := r.Digests()
	if only != nil {
		kept := digests[:0]
		for _, h := range digests {
			if only[h] {
				kept = append(kept, h)
			}
		}
		digests = kept
	}
	var total int64
	for _, h := range digests {
		s, _ := r.BlobSize(h)
		total += s
	}
	rep.Blobs, rep.Bytes = len(digests), total
	p.Event(Event{Kind: EventPlanned, Total: total})
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, h := range digests {
		g.Go(func() error {
			deepProbs, err := r.checkBlob(gctx, h, dp, deep, p, rep, &mu)
			if gctx.Err() != nil {
				return gctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Bad[h] = err
			}
			for _, d := range deepProbs {
				for _, name := range d.images {
					probs.add(BlobName(h), name, d.err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	for h, err := range rep.Bad {
		if len(users[h]) == 0 {
			probs.add(BlobName(h), "", err)
		}
		for _, name := range users[h] {
			probs.add(BlobName(h), name, err)
		}
	}
	rep.Problems = probs.list()
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("%w: %d problem(s)", ErrVerify, len(rep.Problems))
	}
	return rep, nil
}

// checkBlob hashes blob h; a layer the deep check covers (dp, deep) is
// also decompressed and its diff_id compared, and counted in rep.
func (r *Reader) checkBlob(ctx context.Context, h v1.Hash, dp *deepPlan, deep *DeepLimits, p Progress, rep *Report, mu *sync.Mutex) ([]deepProblem, error) {
	if dp == nil || len(dp.layers[h]) == 0 {
		return nil, r.hashBlob(ctx, h, p)
	}
	res, probs, err := r.deepBlob(ctx, h, dp.layers[h], *deep, p)
	if err == nil {
		mu.Lock()
		rep.Layers++
		rep.Uncompressed += res.uncompressed
		mu.Unlock()
	}
	return probs, err
}

func (r *Reader) hashBlob(ctx context.Context, h v1.Hash, p Progress) error {
	sr, err := r.Section(h)
	if err != nil {
		return err
	}
	hs := sha256.New()
	pw := &progressWriter{w: hs, h: h, p: p}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	if _, err := io.CopyBuffer(pw, ctxio.Reader(ctx, sr), *bp); err != nil {
		return fmt.Errorf("%w: reading: %v", ErrCorrupt, err)
	}
	pw.flush()
	if got := hex.EncodeToString(hs.Sum(nil)); got != h.Hex {
		return fmt.Errorf("%w: content is sha256:%s", ErrDigestMismatch, got)
	}
	p.Event(Event{Kind: EventBlobDone, Digest: h})
	return nil
}

// checkTrees reads every image's tree, recording a problem for each that
// cannot be read, and returns the images (TARGET:TAGS) that need each blob.
func (r *Reader) checkTrees(rep *Report, probs problems) map[v1.Hash][]string {
	users := map[v1.Hash][]string{}
	for _, im := range r.record.Images {
		rep.Tags += len(im.Tags)
		name := im.Target + ":" + strings.Join(im.Tags, ",")
		h, err := ParseDigest(im.Digest)
		if err != nil {
			probs.add(RecordFile, name, err)
			continue
		}
		t, err := r.Tree(h)
		if err != nil {
			var be *blobError
			if errors.As(err, &be) {
				h = be.digest
			}
			probs.add(BlobName(h), name, err)
			continue
		}
		_ = t.Walk(func(n *Node) error {
			users[n.Digest] = append(users[n.Digest], name)
			return nil
		})
	}
	return users
}

// problems collects one Problem per entry: the first error found for it,
// and every image that needs it.
type problems map[string]*Problem

func (ps problems) add(entry, image string, err error) {
	p := ps[entry]
	if p == nil {
		p = &Problem{Entry: entry, Err: err, Message: err.Error()}
		ps[entry] = p
	}
	if image != "" && !slices.Contains(p.Images, image) {
		p.Images = append(p.Images, image)
	}
}

func (ps problems) list() []Problem {
	out := make([]Problem, 0, len(ps))
	for _, p := range ps {
		sort.Strings(p.Images)
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entry < out[j].Entry })
	return out
}

package push

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// survey asks the target, per image, whether the manifest is there already
// (then its blobs are too: registries check that on manifest PUT) and where
// each tag points.
func (p *pusher) survey(ctx context.Context) error {
	known := p.peekRepos(ctx)
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, im := range p.live() {
		im.current = make([]string, len(im.rec.Tags))
		if p.newProjects[project(im.repo)] {
			continue
		}
		g.Go(func() error {
			p.surveyImage(ctx, im, known[im.repo])
			return ctx.Err()
		})
	}
	return g.Wait()
}

// repoPeek is what the survey learnt about a repository before asking for
// each tag: one tag's digest, and when that tag was missing, the list of
// the repository's tags (nil when unknown).
type repoPeek struct {
	tag, digest string
	tags        map[string]bool
}

// peekRepos asks, per repository, for the first tag of its first image.
// If it is there, the repository has content and every tag is asked for
// with a HEAD (a re-import sends HEADs only). If not, the repository's tag
// list tells, in one request, which of the other tags exist: on an empty
// target that replaces a HEAD per tag. Errors are left to surveyImage,
// which asks again and reports them per image.
func (p *pusher) peekRepos(ctx context.Context) map[string]*repoPeek {
	out := map[string]*repoPeek{}
	var firsts []*image
	for _, im := range p.live() {
		if _, ok := out[im.repo]; ok || len(im.rec.Tags) == 0 || p.newProjects[project(im.repo)] {
			continue
		}
		out[im.repo] = &repoPeek{tag: im.rec.Tags[0]}
		firsts = append(firsts, im)
	}
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, im := range firsts {
		pk := out[im.repo]
		g.Go(func() error {
			rc, err := p.repo(ctx, im.repo)
			if err != nil {
				return nil
			}
			d, ok, err := rc.headManifest(ctx, pk.tag)
			switch {
			case err != nil:
				pk.tag = ""
			case ok:
				pk.digest = d
			default:
				if tags, err := rc.listTags(ctx); err == nil {
					pk.tags = tags
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	return out
}

// surveyImage finds where im's tags point and whether im is complete.
func (p *pusher) surveyImage(ctx context.Context, im *image, pk *repoPeek) {
	rc, err := p.repo(ctx, im.repo)
	if err != nil {
		im.fail("", err)
		return
	}
	for i, tag := range im.rec.Tags {
		switch {
		case pk != nil && pk.tag == tag && pk.tag != "":
			im.current[i] = pk.digest
			continue
		case pk != nil && pk.tags != nil && !pk.tags[tag]:
			continue // not in the repository's tag list
		}
		d, ok, err := rc.headManifest(ctx, tag)
		if err != nil {
			im.fail("", p.explainRead(im.repo, fmt.Errorf("checking tag %s:%s: %w", im.repo, tag, err)))
			return
		}
		if ok {
			im.current[i] = d
		}
	}
	for _, d := range im.current {
		if d == im.digest.String() {
			im.complete = true
		}
	}
	if !im.complete && askDigest(im) {
		_, ok, err := rc.headManifest(ctx, im.digest.String())
		if err != nil {
			im.fail("", p.explainRead(im.repo, fmt.Errorf("checking %s@%s: %w", im.repo, im.digest, err)))
			return
		}
		im.complete = ok
	}
}

// askDigest says whether the survey should ask for an image's manifest by
// digest after none of its tags pointed at it. Import puts a top-level
// manifest by tag only, so when none of the image's tags exists the
// manifest is not there either (a killed import leaves blobs and child
// manifests, which the blob pass finds in one request each): the HEAD is
// skipped. It is asked when the image has no tag, or when a tag exists
// and points elsewhere (the repository has content; a retag is cheap).
func askDigest(im *image) bool {
	if len(im.rec.Tags) == 0 {
		return true
	}
	for _, d := range im.current {
		if d != "" {
			return true
		}
	}
	return false
}

// verifySource checks, before anything is pushed, the source's blobs that
// the incomplete images need, and fails the images that need a bad one.
// The bundle's structure and every manifest's digest were checked when it
// was opened and its trees read; this pass hashes the configs (small). The
// layers are hashed as they stream to the registry (the reader fails the
// read that completes a damaged blob, so the PUT never completes, and the
// registry checks the PUT's ?digest= too): an upload no longer waits for a
// full read and hash of every layer first, and each layer is read once. A
// dry run, which sends nothing, hashes every blob here.
func (p *pusher) verifySource(ctx context.Context) error {
	v, ok := p.src.(Verifier)
	if !ok {
		return nil
	}
	only := map[v1.Hash]bool{}
	for _, im := range p.live() {
		if im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			switch {
			case n.Missing:
			case p.o.DryRun:
				only[n.Digest] = true
			case oci.KindOf(n.MediaType) == oci.KindManifest && len(n.Children) > 0 && !n.Children[0].Missing:
				only[n.Children[0].Digest] = true // the config
			}
			return nil
		})
	}
	rep, err := v.Verify(ctx, only, p.o.Jobs, p.o.VerifyProgress)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, bundle.ErrVerify) {
		return err
	}
	if rep == nil {
		return nil
	}
	for _, im := range p.live() {
		if im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if e, bad := rep.Bad[n.Digest]; bad {
				im.fail(n.Digest.String(), damaged(n.Digest, e))
			}
			return nil
		})
	}
	return nil
}

// damagedError fails an image that needs a blob the bundle holds damaged:
// it names the blob and says what to do.
type damagedError struct {
	digest v1.Hash
	err    error
}

func damaged(h v1.Hash, err error) error { return &damagedError{h, err} }

func (e *damagedError) Error() string {
	return fmt.Sprintf("blob %s in the bundle is damaged (%v); not pushed: compare the bundle with its .sha256 file and copy it again", e.digest, e.err)
}

func (e *damagedError) Unwrap() error { return e.err }

// ErrBaseMissing: a delta bundle's base has not been imported into the target.
var ErrBaseMissing = errors.New("the base bundle is not in the target")

// checkBase makes sure, before anything is pushed, that the target holds
// every blob a delta bundle leaves to its base: in the image's own
// repository, or in another repository of this import (mounted from
// there). If not, the import stops, naming the bundle to import first.
func (p *pusher) checkBase(ctx context.Context) error {
	base := p.base()
	if base == "" {
		return nil
	}
	var repos []string
	seen := map[string]bool{}
	need := map[key]bool{}
	for _, im := range p.live() {
		if !seen[im.repo] {
			seen[im.repo] = true
			repos = append(repos, im.repo)
		}
		if im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if n.Missing {
				need[key{im.repo, n.Digest}] = true
			}
			return nil
		})
	}
	if len(need) == 0 {
		return nil
	}
	missing, err := p.locate(ctx, need, repos)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		k := missing[0]
		return fmt.Errorf("%w: %s is a delta of bundle %s, and %s lacks %d blob(s) it leaves to that bundle (e.g. %s for %s): import bundle %s first; nothing was pushed",
			ErrBaseMissing, p.o.Bundle, base, p.tgt.Registry, len(missing), k.digest, k.repo, base)
	}
	return nil
}

// plan lists the blob tasks of the live, incomplete images: the first
// repository that wants a digest owns its upload (primary); the others wait
// for it and mount from there. Primaries come first in the order, largest
// first, so a secondary never waits for a task that has not started.
func (p *pusher) plan() {
	var secondaries []*blobTask
	byDigest := map[v1.Hash]*blobTask{}
	for _, im := range p.live() {
		if im.complete {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			if n.Data != nil || oci.KindOf(n.MediaType) != oci.KindUnknown {
				return nil // manifests go in the second pass
			}
			k := key{im.repo, n.Digest}
			if _, ok := p.blobs[k]; ok {
				return nil
			}
			t := &blobTask{key: k, size: n.Size, missing: n.Missing, done: make(chan struct{}), project: project(im.repo), baseFrom: p.baseFrom[k]}
			p.blobs[k] = t
			if first, ok := byDigest[n.Digest]; ok && !n.Missing {
				t.primary = first
				secondaries = append(secondaries, t)
			} else {
				byDigest[n.Digest] = t
				p.order = append(p.order, t)
			}
			return nil
		})
	}
	// Largest first: a big upload then runs while the many small requests
	// flow beside it, instead of alone at the end of the pass.
	slices.SortStableFunc(p.order, func(a, b *blobTask) int { return cmp.Compare(b.size, a.size) })
	p.order = append(p.order, secondaries...)
}

// blobsOf returns the blob tasks an image needs.
func (p *pusher) blobsOf(im *image) []*blobTask {
	var out []*blobTask
	if im.tree == nil {
		return nil
	}
	_ = im.tree.Walk(func(n *bundle.Node) error {
		if t, ok := p.blobs[key{im.repo, n.Digest}]; ok {
			out = append(out, t)
		}
		return nil
	})
	return out
}

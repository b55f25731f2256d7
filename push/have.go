package push

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/names"
	"github.com/ferry-airgap/ferry/internal/registry"
)

// ErrHaveTarget: the bundle was cut against inventories of other
// registries than the import's target (bad input: exit status 2).
var ErrHaveTarget = errors.New("bundle was cut for another registry")

// ErrHaveMissing: the target no longer holds what the inventory a bundle
// was cut against said it held; nothing was pushed.
var ErrHaveMissing = errors.New("the target lacks what its inventory claimed")

// haveRecord returns the bundle's record when it was cut against
// inventories (export --have), else nil.
func (p *pusher) haveRecord() *bundle.Record {
	bs, ok := p.src.(BundleSource)
	if !ok || len(bs.R.Record().Have) == 0 {
		return nil
	}
	return bs.R.Record()
}

// checkHaveTarget refuses, before any request, a bundle cut against
// inventories none of which is of the import's target.
func (p *pusher) checkHaveTarget(context.Context) error {
	rec := p.haveRecord()
	if rec == nil {
		return nil
	}
	if _, ok := p.haveFor(rec); ok {
		return nil
	}
	var of []string
	for _, h := range rec.Have {
		of = append(of, h.Target()+" (inventory "+h.ID+")")
	}
	return fmt.Errorf("%w: %s leaves out what %s held, so it cannot be imported into %s: import it there, or take an inventory of %s and export again with --have; nothing was pushed",
		ErrHaveTarget, p.o.Bundle, strings.Join(of, " and "), p.tgt, p.tgt)
}

// haveFor returns the inventory of rec taken of the import's target.
func (p *pusher) haveFor(rec *bundle.Record) (bundle.HaveRef, bool) {
	for _, h := range rec.Have {
		if names.CanonicalHost(h.Registry) == names.CanonicalHost(p.tgt.Registry) && h.Prefix == p.tgt.Prefix {
			return h, true
		}
	}
	return bundle.HaveRef{}, false
}

// checkHave makes sure, before anything is pushed, that the target still
// holds what its inventory claimed and the bundle therefore left out:
// every tag of the images left out at its digest, and every config and
// layer left out (in the image's repository, another of this import, or
// one the inventory saw it in: mounted from there).
//
// What is missing stops only the images that depend on it (see
// failStale): a bundle image that needs a blob found nowhere, and an image
// the bundle left out whose tag no longer points where the inventory said.
// The others go on. With Options.Strict the whole import stops instead,
// naming everything missing, before anything is pushed.
func (p *pusher) checkHave(ctx context.Context) error {
	rec := p.haveRecord()
	if rec == nil {
		return nil
	}
	inv, _ := p.haveFor(rec)
	// One token for every repository the checks read, not one each.
	for _, im := range rec.BaseImages {
		p.host.Want(registry.Scope(p.tgt.Repository(im.Target), p.actions()))
	}
	for _, r := range inv.Repositories {
		p.host.Want(registry.Scope(p.tgt.Repository(r), p.actions()))
	}
	moved, err := p.checkHaveTags(ctx, rec.BaseImages)
	if err != nil {
		return err
	}
	var repos []string
	need := map[key]bool{}
	for _, im := range p.live() {
		repos = append(repos, im.repo)
		for _, n := range missingNodes(im) {
			need[key{im.repo, n.Digest}] = true
		}
	}
	for _, r := range inv.Repositories {
		repos = append(repos, p.tgt.Repository(r))
	}
	slices.Sort(repos)
	missing, err := p.locate(ctx, need, slices.Compact(repos))
	if err != nil {
		return err
	}
	if len(missing) == 0 && len(moved) == 0 {
		return nil
	}
	if p.o.Strict {
		return haveMissing(p.o.Bundle, inv, p.tgt.String(), moved, missing)
	}
	p.failStale(inv, moved, missing)
	if len(p.live()) == 0 {
		p.summarize()
		return p.failedErr(fmt.Errorf("%w: all %d images failed (listed above); nothing was pushed", ErrFailed, len(p.images)))
	}
	return nil
}

// missingNodes are the nodes of im's tree the bundle left out: the
// configs and layers (and, in principle, manifests) it counts on the
// target to hold.
func missingNodes(im *image) []*bundle.Node {
	var out []*bundle.Node
	if im.tree == nil {
		return nil
	}
	_ = im.tree.Walk(func(n *bundle.Node) error {
		if n.Missing {
			out = append(out, n)
		}
		return nil
	})
	return out
}

// movedTag is a tag of an image the bundle left out that no longer points
// where the inventory said.
type movedTag struct {
	im    bundle.BaseImage
	repo  string
	tag   string
	found string // the digest it points at now; "" = no such tag
}

func (m movedTag) String() string {
	found := "no such tag"
	if m.found != "" {
		found = "it points at " + m.found
	}
	return fmt.Sprintf("%s:%s (want %s, %s)", m.repo, m.tag, m.im.Digest, found)
}

// checkHaveTags checks, one HEAD per tag, that the images the bundle left
// out are still tagged as the inventory said; it returns the tags that are
// not, sorted.
func (p *pusher) checkHaveTags(ctx context.Context, left []bundle.BaseImage) ([]movedTag, error) {
	var mu sync.Mutex
	var moved []movedTag
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.Jobs)
	for _, im := range left {
		repo := p.tgt.Repository(im.Target)
		for _, tag := range im.Tags {
			g.Go(func() error {
				rc, err := p.repo(gctx, repo)
				if err != nil {
					return err
				}
				d, ok, err := rc.headManifest(gctx, tag)
				if err != nil {
					return fmt.Errorf("checking tag %s:%s: %w", repo, tag, err)
				}
				if ok && d == im.Digest {
					return nil
				}
				mu.Lock()
				moved = append(moved, movedTag{im: im, repo: repo, tag: tag, found: d})
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(moved, func(a, b movedTag) int { return cmp.Compare(a.String(), b.String()) })
	return moved, nil
}

// haveMissing is the error that names everything the target lacks.
func haveMissing(bundlePath string, inv bundle.HaveRef, target string, moved []movedTag, missing []key) error {
	const show = 20
	var b strings.Builder
	fmt.Fprintf(&b, "%s was cut against inventory %s of %s (taken %s), but %s now lacks",
		bundlePath, inv.ID, inv.Target(), inv.Created.Format("2006-01-02 15:04:05Z07:00"), target)
	if len(missing) > 0 {
		fmt.Fprintf(&b, " %d blob(s):", len(missing))
		for i, k := range missing {
			if i == show {
				fmt.Fprintf(&b, " and %d more", len(missing)-show)
				break
			}
			fmt.Fprintf(&b, " %s (for %s)", k.digest, k.repo)
		}
		if len(moved) > 0 {
			b.WriteString(";")
		}
	}
	if len(moved) > 0 {
		fmt.Fprintf(&b, " %d tag(s) it claimed:", len(moved))
		for i, m := range moved {
			if i == show {
				fmt.Fprintf(&b, " and %d more", len(moved)-show)
				break
			}
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %s", sep, m)
		}
	}
	b.WriteString("; nothing was pushed (--strict): take a new inventory (ferry inventory) and export again with --have")
	return fmt.Errorf("%w: %s", ErrHaveMissing, b.String())
}

// TargetHost connects to a target registry with ferry's credential order
// for it: --username (with its password) first, then logins (the mapping
// files' target auth), then --auth-file and the docker keychain. import
// and inventory reach the target through it.
func TargetHost(c *registry.Client, kc *registry.Keychain, host, username, password string, logins []registry.Login) (*registry.Host, error) {
	if username != "" {
		logins = append([]registry.Login{{Host: host, Username: username, Password: password, From: "--username"}}, logins...)
	}
	auth, err := kc.Resolve(host, logins...)
	if err != nil {
		return nil, err
	}
	return c.Host(host, auth)
}

// locate finds, for each blob a bundle leaves out (need), a repository of
// the target that holds it: its own repository first, then repos in order.
// One found elsewhere is noted in baseFrom (it is mounted from there); the
// ones found nowhere are returned.
func (p *pusher) locate(ctx context.Context, need map[key]bool, repos []string) ([]key, error) {
	var mu sync.Mutex
	var missing []key
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.Jobs)
	for k := range need {
		g.Go(func() error {
			for i, repo := range append([]string{k.repo}, repos...) {
				if i > 0 && repo == k.repo {
					continue // its own repository was asked first
				}
				rc, err := p.repo(gctx, repo)
				if err != nil {
					return err
				}
				ok, err := rc.headBlob(gctx, k.digest)
				if err != nil {
					return fmt.Errorf("checking %s in %s: %w", k.digest, repo, err)
				}
				if ok {
					if repo != k.repo {
						mu.Lock()
						p.baseFrom[k] = repo
						mu.Unlock()
					}
					return nil
				}
			}
			mu.Lock()
			missing = append(missing, k)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(missing, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.digest.String(), b.digest.String()), cmp.Compare(a.repo, b.repo))
	})
	return missing, nil
}

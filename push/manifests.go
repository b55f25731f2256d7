package push

import (
	"context"
	"fmt"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
)

type manifestError struct {
	digest string
	err    error
}

func (e *manifestError) Error() string { return e.err.Error() }
func (e *manifestError) Unwrap() error { return e.err }

// pushImage pushes im's child manifests by digest, then its own manifest
// or index once per tag (by digest only when it has no tag to set): the
// tag appears only when everything under it exists, and the manifest is
// not sent twice.
func (p *pusher) pushImage(ctx context.Context, im *image) error {
	rc, err := p.repo(ctx, im.repo)
	if err != nil {
		return err
	}
	byTag := false // the top-level manifest goes in with its first tag
	for i := range im.rec.Tags {
		if im.current[i] != im.digest.String() && im.tree.Data != nil {
			byTag = true
		}
	}
	if !im.complete {
		err := im.tree.Walk(func(n *bundle.Node) error {
			if n.Data == nil && !(n.Missing && oci.KindOf(n.MediaType) != oci.KindUnknown) {
				return nil
			}
			if n == im.tree && byTag {
				return nil
			}
			k := key{im.repo, n.Digest}
			p.mu.Lock()
			o, ok := p.manifests[k]
			if !ok {
				o = &onceErr{}
				p.manifests[k] = o
			}
			p.mu.Unlock()
			o.once.Do(func() {
				if n.Missing {
					_, ok, err := rc.headManifest(ctx, n.Digest.String())
					if err == nil && !ok {
						err = fmt.Errorf("manifest %s is not in this delta bundle and not in %s/%s: import bundle %s (its base) first", n.Digest, p.tgt.Registry, im.repo, p.base())
					}
					o.err = err
					return
				}
				o.err = rc.putManifest(ctx, n.Digest.String(), n.Data, string(n.MediaType), n.Digest)
			})
			if o.err != nil {
				if isRefusal(o.err) {
					return &manifestError{n.Digest.String(), p.refusalErr(project(im.repo), o.err, n.Size, "")}
				}
				return &manifestError{n.Digest.String(), fmt.Errorf("manifest %s: %w", n.Digest, o.err)}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Tags last: the image is complete in the repository now. A tag an
	// immutable rule keeps where it is does not stop the image's others.
	var immutable error
	for i, tag := range im.rec.Tags {
		if im.current[i] == im.digest.String() {
			continue
		}
		if im.tree.Data == nil {
			return fmt.Errorf("tag %s:%s: manifest %s is not in this delta bundle: import bundle %s (its base) first", im.repo, tag, im.digest, p.base())
		}
		if err := rc.putManifest(ctx, tag, im.tree.Data, string(im.tree.MediaType), im.digest); err != nil {
			if refusalKind(err) == RefusedImmutable {
				immutable = p.refusalErr(project(im.repo), err, 0, im.repo+":"+tag)
				im.refusedTags = append(im.refusedTags, tag)
				continue
			}
			if isRefusal(err) {
				return p.refusalErr(project(im.repo), err, int64(len(im.tree.Data)), "")
			}
			return fmt.Errorf("tag %s:%s: %w", im.repo, tag, err)
		}
	}
	return immutable
}

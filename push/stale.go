package push

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// ErrStale is wrapped by the error of an import in which some images
// failed because the target no longer holds what the inventory the bundle
// was cut against claimed (export --have). The other images were pushed.
var ErrStale = errors.New("stale inventory")

// FailureStale is Failure.Kind of an image a stale inventory claim stopped.
const FailureStale = "stale-inventory"

// Kinds of StaleClaim.
const (
	ClaimTag  = "tag"  // a tag of an image the bundle left out
	ClaimBlob = "blob" // a config or layer (or manifest) the bundle left out
)

// StaleClaim is one thing an inventory claimed the target holds, that the
// bundle therefore left out, and that the target no longer holds.
type StaleClaim struct {
	Kind string `json:"kind"` // ClaimTag or ClaimBlob
	// Repository is where it was expected: REGISTRY/PATH.
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"` // ClaimTag: the tag
	// Digest is the manifest the tag should point at (ClaimTag), or the
	// missing blob (ClaimBlob).
	Digest string `json:"digest"`
	// Found is what the tag points at now ("" = no such tag).
	Found string `json:"found,omitempty"`
	// Searched are the other repositories a missing blob was looked for
	// in (the import's, and those the inventory saw the left-out blobs in).
	Searched []string `json:"searched,omitempty"`
}

func (c StaleClaim) String() string {
	if c.Kind == ClaimTag {
		found := "the tag is gone"
		if c.Found != "" {
			found = "it points at " + c.Found
		}
		return fmt.Sprintf("tag %s:%s should point at %s, but %s", c.Repository, c.Tag, c.Digest, found)
	}
	s := fmt.Sprintf("blob %s is not in %s", c.Digest, c.Repository)
	if len(c.Searched) > 0 {
		s += " nor in " + strings.Join(c.Searched, ", ")
	}
	return s
}

// StaleError is why an image failed when a claim it depends on is stale.
type StaleError struct {
	Inventory string // ID of TARGET (taken TIME)
	Claims    []StaleClaim
	// LeftOut: the bundle does not carry the image at all (the inventory
	// said the target held it), so import cannot set its tags.
	LeftOut bool
}

func (e *StaleError) Error() string {
	var parts []string
	for _, c := range e.Claims {
		parts = append(parts, c.String())
	}
	what := "not pushed (no tag moved)"
	if e.LeftOut {
		what = "the bundle does not carry this image (the inventory said the target held it), so import cannot set its tags"
	}
	return fmt.Sprintf("%v: inventory %s claimed what the target no longer holds: %s; %s", ErrStale, e.Inventory, strings.Join(parts, "; "), what)
}

func (e *StaleError) Unwrap() error { return ErrStale }

// failStale fails the images that depend on a claim of inventory inv
// that checkHave found stale; the others go on.
//
// A bundle image depends on exactly the nodes of its own tree the bundle
// left out (configs, layers, any manifest): it fails when one of them was
// found in none of the repositories checkHave searched, whichever image's
// claim made export leave it out. An image the bundle left out whole
// fails when one of its tags moved; it becomes an entry of its own in the
// summary (its tags: up to date, or not pushed). A moved tag stops no
// other image: the blobs an image needs are checked by digest, not by the
// tags that once reached them.
func (p *pusher) failStale(inv bundle.HaveRef, moved []movedTag, missing []key) {
	invName := fmt.Sprintf("%s of %s (taken %s)", inv.ID, inv.Target(), inv.Created.Format("2006-01-02 15:04:05Z07:00"))
	gone := map[key]bool{}
	for _, k := range missing {
		gone[k] = true
	}
	live := p.live()
	for _, im := range live {
		var claims []StaleClaim
		seen := map[v1.Hash]bool{}
		for _, n := range missingNodes(im) {
			if !gone[key{im.repo, n.Digest}] || seen[n.Digest] {
				continue
			}
			seen[n.Digest] = true
			claims = append(claims, StaleClaim{Kind: ClaimBlob, Repository: p.tgt.Registry + "/" + im.repo, Digest: n.Digest.String(),
				Searched: p.searched(inv, live, im.repo)})
		}
		if len(claims) > 0 {
			im.fail(claims[0].Digest, &StaleError{Inventory: invName, Claims: claims})
		}
	}
	byImage := map[string]*image{}
	var left []*image
	for _, m := range moved {
		k := m.im.Target + "@" + m.im.Digest
		im := byImage[k]
		if im == nil {
			im = &image{rec: bundle.Image{Target: m.im.Target, Tags: slices.Clone(m.im.Tags), Digest: m.im.Digest}, repo: m.repo,
				current: make([]string, len(m.im.Tags)), err: &StaleError{Inventory: invName, LeftOut: true}}
			for i := range im.current {
				im.current[i] = m.im.Digest // the tags that did not move
			}
			byImage[k] = im
			left = append(left, im)
		}
		if i := slices.Index(im.rec.Tags, m.tag); i >= 0 {
			im.current[i] = m.found
		}
		se := im.err.(*StaleError)
		se.Claims = append(se.Claims, StaleClaim{Kind: ClaimTag, Repository: p.tgt.Registry + "/" + m.repo, Tag: m.tag, Digest: m.im.Digest, Found: m.found})
	}
	p.images = append(p.images, left...)
}

// searched lists, as REGISTRY/PATH, the repositories other than repo in
// which checkHave looked for a blob repo lacks: those of the live images
// and those the inventory saw the left-out blobs in.
func (p *pusher) searched(inv bundle.HaveRef, live []*image, repo string) []string {
	var out []string
	for _, im := range live {
		out = append(out, im.repo)
	}
	for _, r := range inv.Repositories {
		out = append(out, p.tgt.Repository(r))
	}
	slices.Sort(out)
	out = slices.Compact(out)
	out = slices.DeleteFunc(out, func(r string) bool { return r == repo })
	for i := range out {
		out[i] = p.tgt.Registry + "/" + out[i]
	}
	return out
}

// failedErr adds to err, the error of an import in which images failed,
// what to carry back when a stale inventory claim stopped some of them.
func (p *pusher) failedErr(err error) error {
	var stale []string
	for _, im := range p.images {
		var se *StaleError
		if !errors.As(im.err, &se) {
			continue
		}
		name := im.rec.Target + ":" + strings.Join(im.rec.Tags, ",")
		if im.rec.Source != "" {
			name += " (from " + im.rec.Source + ")"
		}
		stale = append(stale, name)
	}
	if len(stale) == 0 {
		return err
	}
	slices.Sort(stale)
	rec := p.haveRecord()
	inv, _ := p.haveFor(rec)
	return fmt.Errorf("%w; %w: %d image(s) depend on what inventory %s of %s (taken %s) claimed and %s no longer holds (listed above). Carry back either a new inventory (ferry inventory -f MAPPINGS.yaml --to %s -o have.json, then export again with --have have.json) or a bundle of exactly these images exported without --have (the old inventory would leave them out again): %s",
		err, ErrStale, len(stale), inv.ID, inv.Target(), inv.Created.Format("2006-01-02 15:04:05Z07:00"), p.tgt, p.tgt, strings.Join(stale, ", "))
}

// failureOf is the summary's entry for a failed image.
func failureOf(im *image) Failure {
	f := Failure{Image: im.ref(), Blob: im.errBlob, Error: im.err.Error()}
	var se *StaleError
	if errors.As(im.err, &se) {
		f.Kind, f.Missing = FailureStale, se.Claims
	}
	return f
}

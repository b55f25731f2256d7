package export

import (
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/inventory"
)

// loadHave reads the --have inventories (checking their signatures when
// trusted keys are given) before anything is resolved: a bad inventory is
// bad input, found before any network traffic.
func (o *runner) loadHave() error {
	if len(o.Have) == 0 {
		return nil
	}
	if o.Since != "" {
		return fmt.Errorf("%w: --since and --have: choose one (an inventory already says what the target holds)", inventory.ErrInvalid)
	}
	seen := map[string]string{}
	for _, p := range o.Have {
		inv, err := inventory.Read(p, o.HaveTrustKeys)
		if err != nil {
			return fmt.Errorf("--have: %w", err)
		}
		if prev, dup := seen[inv.ID]; dup {
			o.Logger.Warn("the same inventory given twice", "first", prev, "again", p, "id", inv.ID)
			continue
		}
		seen[inv.ID] = p
		o.have = append(o.have, inv)
		o.havePaths = append(o.havePaths, p)
	}
	return nil
}

// applyHave turns plan into what the inventories' registries lack: images
// that every inventory holds at the same target, digest and tags are left
// out, and so are configs and layers that every one of them holds (a
// bundle for several sites leaves out what they all hold). Manifests of
// the images kept are always carried. The bundle records the inventories
// and what it left out, for import to check before it pushes.
func (o *runner) applyHave(plan *bundle.Plan) error {
	if err := checkCoverage(plan, o.have, o.havePaths); err != nil {
		return err
	}
	var held map[string]bool
	var had map[string]map[string]bool
	for _, inv := range o.have {
		h, t := holdings(inv)
		held, had = intersect(held, h), intersectTags(had, t)
	}
	var left []bundle.BaseImage
	for _, im := range plan.Images {
		if tags := had[im.Target+"@"+im.Digest]; tags != nil && allIn(im.Tags, tags) {
			left = append(left, bundle.BaseImage{Target: im.Target, Digest: im.Digest, Tags: slices.Clone(im.Tags)})
		}
	}
	leaveOut(plan, held, had)
	plan.BaseImages = left
	for i, inv := range o.have {
		plan.Have = append(plan.Have, bundle.HaveRef{ID: inv.ID, Registry: inv.Registry, Prefix: inv.Prefix,
			Created: inv.Created, Repositories: holders(inv, plan.BaseBlobs)})
		o.Logger.Info("cut against inventory", "file", o.havePaths[i], "id", inv.ID, "target", inv.Target())
	}
	slices.SortFunc(plan.Have, func(a, b bundle.HaveRef) int { return compareStrings(a.ID, b.ID) })
	if len(plan.Images) == 0 {
		return fmt.Errorf("%w: the inventories (%s) hold every image of the selection", ErrNothingNew, joinIDs(plan.Have))
	}
	return nil
}

// checkCoverage refuses an inventory that lists none of the plan's target
// repositories: it was taken for another selection or target.
func checkCoverage(plan *bundle.Plan, invs []*inventory.Inventory, paths []string) error {
	targets := map[string]bool{}
	for _, im := range plan.Images {
		targets[im.Target] = true
	}
	for i, inv := range invs {
		covered := false
		for _, r := range inv.Repositories {
			covered = covered || targets[r.Target]
		}
		if !covered {
			return fmt.Errorf("%w: --have %s: inventory %s of %s lists none of the %d target repositories of this export: it was taken for another selection; take it with the same mapping files (ferry inventory -f ... --to %s)",
				inventory.ErrInvalid, paths[i], inv.ID, inv.Target(), len(targets), inv.Target())
		}
	}
	return nil
}

// holdings returns what inv's registry holds: every manifest and blob
// digest (in any repository), and target@digest → tags.
func holdings(inv *inventory.Inventory) (map[string]bool, map[string]map[string]bool) {
	held := map[string]bool{}
	had := map[string]map[string]bool{}
	for _, r := range inv.Repositories {
		for _, d := range r.Manifests {
			held[d] = true
		}
		for _, d := range r.Blobs {
			held[d] = true
		}
		for tag, d := range r.Tags {
			k := r.Target + "@" + d
			if had[k] == nil {
				had[k] = map[string]bool{}
			}
			had[k][tag] = true
		}
	}
	return held, had
}

// intersect returns what a and b both hold; a nil a is "everything".
func intersect(a, b map[string]bool) map[string]bool {
	if a == nil {
		return b
	}
	out := map[string]bool{}
	for k := range a {
		if b[k] {
			out[k] = true
		}
	}
	return out
}

func intersectTags(a, b map[string]map[string]bool) map[string]map[string]bool {
	if a == nil {
		return b
	}
	out := map[string]map[string]bool{}
	for k, tags := range a {
		for t := range tags {
			if b[k][t] {
				if out[k] == nil {
					out[k] = map[string]bool{}
				}
				out[k][t] = true
			}
		}
	}
	return out
}

// holders lists inv's target repositories that hold any of blobs, sorted:
// where import finds a blob an image's own repository lacks.
func holders(inv *inventory.Inventory, blobs []bundle.Blob) []string {
	want := map[string]bool{}
	for _, b := range blobs {
		want[b.Digest] = true
	}
	var out []string
	for _, r := range inv.Repositories {
		for _, d := range r.Blobs {
			if want[d] {
				out = append(out, r.Target)
				break
			}
		}
	}
	return out
}

func allIn(tags []string, set map[string]bool) bool {
	for _, t := range tags {
		if !set[t] {
			return false
		}
	}
	return true
}

func joinIDs(hs []bundle.HaveRef) string {
	s := ""
	for i, h := range hs {
		if i > 0 {
			s += ", "
		}
		s += h.ID + " of " + h.Target()
	}
	return s
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// leaveOut drops the images had holds under the same target, digest and
// tags, and records the configs and layers held holds as base blobs
// instead of storing them. Manifests of the images kept are always stored.
func leaveOut(plan *bundle.Plan, held map[string]bool, had map[string]map[string]bool) {
	images := plan.Images[:0]
	used := map[v1.Hash]bool{}
	for _, im := range plan.Images {
		if tags := had[im.Target+"@"+im.Digest]; tags != nil && allIn(im.Tags, tags) {
			continue
		}
		images = append(images, im)
		for _, h := range im.Blobs {
			used[h] = true
		}
	}
	plan.Images = images
	kept := plan.Blobs[:0]
	for _, b := range plan.Blobs {
		switch {
		case !used[b.Digest]:
		case b.Kind != bundle.KindManifest && held[b.Digest.String()]:
			plan.BaseBlobs = append(plan.BaseBlobs, bundle.Blob{Digest: b.Digest.String(), Size: b.Size, MediaType: string(b.MediaType)})
		default:
			kept = append(kept, b)
		}
	}
	plan.Blobs = kept
}

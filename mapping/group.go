package mapping

import (
	"slices"
	"sort"

	"github.com/ferry-airgap/ferry/internal/oci"
)

// Group is one image as a bundle or a target registry holds it: one target
// path and root digest, with every tag that points at it.
type Group struct {
	*Image          // the first resolved image of the group
	Tags   []string // sorted; a digest pin without tag is tagged sha256-<hex>
}

// TagOf returns the tag im goes under: its own, or sha256-<hex> of its
// root digest for a digest pin without tag (as crane does).
func TagOf(im *Image) string {
	if im.Tag != "" {
		return im.Tag
	}
	return oci.DigestTag(im.Root.Digest)
}

// GroupImages groups resolved images by target path and root digest, in
// the order they first appear.
func GroupImages(images []*Image) []Group {
	var out []Group
	at := map[string]int{}
	for _, im := range images {
		k := im.Target + "@" + im.Root.Digest.String()
		tag := TagOf(im)
		if i, ok := at[k]; ok {
			if !slices.Contains(out[i].Tags, tag) {
				out[i].Tags = append(out[i].Tags, tag)
			}
			continue
		}
		at[k] = len(out)
		out = append(out, Group{Image: im, Tags: []string{tag}})
	}
	for i := range out {
		sort.Strings(out[i].Tags)
	}
	return out
}

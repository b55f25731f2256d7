package serve

import (
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
)

// Content is what one repository name serves, as New learnt it from the
// bundles: the same view the HTTP handler answers from, for code that
// writes it out instead (ferry unpack --static).
type Content struct {
	Name string
	// Tags maps each tag to the manifest it names.
	Tags map[string]v1.Hash
	// Manifests are every manifest and index the tags reach, with the
	// media type each is served with. All of them are in some bundle
	// (a delta always carries the manifests of its images).
	Manifests map[v1.Hash]types.MediaType
	// Blobs are the configs and layers the manifests reference that some
	// bundle holds, sorted.
	Blobs []v1.Hash
	// Missing are the configs and layers referenced that no bundle holds
	// (those a delta leaves to its base), sorted.
	Missing []v1.Hash
}

// Contents returns what every repository name serves, sorted by name.
func (s *Registry) Contents() []Content {
	out := make([]Content, 0, len(s.names))
	for _, n := range s.names {
		rp := s.repos[n]
		c := Content{Name: n, Tags: make(map[string]v1.Hash, len(rp.tags)), Manifests: make(map[v1.Hash]types.MediaType, len(rp.manifests))}
		for t, h := range rp.tags {
			c.Tags[t] = h
		}
		for h := range rp.manifests {
			c.Manifests[h] = s.docs[h].mt
		}
		for h := range rp.blobs {
			if !rp.manifests[h] {
				c.Blobs = append(c.Blobs, h)
			}
		}
		for h := range rp.missing {
			c.Missing = append(c.Missing, h)
		}
		sortHashes(c.Blobs)
		sortHashes(c.Missing)
		out = append(out, c)
	}
	return out
}

// Holder returns the first bundle that holds blob h, or nil.
func (s *Registry) Holder(h v1.Hash) *bundle.Reader { return s.holder(h) }

func sortHashes(hs []v1.Hash) {
	sort.Slice(hs, func(i, j int) bool { return hs[i].String() < hs[j].String() })
}

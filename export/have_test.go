package export

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/inventory"
)

func hash(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }

// havePlan: web:1 (manifest m1: config c1, layers os, web1), web:2
// (manifest m2: config c2, layers os, web2), db:1 (manifest m3: config c3,
// layers os, db1).
func havePlan() *bundle.Plan {
	p := &bundle.Plan{}
	add := func(target, tag string, m, c, own byte) {
		p.Images = append(p.Images, bundle.PlannedImage{Image: bundle.Image{Target: target, Tags: []string{tag}, Digest: hash(m).String()},
			Blobs: []v1.Hash{hash(m), hash(c), hash('0'), hash(own)}})
		p.Blobs = append(p.Blobs,
			bundle.PlannedBlob{Digest: hash(m), Size: 1, Kind: bundle.KindManifest, Data: []byte{1}},
			bundle.PlannedBlob{Digest: hash(c), Size: 2, Kind: bundle.KindConfig, Data: []byte{1, 2}},
			bundle.PlannedBlob{Digest: hash(own), Size: 100, Kind: bundle.KindLayer})
	}
	add("app/web", "1", '1', 'a', 'w')
	add("app/web", "2", '2', 'b', 'v')
	add("app/db", "1", '3', 'c', 'd')
	p.Blobs = append(p.Blobs, bundle.PlannedBlob{Digest: hash('0'), Size: 1000, Kind: bundle.KindLayer})
	return p
}

func site(registry string, repos ...inventory.Repository) *inventory.Inventory {
	inv := &inventory.Inventory{Registry: registry, Repositories: repos}
	if _, err := inventory.Marshal(inv); err != nil { // sorts and sets the id
		panic(err)
	}
	return inv
}

func repo(target string, tags map[string]string, blobs ...byte) inventory.Repository {
	r := inventory.Repository{Target: target, Tags: tags}
	for _, b := range blobs {
		r.Blobs = append(r.Blobs, hash(b).String())
	}
	return r
}

func stored(p *bundle.Plan) (out []string) {
	for _, b := range p.Blobs {
		out = append(out, b.Digest.Hex[:1])
	}
	slices.Sort(out)
	return out
}

// TestApplyHaveOneSite: images the site holds at the same digest and tags
// are left out, and so are configs and layers it holds; manifests of the
// images kept are carried.
func TestApplyHaveOneSite(t *testing.T) {
	a := site("a.internal", repo("app/web", map[string]string{"1": hash('1').String()}, 'a', '0', 'w'), repo("app/db", nil))
	rn := &runner{Options: &Options{Logger: slog.New(slog.DiscardHandler)}, have: []*inventory.Inventory{a}, havePaths: []string{"a.json"}}
	p := havePlan()
	if err := rn.applyHave(p); err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != 2 || p.Images[0].Tags[0] != "2" || p.Images[1].Target != "app/db" {
		t.Fatalf("images kept: %+v", p.Images)
	}
	if got := stored(p); !slices.Equal(got, []string{"2", "3", "b", "c", "d", "v"}) {
		t.Fatalf("stored %v: the held layer 0 and web:1's blobs must be left out", got)
	}
	if len(p.BaseBlobs) != 1 || p.BaseBlobs[0].Digest != hash('0').String() || p.BaseBlobs[0].Size != 1000 {
		t.Fatalf("base blobs %+v", p.BaseBlobs)
	}
	if len(p.BaseImages) != 1 || p.BaseImages[0].Digest != hash('1').String() {
		t.Fatalf("base images %+v", p.BaseImages)
	}
	if len(p.Have) != 1 || p.Have[0].ID != a.ID || !slices.Equal(p.Have[0].Repositories, []string{"app/web"}) {
		t.Fatalf("have %+v", p.Have)
	}
}

// TestApplyHaveSeveralSites: one bundle for two sites leaves out only what
// both hold.
func TestApplyHaveSeveralSites(t *testing.T) {
	a := site("a.internal", repo("app/web", map[string]string{"1": hash('1').String(), "2": hash('2').String()}, 'a', 'b', '0', 'w', 'v'))
	b := site("b.internal", repo("app/web", map[string]string{"1": hash('1').String()}, 'a', '0', 'w'), repo("app/db", nil, 'd'))
	rn := &runner{Options: &Options{Logger: slog.New(slog.DiscardHandler)}, have: []*inventory.Inventory{a, b}, havePaths: []string{"a.json", "b.json"}}
	p := havePlan()
	if err := rn.applyHave(p); err != nil {
		t.Fatal(err)
	}
	// web:1 is held by both: left out. web:2 only by a, db:1 by neither.
	if len(p.Images) != 2 {
		t.Fatalf("images kept: %+v", p.Images)
	}
	if got := stored(p); !slices.Equal(got, []string{"2", "3", "b", "c", "d", "v"}) {
		t.Fatalf("stored %v: only layer 0 is held by both sites", got)
	}
	if len(p.Have) != 2 {
		t.Fatalf("have %+v", p.Have)
	}
}

// TestApplyHaveRefuses: an inventory that lists none of the selection's
// repositories is bad input; one that holds everything leaves nothing new.
func TestApplyHaveRefuses(t *testing.T) {
	other := site("a.internal", repo("other/thing", nil))
	rn := &runner{Options: &Options{Logger: slog.New(slog.DiscardHandler)}, have: []*inventory.Inventory{other}, havePaths: []string{"o.json"}}
	if err := rn.applyHave(havePlan()); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "lists none of the 2 target repositories") {
		t.Fatalf("another selection: %v", err)
	}
	all := site("a.internal",
		repo("app/web", map[string]string{"1": hash('1').String(), "2": hash('2').String()}),
		repo("app/db", map[string]string{"1": hash('3').String()}))
	rn.have = []*inventory.Inventory{all}
	if err := rn.applyHave(havePlan()); !errors.Is(err, ErrNothingNew) {
		t.Fatalf("everything held: %v", err)
	}
}

package inventory_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/test/harness"
)

// take seeds an in-process registry under PREFIX "site", maps three
// repositories (one absent from the registry) and takes their inventory.
func take(t *testing.T) (*inventory.Inventory, []harness.Fixture, *harness.Registry) {
	t.Helper()
	reg := harness.StartInProcess(t)
	set := harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "site/app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os"}},
		{Repo: "site/app/web", Tag: "1.1.0", Kind: harness.DockerImage, Bases: []string{"os"}},
		{Repo: "site/app/redis", Tag: "7.2", Kind: harness.OCIIndex, Bases: []string{"os"}},
	}}
	fixtures := harness.Seed(t, reg, "", set)
	// The same image in a second repository: its manifest is read once.
	img, err := remote.Image(reg.Ref(t, "site/app/web:1.0.0"), reg.RemoteOptions("")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(reg.Ref(t, "site/app/copy:1.0.0"), img, reg.RemoteOptions("")...); err != nil {
		t.Fatal(err)
	}
	fixtures = append(fixtures, harness.Fixture{Repo: "site/app/copy", Tag: "1.0.0", Digest: fixtures[0].Digest, Layers: fixtures[0].Layers})
	dir := t.TempDir()
	mf := filepath.Join(dir, "m.yaml")
	yaml := "tasks:\n  - name: t\n    source:\n      registry: docker.io\n    mappings:\n      - from: app/web\n      - from: library/redis\n        to: app/redis\n      - from: app/gone\n      - from: app/copy\n"
	if err := os.WriteFile(mf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	before := len(reg.Requests())
	inv, err := inventory.Take(context.Background(), inventory.Options{
		Files: []string{mf}, To: reg.Host + "/site", Client: client, Keychain: kc,
		Now: func() time.Time { return time.Unix(1700000000, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range reg.Requests()[before:] {
		counts[r.Method+" "+harness.Kind(r.Path)]++
	}
	// 3 tag lists found and one 404, 4 HEADs, and the manifests: 2 images
	// (one of them in two repositories), an index and its 2 children.
	want := map[string]int{"GET tags": 4, "HEAD manifest": 4, "GET manifest": 5, "GET ping": 1}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%s: %d requests, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
	for k := range counts {
		if strings.HasSuffix(k, " blob") || strings.HasSuffix(k, " upload") {
			t.Errorf("inventory sent %d %s requests", counts[k], k)
		}
	}
	return inv, fixtures, reg
}

// TestTake: every tag with its digest, every manifest and blob its images
// reference, an absent repository with no tags.
func TestTake(t *testing.T) {
	inv, fixtures, reg := take(t)
	if inv.Registry != reg.Host || inv.Prefix != "site" || inv.Created != time.Unix(1700000000, 0).UTC() {
		t.Fatalf("header: %+v", inv)
	}
	var targets []string
	for _, r := range inv.Repositories {
		targets = append(targets, r.Target)
	}
	if !slices.Equal(targets, []string{"app/copy", "app/gone", "app/redis", "app/web"}) {
		t.Fatalf("repositories: %v", targets)
	}
	if r := inv.Repo("app/gone"); len(r.Tags)+len(r.Manifests)+len(r.Blobs) != 0 {
		t.Errorf("absent repository: %+v", r)
	}
	for _, f := range fixtures {
		r := inv.Repo(strings.TrimPrefix(f.Repo, "site/"))
		if r == nil || r.Tags[f.Tag] != f.Digest {
			t.Fatalf("%s: tag digest %v, want %s", f.Ref(), r, f.Digest)
		}
		if !slices.Contains(r.Manifests, f.Digest) {
			t.Errorf("%s: manifest %s not recorded", f.Ref(), f.Digest)
		}
		for _, l := range f.Layers {
			if !slices.Contains(r.Blobs, l) {
				t.Errorf("%s: layer %s not recorded", f.Ref(), l)
			}
		}
	}
	if n := len(inv.Repo("app/redis").Manifests); n != 3 {
		t.Errorf("index: %d manifests recorded, want 3 (index and 2 children)", n)
	}
	if inv.ID != inventory.ContentID(inv) || len(inv.ID) != 32 {
		t.Errorf("id %q", inv.ID)
	}
}

// TestWriteReadSigned: a written inventory reads back equal; signed, it
// verifies with its key and is refused with another key, when changed, or
// unsigned. Nothing it holds is a credential.
func TestWriteReadSigned(t *testing.T) {
	inv, _, _ := take(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "have.json")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	data, err := inventory.Write(path, inv, priv)
	if err != nil {
		t.Fatal(err)
	}
	key := []bundle.TrustedKey{{Name: "k.pub", Key: pub}}
	got, err := inventory.Read(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != inv.ID || len(got.Repositories) != len(inv.Repositories) {
		t.Fatalf("read back %+v", got)
	}
	if _, err := inventory.Read(path, []bundle.TrustedKey{{Name: "other.pub", Key: otherPub}}); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "does not verify with other.pub") {
		t.Errorf("another key: %v", err)
	}
	changed := strings.Replace(string(data), inv.Repo("app/web").Tags["1.0.0"], "sha256:"+strings.Repeat("0", 64), 1)
	if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.Read(path, key); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "changed after signing") {
		t.Errorf("changed: %v", err)
	}
	if _, err := inventory.Read(path, nil); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "does not match the content") {
		t.Errorf("changed, unsigned check: %v", err)
	}
	if _, err := inventory.Write(path, inv, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".sig"); !os.IsNotExist(err) {
		t.Error("an unsigned write left the old signature")
	}
	if _, err := inventory.Read(path, key); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "is unsigned") {
		t.Errorf("unsigned: %v", err)
	}
}

// TestParseRefuses: hostile or foreign files get ErrInvalid and a message
// that names the problem.
func TestParseRefuses(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	valid := func(mut func(*inventory.Inventory)) string {
		inv := &inventory.Inventory{Registry: "harbor.internal", Prefix: "mirror", Repositories: []inventory.Repository{
			{Target: "app/web", Tags: map[string]string{"1.0": d}, Manifests: []string{d}, Blobs: []string{d}}}}
		if mut != nil {
			mut(inv)
		}
		b, err := inventory.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if _, err := inventory.Parse([]byte(valid(nil))); err != nil {
		t.Fatalf("valid: %v", err)
	}
	for _, c := range []struct{ name, data, want string }{
		{"not json", "{", "not valid inventory JSON"},
		{"bundle record", `{"formatVersion":1,"images":[]}`, "is it a ferry inventory"},
		{"newer", `{"kind":"ferry-inventory","formatVersion":9,"future":1}`, "upgrade ferry"},
		{"unknown field", strings.Replace(valid(nil), `"registry"`, `"password": "x", "registry"`, 1), "unknown field"},
		{"trailing data", valid(nil) + "{}", "after the JSON"},
		{"bad host", strings.Replace(valid(nil), "harbor.internal", "a/b", 1), "not a host"},
		{"bad target", strings.Replace(valid(nil), `"app/web"`, `"../etc"`, 1), "not a repository path"},
		{"bad digest", strings.Replace(valid(nil), d, "md5:abc", 1), "app/web"},
		{"bad tag", strings.Replace(valid(nil), `"1.0"`, `"-x"`, 1), "not a valid tag"},
		{"changed", strings.Replace(valid(nil), `"1.0"`, `"1.1"`, 1), "does not match the content"},
		{"unsorted", valid(func(inv *inventory.Inventory) {
			inv.Repositories = append(inv.Repositories, inventory.Repository{Target: "app/web"})
		}), "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := inventory.Parse([]byte(c.data))
			if !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrInvalid with %q", err, c.want)
			}
		})
	}
}

// FuzzParse: parsing never panics, and what it accepts has valid names
// and sha256 digests only, and re-encodes to an equal inventory.
func FuzzParse(f *testing.F) {
	d := "sha256:" + strings.Repeat("b", 64)
	inv := &inventory.Inventory{Registry: "127.0.0.1:5000", Repositories: []inventory.Repository{
		{Target: "a/b", Tags: map[string]string{"v1": d}, Manifests: []string{d}, Blobs: []string{d}}}}
	good, _ := inventory.Marshal(inv)
	f.Add(good)
	f.Add([]byte(`{"kind":"ferry-inventory","formatVersion":1,"registry":"h","repositories":[{"target":"../x","tags":{}}]}`))
	f.Add([]byte(`{"kind":"ferry-inventory","formatVersion":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := inventory.Parse(data)
		if err != nil {
			if !errors.Is(err, inventory.ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		again, err := inventory.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		back, err := inventory.Parse(again)
		if err != nil || back.ID != inv.ID {
			t.Fatalf("accepted %q but its re-encoding is refused or differs: %v", data, err)
		}
	})
}

func TestNextPageStaysOnHost(t *testing.T) {
	base, _ := url.Parse("https://reg.example:5000/v2/a/tags/list")
	for link, want := range map[string]string{
		`</v2/a/tags/list?n=2&last=b>; rel="next"`:                 "https://reg.example:5000/v2/a/tags/list?n=2&last=b",
		`<https://evil.example/v2/a/tags/list?last=b>; rel="next"`: "",
		``:                                     "",
		`</v2/a/tags/list?last=b>; rel="prev"`: "",
	} {
		if got := inventory.NextPage(base, link); got != want {
			t.Errorf("%s: %q, want %q", link, got, want)
		}
	}
}

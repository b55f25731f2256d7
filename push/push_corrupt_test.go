package push_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/oci"
	"github.com/ferry-airgap/ferry/push"
)

func putManifest(t *testing.T, tg *target, repo, tag string, data []byte, mt types.MediaType) {
	t.Helper()
	rq, _ := http.NewRequest(http.MethodPut, tg.srv.URL+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(string(data)))
	rq.Header.Set("Content-Type", string(mt))
	resp, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("tagging: %s", resp.Status)
	}
}

// corrupt flips one byte inside blob h's data in the bundle file.
func corrupt(t *testing.T, path string, h v1.Hash) {
	t.Helper()
	r, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := r.Section(h)
	if err != nil {
		t.Fatal(err)
	}
	_, off, n := sr.Outer()
	_ = r.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	at := off + n/2
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// uniqueLayer returns a layer used by exactly one image of the bundle.
func uniqueLayer(t *testing.T, path string) (v1.Hash, bundle.Image) {
	t.Helper()
	ts, recs := trees(t, path)
	users := map[v1.Hash][]bundle.Image{}
	for _, rec := range recs {
		_ = ts[rec.Digest].Walk(func(n *bundle.Node) error {
			if !isManifest(n) && (strings.Contains(string(n.MediaType), "layer") || strings.Contains(string(n.MediaType), "rootfs")) {
				users[n.Digest] = append(users[n.Digest], rec)
			}
			return nil
		})
	}
	for _, rec := range recs {
		if rec.Target != "spaceone/console" {
			continue
		}
		var found v1.Hash
		_ = ts[rec.Digest].Walk(func(n *bundle.Node) error {
			if len(users[n.Digest]) == 1 && found.Hex == "" {
				found = n.Digest
			}
			return nil
		})
		if found.Hex != "" {
			return found, rec
		}
	}
	t.Fatal("no layer unique to one image")
	return v1.Hash{}, bundle.Image{}
}

func TestPushCorruptBlobStopsOnlyItsImage(t *testing.T) {
	path, _ := testBundle(t)
	bad, victim := uniqueLayer(t, path)
	corrupt(t, path, bad)
	br, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	badSize, _ := br.BlobSize(bad)
	_ = br.Close()
	tg := newTarget(t)
	sum, err := run(t, path, tg.host, nil)
	if !errors.Is(err, push.ErrFailed) {
		t.Fatalf("err = %v, want ErrFailed", err)
	}
	if sum.Failed != 1 || len(sum.Failures) != 1 {
		t.Fatalf("failures: %+v", sum.Failures)
	}
	f := sum.Failures[0]
	if f.Blob != bad.String() || !strings.Contains(f.Error, bad.String()) || !strings.Contains(f.Image, "spaceone/console:"+victim.Tags[0]) {
		t.Errorf("failure does not name image and blob: %+v", f)
	}
	if sum.Pushed != len(sum.Images)-1 {
		t.Errorf("pushed %d of %d", sum.Pushed, len(sum.Images))
	}
	for _, r := range tg.requests() {
		repo, kind, ref := split(r.Path)
		if repo != "spaceone/console" {
			continue
		}
		if kind == "manifests" && r.Method == http.MethodPut && (ref == victim.Digest || ref == victim.Tags[0]) {
			t.Errorf("the corrupt image got %s %s", r.Method, r.Path)
		}
		// The layers are hashed as they stream: the damaged one's upload
		// is opened, and its PUT cut short of its last byte.
		if kind == "uploads" && r.Method == http.MethodPut && strings.Contains(r.Query, bad.Hex) && (r.Status < 400 || r.Body >= badSize) {
			t.Errorf("the corrupt blob's PUT was not cut: %s %s?%s: %d, %d of %d bytes", r.Method, r.Path, r.Query, r.Status, r.Body, badSize)
		}
	}
	if tg.has("spaceone/console", bad.String()) {
		t.Error("the corrupt blob is in the target")
	}
	t.Logf("failure: %s", f.Error)
	if !strings.Contains(f.Error, "copy it again") {
		t.Errorf("failure does not say what to do: %s", f.Error)
	}
	// The other tag of the same repository is there.
	for _, im := range sum.Images {
		if im.Digest != victim.Digest && im.Status != push.StatusPushed {
			t.Errorf("%s %s: %s", im.Repository, im.Digest, im.Status)
		}
	}
}

func TestPushHostileBundlePushesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evil.tar")
	if err := os.WriteFile(path, []byte("not a tar at all, just some bytes that are long enough to not be a header"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := newTarget(t)
	_, err := run(t, path, tg.host, nil)
	if !errors.Is(err, bundle.ErrNotBundle) || !errors.Is(err, push.ErrBundleRefused) {
		t.Fatalf("err = %v, want ErrNotBundle and ErrBundleRefused", err)
	}
	if n := len(tg.requests()); n != 0 {
		t.Errorf("%d requests sent for a hostile bundle", n)
	}
}

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in, reg, prefix string
		bad             bool
	}{
		{in: "harbor.example.com", reg: "harbor.example.com"},
		{in: "harbor.example.com/cloudforet", reg: "harbor.example.com", prefix: "cloudforet"},
		{in: "127.0.0.1:5000/a/b/", reg: "127.0.0.1:5000", prefix: "a/b"},
		{in: "https://harbor.example.com", bad: true},
		{in: "harbor.example.com/a:tag", bad: true},
		{in: "harbor.example.com/UPPER", bad: true},
		{in: "", bad: true},
	} {
		got, err := push.ParseTarget(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error", c.in)
			}
			continue
		}
		if err != nil || got.Registry != c.reg || got.Prefix != c.prefix {
			t.Errorf("%q: %+v %v", c.in, got, err)
		}
	}
}

// TestPushCorruptSharedBlob: a damaged layer that images of several
// repositories need is read once (its PUT cut short), is in no repository
// afterwards, and fails exactly those images; a damaged config (checked
// before anything is pushed) is never sent at all.
func TestPushCorruptSharedBlob(t *testing.T) {
	path, _ := testBundle(t)
	ts, recs := trees(t, path)
	users := map[v1.Hash]map[string]bool{}
	var config v1.Hash
	for _, rec := range recs {
		_ = ts[rec.Digest].Walk(func(n *bundle.Node) error {
			if oci.KindOf(n.MediaType) == oci.KindManifest && config.Hex == "" && rec.Target != "spaceone/console" {
				config = n.Children[0].Digest
			}
			if !isManifest(n) {
				if users[n.Digest] == nil {
					users[n.Digest] = map[string]bool{}
				}
				users[n.Digest][rec.Target] = true
			}
			return nil
		})
	}
	var shared v1.Hash
	for h, repos := range users {
		if len(repos) > 1 && h != config && (shared.Hex == "" || h.Hex < shared.Hex) {
			shared = h
		}
	}
	if shared.Hex == "" || config.Hex == "" {
		t.Fatal("the test bundle has no layer shared across repositories, or no config")
	}
	corrupt(t, path, shared)
	corrupt(t, path, config)
	tg := newTarget(t)
	sum, err := run(t, path, tg.host, nil)
	if !errors.Is(err, push.ErrFailed) {
		t.Fatalf("err = %v, want ErrFailed", err)
	}
	puts := 0
	for _, r := range tg.requests() {
		if strings.Contains(r.Query, config.Hex) {
			t.Errorf("the damaged config was sent: %s %s?%s", r.Method, r.Path, r.Query)
		}
		if r.Method == http.MethodPut && strings.Contains(r.Query, shared.Hex) {
			puts++
		}
	}
	// Once, cut short, or not at all: the client may cancel the PUT before
	// the in-process target has logged it (about 2 runs in 30). Never twice:
	// a damaged blob is not sent again for the other repository.
	if puts > 1 {
		t.Errorf("the damaged shared layer was PUT %d times, want at most once (cut short)", puts)
	}
	for repo := range users[shared] {
		if tg.has(repo, shared.String()) {
			t.Errorf("%s holds the damaged layer", repo)
		}
	}
	for _, im := range sum.Images {
		tree := ts[im.Digest]
		needs := false
		_ = tree.Walk(func(n *bundle.Node) error {
			needs = needs || n.Digest == shared || n.Digest == config
			return nil
		})
		if needs != (im.Status == push.StatusFailed) {
			t.Errorf("%s@%s: %s (needs a damaged blob: %t) %s", im.Repository, im.Digest, im.Status, needs, im.Error)
		}
		if needs && !strings.Contains(im.Error, "copy it again") {
			t.Errorf("%s: error does not say what to do: %s", im.Repository, im.Error)
		}
	}
}

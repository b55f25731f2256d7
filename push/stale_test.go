package push_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/push"
	"github.com/ferry-airgap/ferry/test/harness"
)

// staleSite is one site's history: app/web:1.0.0 (os, node) and
// app/db:7.2 (os, python) imported into tg under mirror/, an inventory
// taken, then upstream adds app/web:2.0.0 (os, node) and app/api:1.0
// (python only), and delta is the bundle export --have cuts: it carries
// the two new images' manifests and own layers and leaves out os, node
// and python (python because the inventory saw it in mirror/app/db) and
// the images app/web:1.0.0 and app/db:7.2 whole.
type staleSite struct {
	tg     *target
	delta  string
	fix    map[string]harness.Fixture
	python string // the layer only app/db and app/api share
}

func newStaleSite(t *testing.T) *staleSite {
	t.Helper()
	ctx := context.Background()
	src := harness.StartInProcess(t)
	fixes := harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "1.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node"}},
		{Repo: "app/db", Tag: "7.2", Kind: harness.OCIImage, Bases: []string{"os", "python"}},
	}})
	dir := t.TempDir()
	mapping := func(name string, repos ...string) string {
		s := "tasks:\n  - name: t\n    source:\n      registry: " + src.Host + "\n    mappings:\n"
		for _, r := range repos {
			s += "      - from: " + r + "\n"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m1 := mapping("m1.yaml", "app/web", "app/db")
	m2 := mapping("m2.yaml", "app/web", "app/db", "app/api")
	client, err := registry.New(registry.Options{Retry: registry.RetryPolicy{Attempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := registry.NewKeychain("")
	if err != nil {
		t.Fatal(err)
	}
	quiet := bundle.ProgressFunc(func(bundle.Event) {})
	full := filepath.Join(dir, "full.tar")
	if _, err := export.Run(ctx, export.Options{Files: []string{m1}, Output: full, Client: client, Keychain: kc, Progress: quiet}); err != nil {
		t.Fatalf("full export: %v", err)
	}
	s := &staleSite{tg: newTarget(t), fix: map[string]harness.Fixture{}}
	to := s.tg.host + "/mirror"
	if _, err := run(t, full, to, nil); err != nil {
		t.Fatalf("full import: %v", err)
	}
	inv, err := inventory.Take(ctx, inventory.Options{Files: []string{m2}, To: to, Client: client, Keychain: kc})
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	have := filepath.Join(dir, "have.json")
	if _, err := inventory.Write(have, inv, nil); err != nil {
		t.Fatal(err)
	}
	fixes = append(fixes, harness.Seed(t, src, "", harness.FixtureSet{Specs: []harness.FixtureSpec{
		{Repo: "app/web", Tag: "2.0.0", Kind: harness.OCIImage, Bases: []string{"os", "node"}},
		{Repo: "app/api", Tag: "1.0", Kind: harness.OCIImage, Bases: []string{"python"}},
	}})...)
	for _, f := range fixes {
		s.fix[f.Ref()] = f
	}
	for _, l := range s.fix["app/api:1.0"].Layers {
		if slices.Contains(s.fix["app/db:7.2"].Layers, l) {
			s.python = l
		}
	}
	s.delta = filepath.Join(dir, "delta.tar")
	if _, err := export.Run(ctx, export.Options{Files: []string{m2}, Output: s.delta, Have: []string{have}, Client: client, Keychain: kc, Progress: quiet}); err != nil {
		t.Fatalf("export --have: %v", err)
	}
	rec, err := bundle.ReadRecord(s.delta)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Images) != 2 || len(rec.BaseImages) != 2 || s.python == "" || !slices.ContainsFunc(rec.BaseBlobs, func(b bundle.Blob) bool { return b.Digest == s.python }) {
		t.Fatalf("delta: %d images, %d left out, base blobs %+v (python layer %q)", len(rec.Images), len(rec.BaseImages), rec.BaseBlobs, s.python)
	}
	s.tg.reset()
	return s
}

// tagOf returns the digest repo:tag points at in tg ("" when none).
func (s *staleSite) tagOf(t *testing.T, ref string) string {
	t.Helper()
	resp, err := http.Head(s.tg.srv.URL + "/v2/" + strings.Replace(ref, ":", "/manifests/", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Docker-Content-Digest")
}

func (s *staleSite) lose(repo, digest string) {
	s.tg.mu.Lock()
	defer s.tg.mu.Unlock()
	delete(s.tg.present, repo+"@"+digest)
}

func (s *staleSite) pushes(repo string) []req {
	var out []req
	for _, r := range s.tg.requests() {
		if r.Method != http.MethodHead && r.Method != http.MethodGet && strings.HasPrefix(r.Path, "/v2/"+repo+"/") {
			out = append(out, r)
		}
	}
	return out
}

func failureOf(sum *push.Summary, image string) *push.Failure {
	for i := range sum.Failures {
		if strings.HasPrefix(sum.Failures[i].Image, image) {
			return &sum.Failures[i]
		}
	}
	return nil
}

// TestStaleTagFailsOnlyItsImage: inside, app/db:7.2 was retagged after the
// inventory. The bundle left that image out, so import cannot set its tag:
// it alone fails (kind stale-inventory, naming the tag, the digest wanted
// and the one found), and its tag stays where the site put it. app/api
// needs the python layer the inventory saw in mirror/app/db: the layer is
// still there (a retag deletes no blob), so app/api lands, mounted from
// there, and so does app/web:2.0.0.
func TestStaleTagFailsOnlyItsImage(t *testing.T) {
	s := newStaleSite(t)
	web := s.fix["app/web:1.0.0"]
	raw, err := remote.Get(s.tg.ref(t, "mirror/app/web@"+web.Digest))
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, s.tg, "mirror/app/db", "7.2", raw.Manifest, types.MediaType(web.MediaType))
	s.tg.reset()

	sum, err := run(t, s.delta, s.tg.host+"/mirror", nil)
	if !errors.Is(err, push.ErrStale) || !errors.Is(err, push.ErrFailed) {
		t.Fatalf("want ErrStale and ErrFailed, got %v", err)
	}
	t.Logf("import: %v\n%+v", err, sum.Failures)
	for _, want := range []string{"app/db:7.2", "ferry inventory", "exactly these images exported without --have"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if sum.Pushed != 2 || sum.Failed != 1 {
		t.Fatalf("pushed %d, failed %d, want 2 and 1: %+v", sum.Pushed, sum.Failed, sum.Failures)
	}
	f := failureOf(sum, "mirror/app/db:7.2")
	if f == nil || f.Kind != push.FailureStale || len(f.Missing) != 1 {
		t.Fatalf("failures: %+v", sum.Failures)
	}
	m := f.Missing[0]
	if m.Kind != push.ClaimTag || m.Repository != s.tg.host+"/mirror/app/db" || m.Tag != "7.2" || m.Digest != s.fix["app/db:7.2"].Digest || m.Found != web.Digest {
		t.Errorf("missing: %+v", m)
	}
	if got := s.tagOf(t, "mirror/app/db:7.2"); got != web.Digest {
		t.Errorf("the failed image's tag moved to %s", got)
	}
	if p := s.pushes("mirror/app/db"); len(p) != 0 {
		t.Errorf("import wrote into mirror/app/db: %+v", p)
	}
	for _, ref := range []string{"app/web:2.0.0", "app/api:1.0"} {
		if got := s.tagOf(t, "mirror/"+ref); got != s.fix[ref].Digest {
			t.Errorf("%s: target %q, want %s", ref, got, s.fix[ref].Digest)
		}
	}
	if !s.tg.has("mirror/app/api", s.python) {
		t.Error("the python layer was not mounted into mirror/app/api")
	}
}

// TestStaleBlobFailsTheImagesThatNeedIt: the python layer, left out because
// the inventory saw it in mirror/app/db (app/db's claim, not app/api's
// own), is gone from the target. app/api, which needs it, fails naming the
// layer and where it was looked for; app/web:2.0.0 lands; app/db:7.2's tag
// is still right, so it is not named. A dry run says the same ("would
// fail") and moves nothing.
func TestStaleBlobFailsTheImagesThatNeedIt(t *testing.T) {
	s := newStaleSite(t)
	s.lose("mirror/app/db", s.python)

	dry, err := run(t, s.delta, s.tg.host+"/mirror", func(o *push.Options) { o.DryRun = true })
	if !errors.Is(err, push.ErrStale) || dry.Failed != 1 || failureOf(dry, "mirror/app/api:1.0") == nil {
		t.Fatalf("dry run: %v\n%+v", err, dry.Failures)
	}
	if p := s.pushes("mirror"); len(p) != 0 {
		t.Fatalf("a dry run wrote: %+v", p)
	}

	sum, err := run(t, s.delta, s.tg.host+"/mirror", nil)
	if !errors.Is(err, push.ErrStale) {
		t.Fatalf("want ErrStale, got %v", err)
	}
	if sum.Pushed != 1 || sum.Failed != 1 || len(sum.Images) != 2 {
		t.Fatalf("pushed %d, failed %d of %d: %+v", sum.Pushed, sum.Failed, len(sum.Images), sum.Failures)
	}
	f := failureOf(sum, "mirror/app/api:1.0")
	if f == nil || f.Kind != push.FailureStale || f.Blob != s.python || len(f.Missing) != 1 {
		t.Fatalf("failures: %+v", sum.Failures)
	}
	m := f.Missing[0]
	if m.Kind != push.ClaimBlob || m.Digest != s.python || m.Repository != s.tg.host+"/mirror/app/api" || !slices.Contains(m.Searched, s.tg.host+"/mirror/app/db") {
		t.Errorf("missing: %+v", m)
	}
	if !strings.Contains(f.Error, s.python) || !strings.Contains(f.Error, "mirror/app/db") {
		t.Errorf("the failure does not name the blob and where it was expected: %s", f.Error)
	}
	if got := s.tagOf(t, "mirror/app/api:1.0"); got != "" {
		t.Errorf("the failed image was tagged: %s", got)
	}
	if p := s.pushes("mirror/app/api"); len(p) != 0 {
		t.Errorf("import wrote into the failed image's repository: %+v", p)
	}
	if got := s.tagOf(t, "mirror/app/web:2.0.0"); got != s.fix["app/web:2.0.0"].Digest {
		t.Errorf("app/web:2.0.0: target %q", got)
	}
}

// TestStaleStrictRefusesTheBundle: with Strict, the same lost layer and a
// moved tag refuse the whole bundle before any write, naming both.
func TestStaleStrictRefusesTheBundle(t *testing.T) {
	s := newStaleSite(t)
	s.lose("mirror/app/db", s.python)
	raw, err := remote.Get(s.tg.ref(t, "mirror/app/web@"+s.fix["app/web:1.0.0"].Digest))
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, s.tg, "mirror/app/db", "7.2", raw.Manifest, types.MediaType(raw.MediaType))
	s.tg.reset()
	_, err = run(t, s.delta, s.tg.host+"/mirror", func(o *push.Options) { o.Strict = true })
	if !errors.Is(err, push.ErrHaveMissing) || errors.Is(err, push.ErrStale) {
		t.Fatalf("want ErrHaveMissing, got %v", err)
	}
	for _, want := range []string{s.python, "mirror/app/db:7.2", "nothing was pushed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if p := s.pushes("mirror"); len(p) != 0 {
		t.Fatalf("a refused import wrote: %+v", p)
	}
}

func (tg *target) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(tg.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
